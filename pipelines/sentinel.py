"""The champion sentinel: nothing moves `champion` outside the audited path.

Every move Flywheel makes (the gate's promotion, a rollback, an override, the guardrail) is written to the
registered model's alias history before the alias moves (`pipelines.gate._move_aliases`). Replaying that
history gives the champion the audit trail vouches for (`audited_champion`); the alias MLflow holds is the
champion that scores and serves. They differ only when someone moved the alias with a plain MLflow client or
the MLflow UI, bypassing the gate and its audit trail.

`check_champion` compares the two (read only: the Flywheel page flags a mismatch with it); `watch_champion`
is what the monitor runs each interval: a mismatch is an alarm, recorded once per out-of-band version in the
alias history (action `out-of-band`, so the page's timeline shows it and the owners are emailed once), and,
when the spec says `registry: {out_of_band: restore}`, the audited champion is put back by an audited move.
To keep an out-of-band version instead, a person promotes it through `override__<model>` (action promote,
with a reason): that audited decision makes it the audited champion.

A move in flight (its history entry written, the alias still on the version it moves from) is not an alarm: the
sentinel reads the alias again after `settle_s` and reports `settling` while that entry is younger than
`SETTLE_MAX_S`.
No airflow import.
"""

from __future__ import annotations

import html
import logging
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from pipelines.mail import Email, Pages
    from pipelines.spec import ModelSpec

log = logging.getLogger(__name__)

ACTION = "out-of-band"           # the history entry of an alarm (moves nothing)
RESTORE = "sentinel-restore"     # the history entry of a restore (moves champion back)
ACTOR = "sentinel"
SETTLE_MAX_S = 120.0             # a history entry younger than this whose move is not applied yet: in flight

Status = Literal["ok", "settling", "out_of_band", "restored"]


@dataclass(frozen=True)
class SentinelVerdict:
    model: str
    status: Status
    actual: str | None               # the version the `champion` alias points at (None: no alias)
    audited: str | None              # the version the alias history says it should point at
    detail: str
    last_move: dict[str, Any] | None = None    # the newest audited entry that set the champion
    new_alarm: bool = False          # the first time this out-of-band version was seen: the owners are emailed
    restored: dict[str, Any] | None = None     # the audited restore entry, when the spec restores

    @property
    def alarm(self) -> bool:
        return self.status in ("out_of_band", "restored")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def audited_champion(history: list[dict[str, Any]]) -> tuple[str | None, dict[str, Any] | None]:
    """The champion the alias history vouches for, and the entry that set it (None, None: no audited move).

    Replayed oldest first: each `champion` move sets it; an `override-promote` that moved nothing (the version
    was already champion) vouches for that version, which is how a person accepts an out-of-band move."""
    from pipelines.gate import CHAMPION

    champion: str | None = None
    setter: dict[str, Any] | None = None
    for entry in history:
        if entry.get("action") == ACTION:
            continue
        for move in entry.get("moves") or ():
            if move.get("alias") == CHAMPION:
                champion = None if move.get("to") is None else str(move["to"])
                setter = entry
        if entry.get("action") == "override-promote" and not entry.get("moves") and entry.get("version"):
            champion, setter = str(entry["version"]), entry
    return champion, setter


def _age_s(entry: dict[str, Any] | None, now: datetime) -> float:
    try:
        return (now - datetime.fromisoformat(str((entry or {})["at"]))).total_seconds()
    except (KeyError, ValueError, TypeError):
        return float("inf")


def judge(spec: ModelSpec, history: list[dict[str, Any]], actual: str | None, now: datetime) -> SentinelVerdict:
    """The verdict on `actual` (the alias MLflow holds) given the alias history; pure (the page calls it too)."""
    audited, setter = audited_champion(history)
    if actual == audited:
        return SentinelVerdict(spec.name, "ok", actual, audited, _ok_detail(actual, setter), setter)
    newest = history[-1] if history else None
    # in flight: the newest entry set the champion, recently, and the alias still holds the version it moved from
    before = next((m.get("from") for m in (newest or {}).get("moves") or () if m.get("alias") == "champion"), None)
    if (newest is not None and newest is setter and _age_s(newest, now) < SETTLE_MAX_S
            and (None if before is None else str(before)) == actual):
        return SentinelVerdict(spec.name, "settling", actual, audited,
                               f"a move to {_v(audited)} by {newest.get('actor')} is being applied", setter)
    return SentinelVerdict(spec.name, "out_of_band", actual, audited, _mismatch_detail(spec, actual, audited, setter),
                           setter)


def check_champion(spec: ModelSpec, client: Any = None, *, settle_s: float = 2.0) -> SentinelVerdict:
    """Compare the `champion` alias with the audited champion; read only. A move in flight is read again after
    `settle_s` (its history entry is written before the alias moves)."""
    from pipelines.gate import CHAMPION, _alias, _client, alias_history

    client = client or _client()
    verdict = judge(spec, alias_history(spec, client), _alias(client, spec.registered_model_name, CHAMPION),
                    datetime.now(UTC))
    if verdict.status == "settling" and settle_s > 0:
        time.sleep(settle_s)
        return check_champion(spec, client, settle_s=0)
    return verdict


def _v(version: str | None) -> str:
    return f"v{version}" if version is not None else "no champion"


def _ok_detail(actual: str | None, setter: dict[str, Any] | None) -> str:
    if setter is None:
        return f"{_v(actual)}; no audited move yet"
    return f"{_v(actual)}, as audited ({setter.get('action')} by {setter.get('actor')} at {setter.get('at')})"


def _mismatch_detail(spec: ModelSpec, actual: str | None, audited: str | None, setter: dict[str, Any] | None) -> str:
    vouched = (f"the last audited move ({setter.get('action')} by {setter.get('actor')} at {setter.get('at')}) set "
               f"{_v(audited)}") if setter else "no audited move ever set a champion"
    return (f"{spec.registered_model_name}: `champion` is {_v(actual)}, but {vouched}: the alias was moved outside "
            "Flywheel's audited path (a plain MLflow client or the MLflow UI), bypassing the gate")


def watch_champion(spec: ModelSpec, run_key: str | None, actor: str = ACTOR, client: Any = None,
                   *, settle_s: float = 2.0) -> SentinelVerdict:
    """`check_champion`, then act on a mismatch: record the alarm once per out-of-band version (the entry
    `out-of-band` in the alias history: `new_alarm` says whether this call recorded it) and, with
    `registry.out_of_band: restore`, move `champion` back to the audited version (an audited move by `actor`).
    Idempotent per `run_key`: a retried task neither records the alarm twice nor restores twice."""
    from pipelines.gate import CHAMPION, _client, _move_aliases, _now, _record, alias_history

    client = client or _client()
    verdict = check_champion(spec, client, settle_s=settle_s)
    if not verdict.alarm:
        log.info("%s champion sentinel: %s (%s)", spec.name, verdict.status, verdict.detail)
        return verdict
    history = alias_history(spec, client)
    seen = [e for e in history if e.get("action") == ACTION and str(e.get("observed")) == str(verdict.actual)
            and str(e.get("audited")) == str(verdict.audited)]
    # the same out-of-band version seen before, and no audited move since: the owners were told already
    since = history.index(seen[-1]) if seen else -1
    already = bool(seen) and all(e.get("action") == ACTION for e in history[since + 1:])
    mine = any(e.get("run_key") == run_key for e in seen) if run_key else False
    if not already:
        _record(client, spec.registered_model_name, {
            "at": _now().isoformat(), "model": spec.registered_model_name, "action": ACTION, "moves": [],
            "actor": actor, "reason": verdict.detail[:2000], "run_key": run_key,
            "observed": verdict.actual, "audited": verdict.audited})
    new_alarm = not already or mine
    restored = None
    if spec.out_of_band == "restore":
        reason = (f"restored the audited champion {_v(verdict.audited)}: {_v(verdict.actual)} was set outside the "
                  "audited path")
        restored = _move_aliases(spec, RESTORE, {CHAMPION: verdict.audited}, actor, reason, run_key, client,
                                 {"observed": verdict.actual})
        log.warning("%s champion sentinel: %s; %s", spec.name, verdict.detail, reason)
        return SentinelVerdict(spec.name, "restored", verdict.actual, verdict.audited, verdict.detail,
                               verdict.last_move, new_alarm, restored)
    log.warning("%s champion sentinel: %s; alarm only (registry.out_of_band: alarm)", spec.name, verdict.detail)
    return SentinelVerdict(spec.name, "out_of_band", verdict.actual, verdict.audited, verdict.detail,
                           verdict.last_move, new_alarm)


def compose_sentinel_email(spec: ModelSpec, verdict: SentinelVerdict, pages: Pages | None,
                           links: dict[str, str] | None = None) -> Email:
    """The owners' email for an out-of-band champion: what the alias says, what the audit trail says, what the
    sentinel did, what to do (the runbook)."""
    from pipelines.mail import Email, links_html
    from pipelines.runbooks import OUT_OF_BAND_CHAMPION, runbook_html

    e = html.escape
    if verdict.status == "restored":
        subject = (f"[Flywheel] {spec.name}: champion moved outside the audited path ({_v(verdict.actual)}); "
                   f"restored {_v(verdict.audited)}")
        did = (f"The sentinel put <code>champion</code> back on the audited {_v(verdict.audited)} (an audited move, "
               f"actor <code>{ACTOR}</code>); this model's spec says <code>registry: {{out_of_band: restore}}</code>.")
    else:
        subject = (f"[Flywheel] {spec.name}: champion moved outside the audited path ({_v(verdict.actual)}, "
                   f"audited {_v(verdict.audited)})")
        did = (f"Nothing was moved back: this model's spec says <code>registry: {{out_of_band: alarm}}</code>. "
               f"{_v(verdict.actual)} scores and serves until a person decides.")
    last = verdict.last_move or {}
    rows = [("champion alias (MLflow)", _v(verdict.actual)), ("audited champion", _v(verdict.audited)),
            ("last audited move", f"{last.get('action', '—')} by {last.get('actor', '—')} at {last.get('at', '—')}"),
            ("its reason", str(last.get("reason", "—"))[:300])]
    table = "".join(f"<tr><th align='left'>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in rows)
    all_links = [("the model's Flywheel page", pages.model(spec.name) if pages else None), *(links or {}).items()]
    body = (f"<html><body><h2>{e(subject.removeprefix('[Flywheel] '))}</h2><p>{e(verdict.detail)}.</p><p>{did}</p>"
            f"<table border='1' cellpadding='4' cellspacing='0'>{table}</table>"
            "<p>What to do: find who moved it (MLflow's server log, the registry's access), then either keep the "
            f"audited champion (<code>override__{e(spec.name)}</code>, action promote, version "
            f"{e(str(verdict.audited))}, with a reason) or accept the new one the same way with version "
            f"{e(str(verdict.actual))}: either decision is audited and ends the alarm.</p>"
            f"{runbook_html(OUT_OF_BAND_CHAMPION, pages)}{links_html(all_links)}</body></html>")
    return Email(to=spec.owners, subject=subject, html=body)
