"""Emails for people: what happened, why, and what to do next. Delivery is the DAG's job."""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.monitor import Email

if TYPE_CHECKING:
    from collections.abc import Sequence

    from pipelines.spec import DatasetContract, ModelSpec

_ORDER = {"batch": 0, "row": 1, "warn": 2}


def blocked_batch_email(
    contract: DatasetContract, readers: Sequence[ModelSpec], result: dict[str, Any], run_url: str
) -> Email:
    """To the dataset's owners and the owners of every model reading it: which batch of which dataset was
    blocked, which models wait for it, which rules failed, and where to look.

    Each address gets one copy (dataset owners first, then the readers' owners in order). `result` is
    `ValidationResult.to_dict()` (plus the DAG's `summary`). The blocking rules come first; the GX Data
    Docs page of the run is linked when it was built (`data_docs_path`), and the JSON report is attached.
    """
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
    docs_html = (
        f"<p><b>Great Expectations Data Docs</b> for this run (every expectation, observed values, samples): "
        f"<a href='{e(Path(docs).as_uri())}'>{e(docs)}</a> (open it on the Flywheel host; the site's index lists "
        "every validated batch).</p>"
        if docs
        else ""
    )
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
        + "".join(f"<p>⛔ {e(str(f['message']))}</p>" for f in blocking)
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
        f"<p><a href='{e(run_url)}'>Airflow run</a> · report: <code>{e(str(result['report_path']))}</code></p>"
    )
    subject = f"[Flywheel] {contract.name}: batch {result['interval_start'][:10]} BLOCKED ({rules or 'no rule'}); " + (
        f"models waiting: {', '.join(models)}" if models else "no model reads it"
    )
    to = _once([*contract.owners, *(o for m in readers for o in m.owners)])
    return Email(to=to, subject=subject, html=body, attachments=(result["report_path"],))


def _once(addresses: list[str]) -> tuple[str, ...]:
    """Each address once (compared without case), in the order first seen."""
    seen: dict[str, str] = {}
    for a in addresses:
        seen.setdefault(a.strip().lower(), a.strip())
    return tuple(seen.values())


def _severity(s: str) -> str:
    return {"batch": "blocks the batch", "row": "rows quarantined", "warn": "warning"}.get(s, s)
