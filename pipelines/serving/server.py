"""Build the endpoints of the served models and run them under uvicorn (one process, one event loop: the
request path is ~1 ms of CPU, so a thread pool would only add hand-offs; see bench/serving.py)."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.serving.app import ModelEndpoint, ServingApp

if TYPE_CHECKING:
    from pipelines.layout import Layout
    from pipelines.spec import ModelSpec

log = logging.getLogger(__name__)

BROKEN: dict[str, str] = {}   # models whose endpoint could not be built, and why (answered 503 by the app)


def build_endpoints(specs: list[ModelSpec], repo_path: Path, lay: Layout | None, poll_s: float = 2.0,
                    log_rows: int = 1000, log_seconds: float = 2.0) -> dict[str, ModelEndpoint]:
    """One endpoint per spec: its online reads, request schema, champion watcher (started: it loads the champion
    and polls) and online log (started; None when `lay` is None)."""
    from pipelines.serving.champion import ChampionWatcher
    from pipelines.serving.features import OnlineFeatures
    from pipelines.serving.log import OnlineLog
    from pipelines.serving.schema import RequestSchema

    out = {}
    for spec in specs:
        try:
            online = OnlineFeatures(repo_path, spec.feature_service)
            schema = RequestSchema.of(spec, online.join_keys)
        except Exception as exc:  # noqa: BLE001 - the other models still serve; this one says why it does not
            log.error("%s: not served: %s: %s", spec.name, type(exc).__name__, exc)
            BROKEN[spec.name] = (f"{type(exc).__name__}: {exc} (fix it, e.g. `flywheel feast-apply`, and restart "
                                 "`flywheel serve`)")
            continue
        # the first look at the alias happens in the watcher's thread: MLflow may still be starting (`make up`)
        watcher = ChampionWatcher(spec, set(spec.row_features) | set(online.names), poll_s).start()
        online_log = OnlineLog(spec, lay.scores(spec.name), log_rows, log_seconds).start() if lay else None
        out[spec.name] = ModelEndpoint(spec, schema, online, watcher, online_log)
        log.info("%s: endpoint built (%s); its champion loads in the background", spec.name, spec.feature_service)
    return out


def close_endpoints(endpoints: dict[str, ModelEndpoint]) -> None:
    """Stop the watchers and write what the online logs hold."""
    for e in endpoints.values():
        e.watcher.stop()
        if e.log is not None:
            e.log.close()


def quiet_runtime() -> None:
    """Keep the interpreter's own pauses off the request path. The libraries loaded by now (MLflow, Feast,
    XGBoost, pandas) hold ~300,000 objects, and a full garbage collection over them takes ~150 ms, which a
    request caught behind it waits: `gc.freeze()` moves them out of the collector's reach (what requests allocate
    is still collected). Background threads (the champion poll, ~3 ms every 2 s; the online log's writes) hand
    the interpreter back after 1 ms instead of 5 (`sys.setswitchinterval`)."""
    import gc
    import sys

    gc.collect()
    gc.freeze()
    sys.setswitchinterval(0.001)


def uvicorn_config(app: ServingApp, host: str, port: int) -> Any:
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="on",
                          http="httptools", loop="uvloop", timeout_keep_alive=30)


def serve(endpoints: dict[str, ModelEndpoint], api_key: str, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Answer on host:port until interrupted (SIGINT/SIGTERM); then flush the online logs."""
    import uvicorn

    closed: list[bool] = []

    def close() -> None:
        if not closed:
            closed.append(True)
            close_endpoints(endpoints)
            log.info("serving stopped; online logs written")

    app = ServingApp(endpoints, api_key, unavailable=dict(BROKEN), on_shutdown=close)
    quiet_runtime()
    try:
        uvicorn.Server(uvicorn_config(app, host, port)).run()
    finally:
        close()


class BackgroundServer:
    """The app under uvicorn in a thread of this process (tests and bench/serving.py): `start()`, `stop()`."""

    def __init__(self, app: ServingApp, host: str = "127.0.0.1", port: int = 0) -> None:
        import socket

        import uvicorn

        if port == 0:
            with socket.socket() as s:
                s.bind((host, 0))
                port = s.getsockname()[1]
        self.app, self.host, self.port = app, host, port
        self.server = uvicorn.Server(uvicorn_config(app, host, port))
        self.thread = threading.Thread(target=self.server.run, name="serving-uvicorn", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the serving app did not start on {self.url}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
