"""Emails for people: what happened, why, and what to do next. Delivery is the DAG's job."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

from pipelines.monitor import Email

if TYPE_CHECKING:
    from pipelines.spec import ModelSpec


def blocked_batch_email(spec: ModelSpec, result: dict[str, Any], run_url: str) -> Email:
    """To the owners: which batch was blocked, which rules failed, and where to look."""
    failures = result.get("failures") or []
    rows = "".join(
        f"<tr><td>{html.escape(str(f.get('column') or '(batch)'))}</td><td><code>{html.escape(str(f['rule']))}</code>"
        f"</td><td>{html.escape(str(f['severity']))}</td><td>{f.get('count', 0)}</td>"
        f"<td>{html.escape(str(f['message']))}</td></tr>"
        for f in failures)
    body = (
        f"<h2>Flywheel blocked a batch for <code>{html.escape(spec.name)}</code></h2>"
        f"<p><b>File:</b> <code>{html.escape(str(result['batch_file']))}</code><br>"
        f"<b>Interval:</b> {html.escape(result['interval_start'])} → {html.escape(result['interval_end'])}<br>"
        f"<b>Rows landed:</b> {result['rows_landed']}</p>"
        f"<p>{html.escape(str(result.get('summary', '')))}</p>"
        "<table border='1' cellpadding='4' cellspacing='0'><tr><th>column</th><th>rule</th><th>severity</th>"
        f"<th>rows</th><th>detail</th></tr>{rows}</table>"
        "<p><b>What happens now:</b> nothing downstream ran for this interval; the landed file is untouched. "
        "Fix the batch upstream and land it again, then re-run the validation from the Airflow UI "
        "(Clear the <code>validate_batch</code> task of this run).</p>"
        f"<p><a href='{html.escape(run_url)}'>Airflow run</a> · "
        f"report: <code>{html.escape(result['report_path'])}</code></p>"
    )
    subject = f"[Flywheel] {spec.name}: batch {result['interval_start'][:10]} BLOCKED ({len(failures)} rule(s) failed)"
    return Email(to=tuple(spec.owners), subject=subject, html=body, attachments=(result["report_path"],))
