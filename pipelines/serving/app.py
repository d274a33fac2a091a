"""The online endpoint: a small ASGI app (no framework on the request path: routing, auth and JSON by hand keep one
row under a millisecond of Python) run by uvicorn.

Routes (every answer is JSON, except /metrics):

    POST /v1/models/<model>/predict   {"rows": [{...}, ...]} or {"row": {...}}; optional "missing": "score"
    GET  /v1/models                   the models served and the version each serves
    POST /v1/models/<model>/reload    look at the champion alias now (a promotion hook may call it)
    GET  /metrics                     Prometheus text format
    GET  /healthz                     the process answers (no key)
    GET  /readyz                      200 when every model has a champion loaded and its online store answers,
                                      else 503 (no key needed for the status; each model's version and
                                      what failed only with the key)

Every route but /healthz and /readyz needs the API key: `Authorization: Bearer <key>` or `X-API-Key: <key>`
(compared in constant time, never logged); without it, or with a wrong one, 401.

A prediction answers, per row, the score, the row id (the request's, or a generated one), the age of each view's
values at the row's event time (`feature_age_s`) and the views with no value (`missing_views`), and once for the
request the version that produced every score. Bad input is a 4xx naming what to fix, never a 500: 400 (not
JSON), 401 (key), 404 (unknown model; an entity unknown to a view, see below), 405, 413 (too big), 422 (a missing
or mistyped field), 503 (no champion yet, or the online store does not answer).

Unknown entities: an entity key that a view of the service holds nothing for answers 404 `unknown_entity`,
naming the row, the view and the key, unless the request says `"missing": "score"`: then the row is scored with
that view's features missing, as batch scoring scores an entity without history, and `missing_views` names the
views. A value older than its view's TTL is missing too (as in the training join); it is listed in
`stale_views`, not an error.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pipelines.serving.metrics import Metrics
from pipelines.serving.schema import RequestError, RequestSchema, parse_time

if TYPE_CHECKING:
    from collections.abc import Callable

    from pipelines.serving.champion import ChampionWatcher
    from pipelines.serving.features import OnlineFeatures
    from pipelines.serving.log import OnlineLog
    from pipelines.spec import ModelSpec

log = logging.getLogger(__name__)

MAX_BODY = 4 * 1024 * 1024


@dataclass
class ModelEndpoint:
    """Everything one model's endpoint needs; `watcher.current` is the champion answering now."""
    spec: ModelSpec
    schema: RequestSchema
    online: OnlineFeatures
    watcher: ChampionWatcher
    log: OnlineLog | None = None

    def predict(self, body: Any) -> dict[str, Any]:
        champ = self.watcher.current          # taken once: this request's answers all come from this version
        if champ is None:
            why = f" ({self.watcher.last_error})" if self.watcher.last_error else ""
            raise RequestError(503, "no_champion", f"{self.spec.name} has no champion yet{why}: train and promote a "
                               f"version (`flywheel train {self.spec.name}`); this endpoint picks it up within "
                               f"{self.watcher.poll_s:g} s")
        rows = self.schema.rows(body)
        score_missing = isinstance(body, dict) and body.get("missing") == "score"
        if isinstance(body, dict) and body.get("missing") not in (None, "score", "error"):
            raise RequestError(422, "invalid_request", f"`missing` is {body.get('missing')!r}; use \"error\" "
                               "(default: an entity unknown to a view answers 404) or \"score\" (score it with that "
                               "view's features missing, as batch scoring does)")
        now = time.time()
        ts_field = self.schema.timestamp
        at = []
        for r in rows:
            t = parse_time(r.get(ts_field)) if r.get(ts_field) is not None else None
            at.append(t.timestamp() if t is not None else now)
        try:
            got = self.online.read(rows, at)
        except Exception as exc:  # noqa: BLE001 - the store, not the request: 503, and the reason
            log.warning("%s: online store read failed: %s: %s", self.spec.name, type(exc).__name__, exc)
            raise RequestError(503, "online_store_unavailable", f"the online store of {self.spec.feature_service} "
                               f"did not answer ({type(exc).__name__}); retry later") from None
        if not score_missing:
            unknown = [{"row": i, "view": v, "key": {k: rows[i][k] for k in self._view_keys(v)}}
                       for i, views in enumerate(got.unknown) for v in views]
            if unknown:
                first = unknown[0]
                raise RequestError(404, "unknown_entity", f"row {first['row']}: {first['key']} is unknown to view "
                                   f"{first['view']} (no value in the online store); check the key, or send "
                                   '"missing": "score" to score it without those features as batch scoring does',
                                   unknown)
        inputs = [{**r, **{f: got.values[f][i] for f in got.values}} for i, r in enumerate(rows)]
        matrix, _unseen = champ.encoder.matrix(inputs)
        scores = champ.predict(matrix)
        explained = self._explanations(champ, matrix, scores)
        rid_field = self.schema.row_id
        answers: list[dict[str, Any]] = []
        logged: list[dict[str, Any]] = []
        for i, r in enumerate(rows):
            rid = r.get(rid_field)
            rid = str(rid) if rid is not None else f"online-{uuid.uuid4().hex}"
            score = float(scores[i]) if math.isfinite(float(scores[i])) else None
            answers.append({"row_id": rid, "score": score, "feature_age_s": got.age_s[i],
                            "missing_views": got.unknown[i], "stale_views": got.stale[i]})
            if explained is not None:
                answers[-1]["explanation"] = explained[i]
            if self.log is not None:   # the model's columns only: a client's extra fields stay out of the log
                event = r.get(ts_field)
                record = {c: inputs[i].get(c) for c in (*self.schema.required, *got.values)}
                logged.append({**record, rid_field: rid,
                               ts_field: event if event is not None else _iso(at[i]),
                               "prediction": score, "model_version": champ.version, "source": "online",
                               "served_at": now})
        if logged and self.log is not None:
            self.log.append(logged)
        return {"model": self.spec.name, "model_version": champ.version, "predictions": answers}

    def _explanations(self, champ: Any, matrix: Any, scores: Any) -> list[list[dict[str, Any]]] | None:
        """With the spec's `explain:`, each row's top-k contributions, as batch scoring stores them
        (pipelines/release/explain.py): [{"feature", "contribution"}], largest |contribution| first; [] for a row
        below `explain.min_prediction`. None without `explain:`."""
        ex = self.spec.explain
        if ex is None or ex.top_k <= 0:
            return None
        import pandas as pd

        from pipelines.release.explain import explained_rows

        frame = champ.encoder.frame(matrix)
        cols = explained_rows(champ.booster, frame, scores, ex.top_k, ex.min_prediction)
        k = len(cols) // 2
        out = []
        for i in range(len(frame)):
            row = []
            for j in range(1, k + 1):
                name = cols[f"contribution_{j}_feature"][i]
                if not pd.isna(name):
                    row.append({"feature": str(name), "contribution": float(cols[f"contribution_{j}_value"][i])})
            out.append(row)
        return out

    def _view_keys(self, view: str) -> tuple[str, ...]:
        for v in self.online.views:
            if v.name == view:
                return v.join_keys
        return ()

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        champ = self.watcher.current
        state: dict[str, Any] = {"champion": champ.version if champ else None,
                                 "feature_service": self.spec.feature_service}
        ok = champ is not None
        if champ is None:
            state["reason"] = self.watcher.last_error or "no champion yet"
        try:
            self.online.ping()
            state["online_store"] = "ok"
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            ok = False
            state["online_store"] = f"{type(exc).__name__}: {exc}"[:300]
        return ok, state


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


class ServingApp:
    """The ASGI application (see the module's docstring)."""

    def __init__(self, endpoints: dict[str, ModelEndpoint], api_key: str,
                 unavailable: dict[str, str] | None = None, on_shutdown: Callable[[], None] | None = None) -> None:
        if not api_key:
            raise ValueError("the online endpoint needs an API key (FLYWHEEL_SERVING_API_KEY or "
                             "$FLYWHEEL_HOME/secrets/serving_api_key); it never serves without one")
        self.endpoints = endpoints
        self.unavailable = dict(unavailable or {})   # declared models that could not be served, and why
        self.on_shutdown = on_shutdown
        self._key = api_key.encode()
        self.metrics = Metrics()

    # ---- ASGI

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        t0 = time.perf_counter()
        route, model = self._route(scope["path"])
        status, rows = 500, 0
        try:
            status, body, ctype, rows = await self._handle(scope, receive)
        except RequestError as exc:
            status, body, ctype = exc.status, _dumps(exc.body), b"application/json"
        except Exception:  # noqa: BLE001 - a bug of ours: logged, answered 500 without details
            log.exception("serving: unexpected error on %s %s", scope.get("method"), scope.get("path"))
            status, body, ctype = 500, _dumps({"error": "internal", "message": "unexpected server error (logged)"}), \
                b"application/json"
        headers = [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]
        if status == 401:
            headers.append((b"www-authenticate", b'Bearer realm="flywheel"'))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        self.metrics.observe(route, model, status, time.perf_counter() - t0, rows)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.on_shutdown is not None:    # before uvicorn re-raises SIGTERM and the process ends
                    self.on_shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _route(self, path: str) -> tuple[str, str]:
        """(route, model) for the metrics' labels: a model label only for a served model (no label per guess)."""
        parts = path.rstrip("/").split("/")
        if len(parts) == 5 and parts[1] == "v1" and parts[2] == "models":
            return parts[4] if parts[4] in ("predict", "reload") else "other", (
                parts[3] if parts[3] in self.endpoints else "")
        return {"/healthz": "healthz", "/readyz": "readyz", "/metrics": "metrics", "/v1/models": "models"}.get(
            path.rstrip("/"), "other"), ""

    async def _handle(self, scope: dict[str, Any], receive: Any) -> tuple[int, bytes, bytes, int]:
        path, method = scope["path"].rstrip("/") or "/", scope["method"]
        js = b"application/json"
        if path == "/healthz":
            return 200, b'{"status":"ok"}', js, 0
        if path == "/readyz":
            query = scope.get("query_string", b"").decode(errors="replace")
            only = [v for k, _, v in (p.partition("=") for p in query.split("&")) if k == "model" and v]
            ready, state = self.readiness(only or None)
            # the status for a probe without a key; which versions serve and what failed only with the key
            body = {"ready": ready, "models": state} if self._authorized(scope) else {"ready": ready}
            return (200 if ready else 503), _dumps(body), js, 0
        if not self._authorized(scope):
            raise RequestError(401, "unauthorized", "missing or wrong API key: send `Authorization: Bearer <key>` "
                               "or `X-API-Key: <key>` (the key is in $FLYWHEEL_HOME/secrets/serving_api_key, or "
                               "FLYWHEEL_SERVING_API_KEY)")
        if path == "/metrics":
            return 200, self.metrics.render(self._gauges).encode(), b"text/plain; version=0.0.4; charset=utf-8", 0
        if path == "/v1/models":
            return 200, _dumps({"models": {n: {"model_version": e.watcher.current.version if e.watcher.current
                                                else None, "required_fields": e.schema.required,
                                                "optional_fields": [e.schema.row_id, e.schema.timestamp]}
                                           for n, e in self.endpoints.items()}}), js, 0
        parts = path.split("/")
        if len(parts) == 5 and parts[1] == "v1" and parts[2] == "models" and parts[4] in ("predict", "reload"):
            name, action = parts[3], parts[4]
            endpoint = self.endpoints.get(name)
            if endpoint is None and name in self.unavailable:
                raise RequestError(503, "model_unavailable", f"{name} is not served: {self.unavailable[name]}")
            if endpoint is None:
                raise RequestError(404, "unknown_model", f"no model {name!r} is served here; served: "
                                   f"{', '.join(sorted(self.endpoints)) or 'none'}")
            if method != "POST":
                raise RequestError(405, "method_not_allowed", f"use POST for /v1/models/{name}/{action}")
            if action == "reload":
                endpoint.watcher.wake()
                return 202, _dumps({"model": name, "reload": "requested"}), js, 0
            raw = await _body(receive)
            try:
                body = json.loads(raw)
            except ValueError as exc:
                raise RequestError(400, "invalid_json", f"the body is not JSON ({exc}); send "
                                   '{"rows": [{...}]} with Content-Type: application/json') from None
            answer = endpoint.predict(body)
            return 200, _dumps(answer), js, len(answer["predictions"])
        raise RequestError(404, "not_found", f"no route {method} {path}; see /v1/models, "
                           "/v1/models/<model>/predict, /metrics, /healthz, /readyz")

    def _authorized(self, scope: dict[str, Any]) -> bool:
        given = b""
        for name, value in scope.get("headers", ()):
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                given = value[7:].strip()
            elif name == b"x-api-key":
                given = value.strip()
        return bool(given) and hmac.compare_digest(given, self._key)

    def readiness(self, only: list[str] | None = None) -> tuple[bool, dict[str, Any]]:
        """Ready when every model (or each of `only`) has a champion loaded and its online store answers."""
        names = only or [*self.endpoints, *self.unavailable]
        states: dict[str, Any] = {}
        ready = bool(names)
        for name in names:
            e = self.endpoints.get(name)
            if e is None:
                states[name] = {"champion": None, "reason": self.unavailable.get(name, "not served here")}
                ready = False
                continue
            ok, states[name] = e.readiness()
            ready = ready and ok
        return ready, states

    def _gauges(self) -> list[tuple[str, str, str, dict[str, Any], float]]:
        out: list[tuple[str, str, str, dict[str, Any], float]] = []
        for name, e in self.endpoints.items():
            champ = e.watcher.current
            out.append(("flywheel_serving_model_version", "gauge", "The registered version serving now (0: none).",
                        {"model": name}, float(champ.version) if champ and champ.version.isdigit() else 0.0))
        for name, e in self.endpoints.items():
            out.append(("flywheel_serving_reloads_total", "counter", "Champion switches (loads and removals).",
                        {"model": name}, float(e.watcher.reloads)))
        for attr, metric, kind, text in (("written", "flywheel_serving_log_rows_written_total", "counter",
                                          "Rows written to the online scoring log."),
                                         ("pending", "flywheel_serving_log_rows_pending", "gauge",
                                          "Rows waiting to be written to the online scoring log."),
                                         ("dropped", "flywheel_serving_log_rows_dropped_total", "counter",
                                          "Rows dropped from the online log (its queue was full).")):
            for name, e in self.endpoints.items():
                if e.log is not None:
                    out.append((metric, kind, text, {"model": name}, float(getattr(e.log, attr))))
        return out


async def _body(receive: Any) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise RequestError(413, "body_too_large", f"the body is over {MAX_BODY // (1024 * 1024)} MiB")
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def _dumps(value: Any) -> bytes:
    return json.dumps(value, allow_nan=False, default=str).encode()
