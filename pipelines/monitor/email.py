"""The drift email to the model's owners: subject, HTML body with its picture inline, links to Flywheel's
pages, the report attached as it is, sending with retries. Which windows are emailed is `plan_email`'s call
(pipelines/monitor/policy.py): one email per alarm episode.

The delivery outcome is recorded in the verdict JSON and the reports index (pipelines/monitor/reports.py).
"""

from __future__ import annotations

import html
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pipelines import storage
from pipelines.mail import Email, Pages, links_html
from pipelines.monitor.drift import SMALL_SAMPLE_ROWS
from pipelines.monitor.policy import _champion_label
from pipelines.monitor.reports import _update_index, _write_atomic, list_reports
from pipelines.monitor.results import DriftResult, EmailPlan, RetrainDecision, _ranked
from pipelines.runbooks import DRIFT_ALARM, runbook_html
from pipelines.util import json_safe

if TYPE_CHECKING:
    from pipelines.spec import ModelSpec
    from pipelines.storage import Location

log = logging.getLogger(__name__)

# the Evidently report (~5 MB for a few columns) is attached as it is; above this the JSON verdict is attached
# instead (and the report linked). Base64 makes an attachment 4/3 larger on the wire: 10 MiB -> ~14 MB.
MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024
EMAIL_TOP_COLUMNS = 15


class EmailDeliveryError(RuntimeError):
    """The drift email could not be delivered after every attempt (the report is still on disk)."""


def compose_drift_email(
    spec: ModelSpec,
    result: DriftResult,
    decision: RetrainDecision,
    links: dict[str, str],
    *,
    pages: Pages | None = None,
    plan: EmailPlan | None = None,
    digest: Sequence[Mapping[str, Any]] = (),
) -> Email:
    """The drift email to spec.owners: the verdict, a picture of every column's drift score against its
    threshold (inline, `<key>.png` next to the report), what happens next, links to the model's and the
    dataset's Flywheel pages, to the full report and to the drift-alarm runbook (`pages`), and the Evidently
    report attached as it is
    (`<key>.html`; the JSON verdict instead when the report is over MAX_ATTACHMENT_BYTES).

    `plan` (the window's EmailPlan) says which alarm episode this is, and whether it is a reminder or a
    digest; `digest` are the index entries of the windows a digest covers (oldest first).
    """
    pages = pages or Pages()
    window = f"{result.interval_start[:10]} → {result.interval_end[:10]}"
    n, total = result.drifted_count, len(result.columns)
    kind = plan.kind if plan else "first"
    if kind == "digest":
        state = "alarm cleared" if not (result.drift_detected or result.performance_degraded) else "alarm persists"
        subject = (f"[Flywheel] {spec.name}: {state}, digest of {len(digest)} window(s) of the episode since "
                   f"{plan.episode if plan else ''} ({n}/{total} features drifted, {window})")
    elif result.drift_detected:
        still = "still " if kind == "reminder" else ""
        subject = f"[Flywheel] {spec.name}: drift {still}detected in {n}/{total} features ({window})"
    elif result.performance_degraded:
        subject = f"[Flywheel] {spec.name}: performance drop, no data drift ({n}/{total} features drifted, {window})"
    else:
        subject = f"[Flywheel] {spec.name}: no drift ({n}/{total} features drifted, {window})"

    key = storage.stem(result.verdict_json)
    picture = _drift_picture(spec, result, key, window)
    cid = f"drift-{spec.name}-{key}@flywheel"
    attachment, note = _report_attachment(result, pages)
    page_links = [
        (f"{spec.name} on Flywheel", pages.model(spec.name)),
        (f"dataset {spec.dataset.name}", pages.dataset(spec.dataset.name)),
        ("Full Evidently report", pages.file(result.report_html)),
        *links.items(),
    ]
    body = _email_html(spec, result, decision, page_links, window, note, cid, plan, digest,
                       runbook_html(DRIFT_ALARM, pages))
    return Email(to=tuple(spec.owners), subject=subject, html=body, attachments=(attachment,),
                 inline=((cid, picture),))


def send_drift_report(
    spec: ModelSpec,
    verdict_json: Location,
    links: dict[str, str],
    send: Callable[[Email], None],
    *,
    pages: Pages | None = None,
    final_try: bool = True,
    attempts: int = 3,
    retry_delay_s: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
    queue: Callable[..., dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Email the verdict at `verdict_json` to the owners through `send(email)`.

    `send` is tried `attempts` times (waiting retry_delay_s, then twice that, ...). The outcome is
    recorded in the verdict JSON (`email`, `email_failed`) and the reports index, and returned. When
    every attempt failed: on the final try (`final_try`) the failure is logged and returned, so the
    monitor run stays green and the retrain request is unaffected; otherwise EmailDeliveryError is
    raised so the caller (an Airflow task with retries) tries again later. The report files are never
    removed: the verdict names them.

    With `queue` (flywheel.dagkit.send_or_queue: the outbox), the final failure is not the end: the mail
    is kept in the outbox (its picture and attachment with it) and retried by the deliver_outbox DAG until
    delivered or expired; the status is then "pending" (and becomes "sent" through `record_late_delivery`).
    The verdict's `email_plan` (check_drift) says whether this is a reminder or a digest, and of which
    windows (read from the reports index).
    """
    path = os.fspath(verdict_json)
    raw = json.loads(storage.read_text(path))
    result = DriftResult.from_dict(raw)
    decision = RetrainDecision(**raw["decision"]) if raw.get("decision") else RetrainDecision(False, "")
    plan = EmailPlan(**{**raw["email_plan"], "windows": tuple(raw["email_plan"].get("windows") or ())}) \
        if raw.get("email_plan") else None
    digest: list[dict[str, Any]] = []
    if plan is not None and plan.kind == "digest":
        by_key = {h["key"]: h for h in list_reports(storage.parent(path))}
        digest = [by_key[k] for k in plan.windows if k in by_key]
    mail = compose_drift_email(spec, result, decision, links, pages=pages, plan=plan, digest=digest)
    errors: list[str] = []
    for attempt in range(1, max(1, attempts) + 1):
        try:
            send(mail)
        except Exception as exc:  # SMTP down, refused, timed out: all retried the same way
            errors.append(f"{type(exc).__name__}: {exc}")
            log.warning("%s: email attempt %d/%d failed: %s", spec.name, attempt, attempts, errors[-1])
            if attempt < attempts:
                sleep(retry_delay_s * attempt)
            continue
        status = {
            "status": "sent",
            "to": list(mail.to),
            "subject": mail.subject,
            "attempts": attempt,
            "attachments": [storage.name(a) for a in mail.attachments],
            "inline": [storage.name(loc) for _, loc in mail.inline],
        }
        _record_email(path, result, status)
        log.info("%s: drift email sent to %s (attempt %d): %s", spec.name, ", ".join(mail.to), attempt, mail.subject)
        return status
    if final_try and queue is not None:
        queued = queue(mail, on_sent={"kind": "drift_report", "verdict_json": path})
        status = {"status": queued["status"], "to": list(mail.to), "subject": mail.subject,
                  "attempts": len(errors) + 1, "error": errors[-1],
                  **{k: queued[k] for k in ("outbox_id", "expires_at") if k in queued}}
        _record_email(path, result, status)
        log.warning("%s: drift email %s after %d attempt(s) (%s)", spec.name,
                    "queued in the outbox" if queued["status"] == "pending" else "sent", len(errors) + 1, errors[-1])
        return status
    status = {
        "status": "failed",
        "to": list(mail.to),
        "subject": mail.subject,
        "attempts": len(errors),
        "error": errors[-1],
        "final": final_try,
        "report_html": result.report_html,
        "verdict_json": path,
    }
    _record_email(path, result, status)
    if not final_try:
        raise EmailDeliveryError(
            f"{spec.name}: drift email not delivered after {len(errors)} attempt(s) ({errors[-1]}); "
            f"the task will be retried. The report stays at {result.report_html}."
        )
    log.error(
        "%s: drift email NOT delivered after %d attempt(s) (%s); recorded as email_failed in %s. The report "
        "stays at %s; check the SMTP connection and forward it by hand.",
        spec.name,
        len(errors),
        errors[-1],
        path,
        result.report_html,
    )
    return status


def record_late_delivery(verdict_json: Location, sent_at: str) -> None:
    """A drift email kept in the outbox went out: its verdict and the reports index say "sent" now."""
    path = os.fspath(verdict_json)
    raw = json.loads(storage.read_text(path))
    status = {**(raw.get("email") or {}), "status": "sent", "delivered_late_at": sent_at}
    _record_email(path, DriftResult.from_dict(raw), status)


def _record_email(verdict_path: str, result: DriftResult, status: dict[str, Any]) -> None:
    raw = json.loads(storage.read_text(verdict_path))
    raw["email"] = status
    raw["email_failed"] = status["status"] == "failed"
    raw["email_pending"] = status["status"] == "pending"
    _write_atomic(verdict_path, json.dumps(json_safe(raw), indent=2).encode())
    key = storage.stem(verdict_path)
    _update_index(storage.parent(verdict_path), key, {"email": status["status"]})


def _drift_picture(spec: ModelSpec, result: DriftResult, key: str, window: str) -> str:
    """The drift chart of the window as `<key>.png` next to its report; returns its location."""
    from pipelines.charts import drift_chart

    n, total = result.drifted_count, len(result.columns)
    png = drift_chart(result.columns, _ranked(result.columns),
                      f"{spec.name} · {window}: {n}/{total} columns drifted")
    return storage.write_bytes(png, storage.join(storage.parent(result.report_html), f"{key}.png"))


def _report_attachment(result: DriftResult, pages: Pages) -> tuple[str, str]:
    """The Evidently report as it is (a mail client opens .html), or the JSON verdict when it is missing or
    too large; and a sentence saying which."""
    src = result.report_html
    link = pages.file(src)
    where = f'<a href="{html.escape(link, quote=True)}">on the model\'s page</a>' if link else html.escape(src)
    if not storage.is_file(src):
        log.warning("%s: report %s is missing; attaching the JSON verdict", result.model, src)
        return result.verdict_json, f"The HTML report {html.escape(storage.name(src))} was not found; the JSON " \
                                    "verdict is attached."
    size = storage.size(src)
    if size > MAX_ATTACHMENT_BYTES:
        log.warning("%s: report is %.1f MB (> %.0f MiB); attaching the JSON verdict instead", result.model,
                    size / 1e6, MAX_ATTACHMENT_BYTES / 2**20)
        return result.verdict_json, (f"The full report ({size / 1e6:.1f} MB) is too large to attach; open it "
                                     f"{where}. The JSON verdict is attached.")
    return src, (f"The full Evidently report is attached ({html.escape(storage.name(src))}, "
                 f"{size / 1e6:.1f} MB: open it in a browser), and {where}.")


_NEXT_STEP = {
    "requested": "<b>Retrain requested.</b> The Asset <code>{model}__retrain_request</code> starts "
    "<code>train__{model}</code>; its challenger is promoted only if the gate finds it better "
    "than the champion on the same fresh holdout.",
    "cooldown": "<b>No retrain requested</b> (cooldown): the champion is recent; alarms are reported, and the "
    "first alarm after the cooldown requests a retrain.",
    "champion_newer": "<b>No retrain requested</b>: the champion was trained on data newer than this window.",
    "hysteresis": "<b>No retrain requested yet</b> (hysteresis): a retrain needs an alarm in {n} of {m} "
    "consecutive windows; the next windows decide.",
    "dedupe": "<b>No new retrain requested</b>: a retrain of this model is already queued or running; its "
    "challenger goes through the gate.",
    "no_alarm": "Nothing to do.",
    "performance_only": "<b>No retrain requested</b>: the performance drop is reported, not acted on "
    "(<code>drift.performance.retrain</code> is off for this model); trigger <code>train__{model}</code> by hand "
    "if it persists.",
}


def _email_html(
    spec: ModelSpec,
    result: DriftResult,
    decision: RetrainDecision,
    links: Sequence[tuple[str, str | None]],
    window: str,
    note: str,
    cid: str,
    plan: EmailPlan | None,
    digest: Sequence[Mapping[str, Any]],
    runbook: str = "",
) -> str:
    e = html.escape
    n, total = result.drifted_count, len(result.columns)
    verdict = (
        "Drift detected"
        if result.drift_detected
        else ("Performance drop" if result.performance_degraded else "No drift")
    )
    colour = "#b42318" if result.drift_detected or result.performance_degraded else "#067647"

    ranked = _ranked(result.columns)
    top = ranked[: max(min(n, EMAIL_TOP_COLUMNS), min(5, len(ranked)))]
    rows = "\n".join(
        "<tr>"
        f"<td>{e(c)}</td>"
        f"<td style='text-align:right'>{_fmt_score(result.columns[c]['score'])}</td>"
        f"<td>{e(str(result.columns[c]['method']))}</td>"
        f"<td style='text-align:right'>{_fmt_threshold(result.columns[c])}</td>"
        f"<td>{'yes' if result.columns[c]['drifted'] else 'no'}</td>"
        "</tr>"
        for c in top
    )
    more = f"<p>{len(ranked) - len(top)} more column(s) in the attached report.</p>" if len(ranked) > len(top) else ""

    rule = decision.rule or ("requested" if decision.request else ("no_alarm" if not result.drift_detected else ""))
    if rule == "no_alarm" and result.performance_degraded:
        rule = "performance_only"
    template = _NEXT_STEP.get(rule)
    if template:
        lead = template.format(model=e(spec.name), n=spec.drift.alarm_windows, m=spec.drift.of_windows)
        next_step = f"{lead} {e(decision.reason)}"
    elif decision.request:
        next_step = f"<b>Retrain requested.</b> {e(decision.reason)}"
    else:
        next_step = f"<b>No retrain requested.</b> {e(decision.reason)}"

    small = ""
    if min(result.rows_current, result.rows_reference) < SMALL_SAMPLE_ROWS:
        small = (
            f"<p><i>Few rows (current {result.rows_current:,}, reference {result.rows_reference:,}): "
            "drift scores on small samples are noisy.</i></p>"
        )
    sampled = ""
    if result.rows_current_total:
        sampled = (
            f"<p><i>The window's {result.rows_current_total:,} rows were sampled to "
            f"{result.rows_current:,} for the comparison (drift.max_rows).</i></p>"
        )

    link_block = links_html(links)
    champion = e(_champion_label(result.champion_version)) if result.champion_version else "no champion yet"
    picture = (f'<p><img src="cid:{e(cid, quote=True)}" alt="Drift score of each column against its threshold" '
               'style="max-width:100%"></p>')

    return f"""<html><body style="font-family:sans-serif">
<h2 style="color:{colour}">{e(spec.name)}: {verdict}</h2>
<p>{n} of {total} monitored columns drifted ({100 * result.drifted_share:.0f}%; the model's drift share is
{100 * spec.drift.drift_share:.0f}%, default per-column threshold {spec.drift.threshold:g}).</p>
<p>Window {e(window)} ({result.rows_current:,} rows{_online_html(result)})
against the reference ({result.rows_reference:,} rows), {champion}.</p>
{link_block}
{runbook}
{_episode_html(plan, digest, spec)}
{small}{sampled}
{picture}
<h3>Most drifted columns</h3>
<table border="1" cellpadding="4" cellspacing="0" style="border-collapse:collapse">
<tr><th>Column</th><th>Score</th><th>Method</th><th>Threshold</th><th>Drifted</th></tr>
{rows}
</table>
{more}
<h3>Performance</h3>
{_performance_html(result.performance)}
<h3>What happens next</h3>
<p>{next_step}</p>
<p>{note}</p>
<p style="color:#667085">{e(spec.description)} Owners: {e(", ".join(spec.owners))}.</p>
</body></html>
"""


def _online_html(result: DriftResult) -> str:
    """", of which N online": the serving endpoint's share of the window (before sampling), when it has any."""
    online = int(result.rows_by_source.get("online", 0))
    if not online:
        return ""
    total = sum(int(v) for v in result.rows_by_source.values())
    return f"; {online:,} of the window's {total:,} from online requests"


def _episode_html(plan: EmailPlan | None, digest: Sequence[Mapping[str, Any]], spec: ModelSpec) -> str:
    """Which alarm episode this email is about; a digest's table of the windows it covers."""
    e = html.escape
    if plan is None or plan.episode is None:
        return ""
    every = "Every window, emailed or not, is on the model's Flywheel page."
    if plan.kind == "first":
        lead = (f"A new alarm episode starts with this window ({e(plan.episode)}). While the next windows keep "
                f"alarming, no email is sent for {spec.drift.cooldown_days} days (<code>drift.cooldown_days</code>)"
                + (", then a digest of them" if spec.drift.alerts == "digest" else ", then a reminder") + ".")
    elif plan.kind == "reminder":
        lead = f"A reminder: the alarm episode that started with {e(plan.episode)} still alarms. {e(plan.reason)}."
    else:
        lead = f"A digest of the alarm episode that started with {e(plan.episode)}: {e(plan.reason)}."
    if not digest:
        return f"<p><i>{lead} {every}</i></p>"
    rows = "".join(
        f"<tr><td>{e(str(h.get('key')))}</td><td>{e(str(h.get('interval_end', ''))[:10])}</td>"
        f"<td style='text-align:right'>{100 * float(h.get('drifted_share') or 0):.0f}%</td>"
        f"<td>{e(', '.join((h.get('drifted_columns') or [])[:6]))}</td><td>{e(str(h.get('performance')))}</td>"
        f"<td>{e(str(h.get('rule') or ''))}</td></tr>"
        for h in digest
    )
    return (f"<p><i>{lead} {every}</i></p><table border='1' cellpadding='4' cellspacing='0' "
            "style='border-collapse:collapse'><tr><th>Window</th><th>Ends</th><th>Columns drifted</th>"
            f"<th>Most drifted</th><th>Performance</th><th>Retrain rule</th></tr>{rows}</table>")


def _performance_html(perf: Mapping[str, Any]) -> str:
    e = html.escape
    if not perf:
        return "<p>Not checked in this run.</p>"
    status = str(perf.get("status", "unknown"))
    metric = e(str(perf.get("metric", "")))
    value, ref = perf.get("value"), perf.get("reference_value")
    cells = (
        f"<tr><td>{metric}</td><td style='text-align:right'>{_fmt_score(value)}</td>"
        f"<td style='text-align:right'>{_fmt_score(ref)}</td>"
        f"<td style='text-align:right'>{perf.get('labelled_rows', 0):,}</td><td>{e(status)}</td></tr>"
    )
    table = (
        "<table border='1' cellpadding='4' cellspacing='0' style='border-collapse:collapse'>"
        "<tr><th>Metric</th><th>This window (labelled rows)</th><th>Champion at the gate</th>"
        f"<th>Labelled rows</th><th>Status</th></tr>{cells}</table>"
    )
    return f"{table}<p>{e(str(perf.get('detail', '')))}</p>"


def _fmt_score(score: Any) -> str:
    if score is None:
        return "n/a"
    s = float(score)
    return "n/a" if not math.isfinite(s) else f"{s:.3f}"


def _fmt_threshold(col: Mapping[str, Any]) -> str:
    thr = f"{float(col['threshold']):.3g}"
    return f"p &lt; {thr}" if col.get("kind") == "p_value" else f"≥ {thr}"
