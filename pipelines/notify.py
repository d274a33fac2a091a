"""Emails for people: what happened, why, and what to do next. Delivery is the DAG's job."""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines import storage
from pipelines.mail import Email, Pages, links_html
from pipelines.runbooks import BLOCKED_BATCH, QUARANTINE_SPIKE, runbook_html

if TYPE_CHECKING:
    from collections.abc import Sequence

    from pipelines.spec import DatasetContract, ModelSpec

_ORDER = {"batch": 0, "row": 1, "warn": 2}


def blocked_batch_email(
    contract: DatasetContract,
    readers: Sequence[ModelSpec],
    result: dict[str, Any],
    run_url: str,
    *,
    pages: Pages | None = None,
) -> Email:
    """To the dataset's owners and the owners of every model reading it: which batch of which dataset was
    blocked, which models wait for it, which rules failed (a picture, inline), and where to look.

    Each address gets one copy (dataset owners first, then the readers' owners in order). `result` is
    `ValidationResult.to_dict()` (plus the DAG's `summary`). The blocking rules come first; the picture
    (`<report stem>.png` next to the report) shows each failed rule's share of the rows against what is
    allowed; the dataset's and the models' Flywheel pages and the full report are linked (`pages`), the GX
    Data Docs page of the run when it was built (`data_docs_path`), and the JSON report is attached. The
    blocked-batch runbook is linked, and the quarantine-spike one too when too many rows broke row rules
    (`validation.max_quarantine_share`).
    """
    pages = pages or Pages()
    e = html.escape
    failures = sorted(result.get("failures") or [], key=lambda f: _ORDER.get(str(f.get("severity")), 3))
    blocking = [f for f in failures if f.get("severity") == "batch"]
    broken = sum(int(f.get("count") or 0) for f in failures if f.get("severity") == "row")
    rules = ", ".join(sorted({str(f["rule"]) for f in blocking}))
    models = [m.name for m in readers]
    rows = "".join(
        f"<tr><td>{e(str(f.get('column') or '(batch)'))}</td><td><code>{e(str(f['rule']))}</code></td>"
        f"<td>{e(str(f.get('check') or ''))}</td><td>{e(_severity(str(f['severity'])))}</td>"
        f"<td>{f.get('count', 0)}</td><td>{e(', '.join(map(str, f.get('sample') or [])))}</td>"
        f"<td>{e(str(f['message']))}</td></tr>"
        for f in failures
    )
    docs = result.get("data_docs_path")
    docs_url = pages.file(docs) or (Path(docs).as_uri() if docs else None)
    docs_html = (
        f"<p><b>Great Expectations Data Docs</b> for this run (every expectation, observed values, samples): "
        f"<a href='{e(docs_url or '')}'>{e(docs)}</a> (the site's index lists every validated batch).</p>"
        if docs
        else ""
    )
    report = str(result["report_path"])
    links = [(f"dataset {contract.name} on Flywheel", pages.dataset(contract.name)),
             *((f"model {m.name}", pages.model(m.name)) for m in readers),
             ("Full validation report", pages.file(report)), ("Airflow run", run_url)]
    cid = f"blocked-{contract.name}-{storage.stem(report)}@flywheel"
    picture = _rules_picture(contract, result, failures, report)
    waiting = (
        "<b>Models blocked:</b> " + ", ".join(f"<code>{e(m.name)}</code> ({e(', '.join(m.owners))})" for m in readers)
        if readers
        else "<b>Models blocked:</b> none (no model reads this dataset yet)"
    )
    body = (
        f"<h2>Flywheel blocked a batch of dataset <code>{e(contract.name)}</code></h2>"
        f"<p><b>File:</b> <code>{e(str(result['batch_file']))}</code><br>"
        f"<b>Interval:</b> {e(result['interval_start'])} → {e(result['interval_end'])}<br>"
        f"<b>Contract:</b> <code>{e(contract.path.parent.name)}/{e(contract.path.name)}</code> "
        f"(owners: {e(', '.join(contract.owners))})<br>"
        f"{waiting}<br>"
        f"<b>Rows landed:</b> {result['rows_landed']} (row-rule findings: {broken}; nothing is quarantined "
        "or published: the file is kept whole under blocked/)<br>"
        f"<b>Blocking rule(s):</b> {e(rules or '(none)')}</p>"
        + links_html(links)
        + runbook_html(_runbooks(blocking), pages)
        + "".join(f"<p>⛔ {e(str(f['message']))}</p>" for f in blocking)
        + f'<p><img src="cid:{e(cid, quote=True)}" alt="The rules this batch failed" style="max-width:100%"></p>'
        + docs_html
        + "<h3>Every finding</h3>"
        "<table border='1' cellpadding='4' cellspacing='0'><tr><th>column</th><th>rule</th><th>check</th>"
        f"<th>severity</th><th>rows</th><th>sample</th><th>detail</th></tr>{rows}</table>"
        "<p><b>What happens now:</b> nothing downstream ran for this interval"
        + (f" (no new data for {e(', '.join(models))})" if models else "")
        + "; the landed file is untouched and a byte-identical copy is kept under "
        f"<code>data/blocked/{e(contract.name)}/</code>. Fix the batch upstream and land it again (same file name), "
        "then re-run the validation from the Airflow UI (Clear the <code>validate_batch</code> task of this run), "
        f"or check it first with <code>flywheel validate --dataset {e(contract.name)} &lt;file&gt;</code>.</p>"
        f"<p>The full JSON report is attached ({e(storage.name(report))}): <code>{e(report)}</code></p>"
    )
    subject = f"[Flywheel] {contract.name}: batch {result['interval_start'][:10]} BLOCKED ({rules or 'no rule'}); " + (
        f"models waiting: {', '.join(models)}" if models else "no model reads it"
    )
    to = _once([*contract.owners, *(o for m in readers for o in m.owners)])
    return Email(to=to, subject=subject, html=body, attachments=(report,), inline=((cid, picture),))


def _runbooks(blocking: list[dict[str, Any]]) -> list[str]:
    """The runbooks of a blocked batch: blocked-batch, and quarantine-spike when the quarantine share blocked it."""
    spike = any(f.get("check") == "quarantine_share" or f.get("rule") == "max_quarantine_share" for f in blocking)
    return [BLOCKED_BATCH, QUARANTINE_SPIKE] if spike else [BLOCKED_BATCH]


def _rules_picture(contract: DatasetContract, result: dict[str, Any], failures: list[dict[str, Any]],
                   report: str) -> str:
    """The failed-rules chart of the batch as `<report stem>.png` next to its report; returns its location."""
    from pipelines.charts import failed_rules_chart

    rows = int(result.get("rows_landed") or 0)
    bars = []
    for f in failures:
        count, check, column = int(f.get("count") or 0), str(f.get("check") or ""), f.get("column")
        allowed: float | None = None
        if check == "null_share" and column in contract.column_names:
            allowed = contract.column(str(column)).max_null_share
        elif check == "quarantine_share" or f.get("severity") == "row":
            allowed = contract.max_quarantine_share
        whole = count <= 0 or rows <= 0 or check in _WHOLE_BATCH
        share = None if whole else count / rows
        text = (f"the whole batch ({_severity(str(f.get('severity')))})" if whole else
                f"{count:,} of {rows:,} rows ({count / rows:.1%})"
                + (f"; allowed ≤ {allowed:.1%}" if allowed is not None else ""))
        bars.append({"label": f"{f['rule']} · {column or '(batch)'}", "severity": f.get("severity"),
                     "share": share, "allowed": allowed, "text": text})
    caption = f"{contract.name} · batch {str(result['interval_start'])[:10]}: {len(failures)} rule(s) failed"
    png = failed_rules_chart(bars, caption)
    return storage.write_bytes(png, storage.join(storage.parent(report), f"{storage.stem(report)}.png"))


# checks about the batch as a whole: their row counts are not a share of this batch's rows
_WHOLE_BATCH = {"readable_file", "duplicate_batch", "row_count", "schema"}


def _once(addresses: list[str]) -> tuple[str, ...]:
    """Each address once (compared without case), in the order first seen."""
    seen: dict[str, str] = {}
    for a in addresses:
        seen.setdefault(a.strip().lower(), a.strip())
    return tuple(seen.values())


def _severity(s: str) -> str:
    return {"batch": "blocks the batch", "row": "rows quarantined", "warn": "warning"}.get(s, s)
