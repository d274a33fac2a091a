"""The retrain policy: alarms, hysteresis, dedupe and cooldown (`decide_retrain`), and when to email
(`needs_email`: does this window alert; `plan_email`: is it emailed, in which alarm episode).

Pure functions: every input is an argument, time is the end of the monitored interval. The two are
separate concerns: the email plan never changes a retrain decision, and the other way round.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from pipelines.monitor.results import DriftResult, EmailPlan, RetrainDecision
from pipelines.util import as_utc

if TYPE_CHECKING:
    from pipelines.spec import DriftSpec, ModelSpec


def needs_email(result: DriftResult, decision: RetrainDecision) -> bool:
    """The owners are emailed on an alarm, and on a performance drop even when it is not an alarm."""
    return bool(decision.alarm or result.drift_detected or result.performance_degraded)


def entry_alerts(entry: Mapping[str, Any]) -> bool:
    """`needs_email` of a window as the reports index records it (list_reports)."""
    return bool(entry.get("alarm") or entry.get("drift_detected") or entry.get("performance") == "degraded")


def plan_email(
    key: str,
    interval_end: str,
    alerting: bool,
    history: Iterable[Mapping[str, Any]],
    *,
    mode: str = "episode",
    cooldown_days: int = 14,
) -> EmailPlan:
    """Is this window emailed? One email per alarm episode, not one per window. Pure.

    An *episode* starts when a window alerts (`needs_email`: drift, a performance drop) and the window
    before it did not (or there is none); it is named by that first window's key, and goes on while the
    following windows keep alerting. Its first window is emailed ("first"). A later window of the same
    episode is not ("persisting", recorded as `emailed: false` with its episode) until `cooldown_days`
    have passed since the episode's last email: then it is emailed again ("reminder"; 0 days: every
    window). With `mode="digest"` that later email is a digest of every window of the episode not
    emailed yet ("digest"), and when the alarm clears the windows still not emailed go out as a
    closing digest. A window that does not alert, outside digest mode, is never emailed ("quiet").

    `history`: earlier index entries (`list_reports`: key, interval_end, alarm, drift_detected,
    performance, episode, emailed); entries at or after this window's end are ignored, so a re-run or a
    backfill decides the same way.
    """
    end = as_utc(datetime.fromisoformat(interval_end))

    def at(h: Mapping[str, Any]) -> datetime:
        return as_utc(datetime.fromisoformat(str(h["interval_end"])))

    prior = sorted((h for h in history if at(h) < end), key=at)
    prev = prior[-1] if prior else None
    episode = str(prev["episode"]) if prev is not None and entry_alerts(prev) and prev.get("episode") else None
    members = [h for h in prior if episode is not None and h.get("episode") == episode]
    emailed = [h for h in members if h.get("emailed")]
    since = members.index(emailed[-1]) + 1 if emailed else 0
    unsent = tuple(str(h["key"]) for h in members[since:])
    if not alerting:
        if mode == "digest" and episode is not None and unsent:
            return EmailPlan(True, "digest", episode, f"the alarm of episode {episode} cleared: a digest of the "
                             f"{len(unsent)} window(s) not emailed yet", unsent)
        return EmailPlan(False, "quiet", None, "nothing alerts")
    if episode is None:
        return EmailPlan(True, "first", key, "a new alarm episode starts")
    last = at(emailed[-1]) if emailed else at(members[0])
    due = last + timedelta(days=int(cooldown_days))
    if end >= due:
        if mode == "digest":
            return EmailPlan(True, "digest", episode, f"episode {episode} still alarms {_days((end - last).days)} "
                             "after its last email: a digest of the windows since", (*unsent, key))
        return EmailPlan(True, "reminder", episode, f"episode {episode} still alarms {_days((end - last).days)} "
                         f"after its last email (cooldown {cooldown_days} days): a reminder")
    return EmailPlan(False, "persisting", episode, f"the alarm of episode {episode} persists; owners were emailed "
                     f"for {last.date()}, the next email is due from {due.date()} (cooldown {cooldown_days} days)")


def is_alarm(result: DriftResult, drift: DriftSpec) -> bool:
    """Does this window count towards a retrain? Data drift, or a performance drop if the spec says so."""
    return bool(result.drift_detected or (drift.performance_retrain and result.performance_degraded))


def decide_retrain(
    result: DriftResult,
    spec: ModelSpec,
    champion_trained_until: datetime | None,
    now: datetime,
    *,
    history: Iterable[Mapping[str, Any]] = (),
    retrain_in_flight: int = 0,
) -> RetrainDecision:
    """Request a retrain or say which rule held it back. Pure: every input is an argument.

    Rules, in order: the window must alarm (`is_alarm`); >= `drift.hysteresis.alarms` of the last
    `drift.hysteresis.windows` windows must have alarmed (`history`: earlier index entries with
    `interval_end` and `alarm`, e.g. from `list_reports`; entries at or after this window's end are
    ignored, so re-runs and backfills decide the same way; a window that was never monitored, e.g. a
    blocked batch, is not a window here); no retrain may be queued or running
    (`retrain_in_flight`, counted by the DAG); the champion must be older than `drift.cooldown_days`.
    `now` is the end of the monitored interval (never the wall clock). Naive datetimes are UTC.
    """
    d = spec.drift
    summary = _drift_summary(result, spec)
    alarm = is_alarm(result, d)
    if not alarm:
        return RetrainDecision(False, f"no drift: {summary}", "no_alarm", False)
    if result.performance_degraded and d.performance_retrain:
        summary += f"; performance: {result.performance.get('detail', 'degraded')}"
    if d.of_windows > 1:
        end = as_utc(datetime.fromisoformat(result.interval_end))
        prior = sorted(
            (h for h in history if as_utc(datetime.fromisoformat(str(h["interval_end"]))) < end),
            key=lambda h: as_utc(datetime.fromisoformat(str(h["interval_end"]))),
        )[-(d.of_windows - 1) :]
        alarms = 1 + sum(1 for h in prior if h.get("alarm"))
        if alarms < d.alarm_windows:
            seen = len(prior) + 1
            return RetrainDecision(
                False,
                f"suppressed (hysteresis): alarm in {alarms} of the last {seen} window(s), a retrain needs "
                f"{d.alarm_windows} of {d.of_windows}; {summary}",
                "hysteresis",
                True,
            )
    if retrain_in_flight > 0:
        runs = "1 run" if retrain_in_flight == 1 else f"{retrain_in_flight} runs"
        return RetrainDecision(
            False,
            f"suppressed (dedupe): a retrain is already queued or running ({runs} of train__{spec.name}); {summary}",
            "dedupe",
            True,
        )
    if champion_trained_until is None:
        return RetrainDecision(True, f"{summary}; no champion yet", "requested", True)
    age = as_utc(now) - as_utc(champion_trained_until)
    cooldown = int(d.cooldown_days)
    champ = _champion_label(result.champion_version)
    days = age.total_seconds() / 86400
    if age.total_seconds() < 0:
        return RetrainDecision(
            False,
            f"suppressed: {champ} was trained on data up to "
            f"{as_utc(champion_trained_until).date()}, after this interval "
            f"(ends {as_utc(now).date()}); {summary}",
            "champion_newer",
            True,
        )
    if days < cooldown:
        until = (as_utc(champion_trained_until) + timedelta(days=cooldown)).date()
        return RetrainDecision(
            False,
            f"suppressed: {champ} trained {_days(days)} ago, inside the {cooldown}-day cooldown "
            f"(until {until}); {summary}",
            "cooldown",
            True,
        )
    return RetrainDecision(
        True, f"{summary}; {champ} trained {_days(days)} ago (cooldown {cooldown} days)", "requested", True
    )


def _drift_summary(result: DriftResult, spec: ModelSpec) -> str:
    n, total = result.drifted_count, len(result.columns)
    pct, limit = round(100 * result.drifted_share), round(100 * spec.drift.drift_share)
    cmp = ">=" if result.drift_detected else "<"
    names = result.drifted_columns
    shown = ", ".join(names[:6]) + (f", +{len(names) - 6} more" if len(names) > 6 else "")
    return f"drift in {n}/{total} columns ({pct}% {cmp} {limit}%)" + (f": {shown}" if names else "")


def _champion_label(version: str | None) -> str:
    if not version:
        return "the champion"
    return f"champion {version}" if str(version).lower().startswith("v") else f"champion v{version}"


def _days(days: float) -> str:
    whole = int(days)
    return "1 day" if whole == 1 else f"{whole} days"
