"""The guardrail as the monitor runs it: read the champion's and the previous champion's scores of the same rows,
join the labels now due, judge (pipelines/guardrail.py `judge_guard`, pure), act, record, email.

`check_guard` reads; `apply_guard` rolls back through the audited path (pipelines/gate.py `rollback`, actor
`guardrail`) and marks the version (tags.GUARDRAIL_ROLLED_BACK: `promote` refuses it unless a person overrides);
`record_guard` writes `reports/<model>/guardrail/<key>.json` (the Flywheel page and the demo summary read them);
`compose_guard_email` is the owners' evidence email, linking the automatic-rollback runbook.

Everything is in data time: the guard period counts from the first interval the champion scored
(tags.SERVED_FROM, set by pipelines/score.py), and only labels due by the end of the monitored interval are used.
"""

from __future__ import annotations

import html
import json
import logging
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pipelines import storage, tags
from pipelines.guardrail import ACTOR, GuardVerdict, in_guard_period, judge_guard, per_look

if TYPE_CHECKING:
    from pipelines.mail import Email, Pages
    from pipelines.spec import ModelSpec
    from pipelines.storage import Location

log = logging.getLogger(__name__)

GUARD_DIR = "guardrail"          # reports/<model>/guardrail/<key>.json
RUNBOOK = "automatic-rollback"   # docs/runbooks/automatic-rollback.md


def _served_from(mv: Any) -> datetime | None:
    raw = (mv.tags or {}).get(tags.SERVED_FROM) if mv is not None else None
    return datetime.fromisoformat(raw) if raw else None


def check_guard(spec: ModelSpec, scores_dir: Location, validated_dir: Location, interval_start: datetime,
                interval_end: datetime) -> GuardVerdict:
    """The guardrail's verdict for the monitored interval [interval_start, interval_end): champion vs previous
    champion on the rows both scored since the champion started serving, with the labels due by interval_end."""
    from pipelines import model as m
    from pipelines.guardrail import GuardSpec
    from pipelines.landing import next_tick
    from pipelines.score import SHADOW_ROLES, join_delayed_labels, label_join_unsupported, read_scores, read_shadows
    from pipelines.training import LABEL

    declared = spec.guardrail or GuardSpec()
    # every interval of the guard period is a look that may roll back: each judged at the confidence of one look
    g = per_look(declared, (next_tick(spec.dataset.cadence, interval_start) - interval_start).total_seconds() / 86400)
    champ = m.champion(spec.registered_model_name)
    previous = m.by_alias(spec.registered_model_name, SHADOW_ROLES[0])
    cv = str(champ.version) if champ is not None else None
    pv = str(previous.version) if previous is not None else None
    served = _served_from(champ)

    def judged(y: Any = (), a: Any = None, b: Any = None, clusters: Any = None) -> GuardVerdict:
        return judge_guard(spec.primary_metric, spec.task, y, a, b, g, champion=cv, previous=pv,
                           promoted_at=served, now=interval_start, clusters=clusters)

    if spec.guardrail is None:
        return GuardVerdict("none", f"{spec.name} declares no `guardrail:`: no automatic action", cv, pv,
                            spec.primary_metric)
    if cv is None or pv is None or pv == cv or not in_guard_period(served, interval_start, g):
        return judged()
    unsupported = label_join_unsupported(spec)
    if unsupported:
        return GuardVerdict("none", f"labels cannot be joined row by row ({unsupported}): no automatic action",
                            cv, pv, spec.primary_metric)
    assert served is not None
    rid = spec.dataset.row_id
    scores = read_scores(scores_dir, served, interval_end, spec.dataset.cadence)
    shadows = read_shadows(scores_dir, served, interval_end, spec.dataset.cadence)
    if scores.empty or shadows.empty or rid not in scores.columns:
        return judged()
    mine = scores.loc[scores["model_version"].astype(str) == cv]
    theirs = shadows.loc[(shadows["role"] == SHADOW_ROLES[0]) & (shadows["model_version"].astype(str) == pv),
                         [rid, "prediction"]].rename(columns={"prediction": "previous_prediction"})
    both = mine.merge(theirs.drop_duplicates(rid, keep="last"), on=rid, how="inner")
    if both.empty:
        return judged()
    labelled = join_delayed_labels(spec, both, validated_dir, interval_end)
    verdict = judged(labelled[LABEL].to_numpy(), labelled["prediction"].to_numpy(),
                     labelled["previous_prediction"].to_numpy(),
                     labelled[spec.entity_key].to_numpy() if spec.entity_key in labelled.columns else None)
    evidence = {**verdict.evidence, "served_from": served.isoformat(), "interval_start": interval_start.isoformat(),
                "interval_end": interval_end.isoformat(), "rows_scored_by_both": len(both),
                "rows_pending_labels": len(both) - len(labelled), "guard_days": g.guard_days,
                "confidence": g.confidence, "declared_confidence": declared.confidence, "resamples": g.resamples}
    return replace(verdict, evidence=evidence)


def apply_guard(spec: ModelSpec, verdict: GuardVerdict, run_key: str, actor: str = ACTOR) -> dict[str, Any] | None:
    """Roll back when the verdict says so (audited, actor `guardrail`, idempotent per `run_key`) and mark the
    version; returns the move, or None when nothing moves (the verdict's action is not `rollback`)."""
    from pipelines.gate import _client, rollback

    if verdict.action != "rollback":
        return None
    moved = rollback(spec, f"guardrail: {verdict.reason}", actor, run_key)
    client = _client()
    name, version = spec.registered_model_name, str(moved["rolled_back"])
    client.set_model_version_tag(name, version, tags.GUARDRAIL_ROLLED_BACK, moved["at"])
    client.set_model_version_tag(name, version, tags.GUARDRAIL_EVIDENCE,
                                 json.dumps(verdict.to_dict(), default=str)[:5000])
    log.warning("%s: guardrail rolled back v%s -> v%s: %s", spec.name, version, moved["champion"], verdict.reason)
    return moved


def record_guard(reports_dir: Location, key: str, verdict: GuardVerdict, moved: dict[str, Any] | None) -> str:
    """`reports/<model>/guardrail/<key>.json`: the verdict and the move (a re-run of the key overwrites it)."""
    body = {"key": key, **verdict.to_dict(), "moved": moved}
    return storage.write_text(json.dumps(body, indent=2, default=str),
                              storage.join(reports_dir, GUARD_DIR, f"{key}.json"))


def list_guard(reports_dir: Location) -> list[dict[str, Any]]:
    """Every recorded guardrail verdict of a model, oldest key first."""
    return [json.loads(storage.read_text(p)) for p in storage.list_files(storage.join(reports_dir, GUARD_DIR),
                                                                         ".json")]


def compose_guard_email(spec: ModelSpec, verdict: GuardVerdict, moved: dict[str, Any] | None,
                        pages: Pages | None, links: dict[str, str] | None = None) -> Email:
    """The owners' email when the guardrail acted (rolled back) or, with `guardrail.action: alert`, asks a person
    to: what happened, the evidence (both models' metric on the same labelled rows, the paired-bootstrap
    interval), what it means now, what to do (the runbook)."""
    from pipelines.mail import Email, links_html
    from pipelines.runbooks import runbook_html

    e = html.escape
    imp = verdict.improvement or {}
    if moved is not None:
        subject = (f"[Flywheel] {spec.name}: guardrail rolled back v{moved['rolled_back']} -> v{moved['champion']} "
                   f"({verdict.metric} worse on delayed labels)")
        head = (f"The guardrail rolled back the champion of <b>{e(spec.name)}</b>: v{e(str(moved['rolled_back']))} "
                f"scored worse than the version it replaced, v{e(str(moved['champion']))}, on the same labelled rows. "
                f"<code>champion</code> is v{e(str(moved['champion']))} again (audited, actor "
                f"<code>{ACTOR}</code>); v{e(str(moved['rolled_back']))} is marked and will not be promoted again "
                f"unless a person overrides (<code>override__{e(spec.name)}</code>, action promote, with a reason).")
    else:
        subject = (f"[Flywheel] {spec.name}: v{verdict.champion} is worse than v{verdict.previous} on delayed labels "
                   "(guardrail alert: roll back?)")
        head = (f"The guardrail found the champion of <b>{e(spec.name)}</b>, v{e(str(verdict.champion))}, worse than "
                f"the version it replaced, v{e(str(verdict.previous))}, on the same labelled rows. This model's "
                "<code>guardrail.action</code> is <code>alert</code>: nothing moved; a person decides "
                f"(<code>rollback__{e(spec.name)}</code> with a reason rolls back in one step).")
    rows = [("metric", verdict.metric),
            (f"v{verdict.champion} (champion when judged)", _num(verdict.champion_value)),
            (f"v{verdict.previous} (previous champion)", _num(verdict.previous_value)),
            ("improvement (champion - previous)",
             f"{_num(imp.get('estimate'), True)} [{100 * float(imp.get('confidence') or 0):.3g}% CI "
             f"{_num(imp.get('low'), True)}, {_num(imp.get('high'), True)}], {imp.get('valid')}/"
             f"{imp.get('resamples')} paired resamples by {spec.entity_key}"),
            ("tolerance", _num(verdict.evidence.get("tolerance"))),
            ("labelled rows (both models scored them)", f"{verdict.rows:,}"
             + (f", {verdict.positives:,} positives" if verdict.positives is not None else "")),
            ("rows still waiting for labels", f"{verdict.evidence.get('rows_pending_labels', 0):,}"),
            ("served since (data time)", str(verdict.evidence.get("served_from", "?"))),
            ("monitored interval", f"{verdict.evidence.get('interval_start', '?')} -> "
                                   f"{verdict.evidence.get('interval_end', '?')}")]
    table = "".join(f"<tr><th align='left'>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in rows)
    all_links = [("the model's Flywheel page", pages.model(spec.name) if pages else None), *(links or {}).items()]
    body = (f"<html><body><h2>{e(subject.removeprefix('[Flywheel] '))}</h2><p>{head}</p>"
            f"<p>{e(verdict.reason)}</p><table border='1' cellpadding='4' cellspacing='0'>{table}</table>"
            "<p>What to do: follow the runbook (check the labels of the judged rows are complete, look at the "
            "rolled-back version's gate decision and model card, decide whether to keep the rollback).</p>"
            f"{runbook_html(RUNBOOK, pages)}{links_html(all_links)}</body></html>")
    return Email(to=tuple(spec.owners), subject=subject, html=body)


def _num(x: Any, signed: bool = False) -> str:
    if x is None:
        return "n/a"
    return f"{float(x):+.4f}" if signed else f"{float(x):.4f}"
