"""A small client of Airflow's REST API v2 (the same calls the UI makes), with token auth."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

STALE_EVENT_S = 20.0   # an asset event queued this long without starting a run waits for another asset (AND)


class AirflowAPIError(RuntimeError):
    code: int | None = None   # the HTTP status, when the server answered


class AirflowUnreachable(AirflowAPIError):
    """The API server does not answer at all (stopped, crashed, wrong port)."""


class AirflowAPI:
    def __init__(self, base_url: str, username: str, password: str, retries: int = 5) -> None:
        self.base = base_url.rstrip("/")
        self.retries = retries   # of a transient "Database error" (backoff 0.5 s, 1 s, 2 s, ... up to 8 s)
        self._user, self._password = username, password
        self._token: str | None = None

    def _request(self, method: str, path: str, body: Any = None, auth: bool = True) -> Any:
        """One API call. A 5xx "Database error" (SQLite's writer lock held by a burst of task updates on the
        embedded default) is retried with backoff; when a retried POST finds that its first try did commit (409),
        the created object is returned, so a run is never triggered twice nor lost."""
        retries = self.retries
        for attempt in range(retries + 1):
            try:
                return self._call(method, path, body, auth)
            except AirflowAPIError as exc:
                code = getattr(exc, "code", None)
                if attempt and code == 409 and method == "POST" and isinstance(body, dict) and body.get("dag_run_id"):
                    return self._call("GET", f"{path}/{urllib.parse.quote(body['dag_run_id'])}", None, auth)
                if attempt == retries or not (code is not None and code >= 500 and "Database error" in str(exc)):
                    raise
                time.sleep(min(8.0, 0.5 * 2 ** attempt))
        raise AssertionError("unreachable")

    def _call(self, method: str, path: str, body: Any, auth: bool) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                raw = r.read()
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")[:500]
            err = AirflowAPIError(f"{method} {path} -> {e.code}: {detail}")
            err.code = e.code
            raise err from e
        except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
            reason = getattr(e, "reason", e)
            raise AirflowUnreachable(f"Airflow's API server at {self.base} does not answer ({reason})") from e
        return json.loads(raw) if raw else None

    def token(self) -> str:
        if self._token is None:
            out = self._request("POST", "/auth/token", {"username": self._user, "password": self._password},
                                auth=False)
            self._token = out["access_token"]
        return self._token

    def get(self, path: str, **params: Any) -> Any:
        query = urllib.parse.urlencode(params, doseq=True)
        return self._request("GET", f"/api/v2{path}" + (f"?{query}" if query else ""))

    def dags(self) -> list[dict[str, Any]]:
        return self.get("/dags", limit=100)["dags"]

    def import_errors(self) -> list[dict[str, Any]]:
        return self.get("/importErrors", limit=100)["import_errors"]

    def unpause(self, dag_id: str) -> None:
        self._request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None, logical_date: datetime | None = None,
                interval: tuple[datetime, datetime] | None = None, run_id: str | None = None,
                note: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"logical_date": logical_date.isoformat() if logical_date else None,
                                "conf": conf or {}}
        if interval:
            body["data_interval_start"], body["data_interval_end"] = (t.isoformat() for t in interval)
        if run_id:
            body["dag_run_id"] = run_id
        if note:
            body["note"] = note
        return self._request("POST", f"/api/v2/dags/{dag_id}/dagRuns", body)

    def clear(self, dag_id: str, run_id: str, task_ids: list[str], note: str | None = None,
              downstream: bool = True) -> Any:
        """Clear tasks (and what follows them) of a run so the scheduler runs them again: the UI's *Clear*."""
        body: dict[str, Any] = {"dry_run": False, "dag_run_id": run_id, "task_ids": task_ids,
                                "include_downstream": downstream, "only_failed": False, "reset_dag_runs": True}
        if note:
            body["note"] = note
        return self._request("POST", f"/api/v2/dags/{dag_id}/clearTaskInstances", body)

    def dag_runs(self, dag_id: str = "~", **params: Any) -> list[dict[str, Any]]:
        """Every matching run (the API pages at 100 at most: follow the offsets)."""
        runs: list[dict[str, Any]] = []
        while True:
            page = self.get(f"/dags/{dag_id}/dagRuns", limit=100, offset=len(runs), order_by="run_after", **params)
            runs += page["dag_runs"]
            if not page["dag_runs"] or len(runs) >= page["total_entries"]:
                return runs

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return self.get(f"/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id)}/taskInstances")["task_instances"]

    def xcom(self, dag_id: str, run_id: str, task_id: str) -> Any:
        try:
            out = self.get(f"/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id)}/taskInstances/{task_id}"
                           "/xcomEntries/return_value", stringify=False)
        except AirflowAPIError:
            return None
        return out.get("value")

    def queued_asset_events(self, dag_id: str, newer_than: float | None = None) -> int:
        """Asset events queued for `dag_id`; with `newer_than` (seconds), only those queued that recently."""
        try:
            events = self.get(f"/dags/{dag_id}/assets/queuedEvents")["queued_events"]
        except AirflowAPIError as e:
            if "404" in str(e):
                return 0
            raise
        if newer_than is None:
            return len(events)
        since = datetime.now(UTC) - timedelta(seconds=newer_than)
        return sum(1 for e in events if datetime.fromisoformat(e["created_at"].replace("Z", "+00:00")) > since)

    def finished_run(self, dag_id: str, run_id: str, since: datetime | None = None) -> dict[str, Any] | None:
        """The run once it has succeeded or failed (queued or started at or after `since`, when given: this
        landing's or trigger's run, not an earlier one of the same id); None while it has not, or does not exist."""
        try:
            run = self.get(f"/dags/{dag_id}/dagRuns/{run_id}")
        except AirflowUnreachable:
            raise
        except AirflowAPIError:
            return None   # not created yet
        if run["state"] not in ("success", "failed"):
            return None
        if since is not None:
            began = max(datetime.fromisoformat((run.get(k) or "1970-01-01T00:00:00Z").replace("Z", "+00:00"))
                        for k in ("queued_at", "start_date"))
            if began < since - timedelta(seconds=1):
                return None
        return dict(run)

    def wait_run(self, dag_id: str, run_id: str, timeout: float, since: datetime | None = None,
                 poll: float = 2.0) -> dict[str, Any]:
        """`finished_run`, waited for; TimeoutError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while (run := self.finished_run(dag_id, run_id, since)) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{dag_id} run {run_id} not finished after {timeout:.0f}s")
            time.sleep(poll)
        return run

    def wait_settled(self, dag_ids: list[str], timeout: float = 900, quiet: float = 1.5) -> None:
        """Until no run is queued/running and no asset event waits for any of `dag_ids`. An event queued longer
        than `STALE_EVENT_S` is half of an AND schedule (e.g. one view of a model's service built once more than
        the other): it starts nothing until the other asset updates, so it is not waited for.

        `timeout` bounds the time without progress, not the whole wait: while runs finish or start (a year of
        monthly batches landed at once on a busy host takes longer than any fixed bound), it keeps waiting;
        when the same runs stay active for `timeout` seconds, TimeoutError names them."""
        deadline = time.monotonic() + timeout
        calm_since: float | None = None
        last: tuple[Any, ...] = ()
        active: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            active = [r for r in self.dag_runs(state=["queued", "running"]) if r["dag_id"] in dag_ids]
            waiting = 0 if active else sum(self.queued_asset_events(d, STALE_EVENT_S) for d in dag_ids)
            if not active and not waiting:
                calm_since = calm_since or time.monotonic()
                if time.monotonic() - calm_since >= quiet:
                    return
            else:
                calm_since = None
            state = (tuple(sorted((r["dag_id"], r["dag_run_id"], r["state"]) for r in active)), waiting)
            if state != last:                 # progress: a run started, finished or changed state
                last, deadline = state, time.monotonic() + timeout
            time.sleep(0.5)
        stuck = ", ".join(f"{r['dag_id']}/{r['dag_run_id']} ({r['state']})" for r in active) or "queued asset events"
        raise TimeoutError(f"DAG runs made no progress for {timeout:.0f}s: {stuck}")
