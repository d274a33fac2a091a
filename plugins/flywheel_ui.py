"""The Flywheel page inside the Airflow UI: a FastAPI app under `/flywheel` and its entries in the UI.

`external_views` put it in the nav ("Flywheel", `/plugin/flywheel`) and as a tab on every DAG
(`/flywheel/dags/{DAG_ID}` answers with the page of that DAG's model or dataset). The UI shows both
in an iframe of the same origin, so the browser sends Airflow's session cookie (`_token`).

Airflow mounts plugin apps with no authentication at all: every route here depends on Airflow's own
auth (`airflow.api_fastapi.core_api.security`): the app-level `get_user` (the bearer header, else the
`_token` cookie; none -> 401, or for a browser's GET a redirect to the login page) and, per route showing a
model's or a dataset's data, a DAG access check of the auth manager (`requires_access_dag`) on the DAG the
page or file belongs to. The runbooks (docs/runbooks/, pipelines/runbooks.py) hold no data: any logged-in
user reads them.

| route | auth (besides the app-level `get_user`) |
|---|---|
| GET  /flywheel/ | the user; lists the models/datasets whose `train__<m>` / `ingest_validate__<d>` they may GET |
| GET  /flywheel/models/{model} | `requires_access_dag("GET", train__<model>)` |
| POST /flywheel/models/{model}/rollback | `requires_access_dag("POST", RUN, rollback__<model>)` + same origin |
| POST /flywheel/models/{model}/override | `requires_access_dag("POST", RUN, override__<model>)` + same origin |
| GET  /flywheel/datasets/{dataset} | `requires_access_dag("GET", ingest_validate__<dataset>)` |
| GET  /flywheel/dags/{dag_id} | `requires_access_dag("GET")` on that dag_id (the DAG tab) |
| GET  /flywheel/files/reports/{model}/{path} | `requires_access_dag("GET", monitor__<model>)` |
| GET  /flywheel/files/cards/{model}/{version} | `requires_access_dag("GET", train__<model>)` |
| GET  /flywheel/files/docs/{dataset}/{path} | `requires_access_dag("GET", ingest_validate__<dataset>)` |
| GET  /flywheel/files/validation/{dataset}/{key}.json | `requires_access_dag("GET", ingest_validate__<dataset>)` |
| GET  /flywheel/runbooks/ | the user (the runbooks hold no data: docs/runbooks/ of the checkout) |
| GET  /flywheel/runbooks/{name} | the user; `name` must be one of the listed runbooks (else 404 with the list) |

Actions trigger `rollback__<model>` / `override__<model>` through Airflow's REST API with the user's own
token (so the run's triggering user, and the alias history's actor, is the person who clicked). A POST
from a cookie-authenticated page must come from this origin (Origin, else Referer): a cross-site form
cannot act. Files are served only from Flywheel's folders (pipelines/board/files.py), with a CSP that
sandboxes them and forbids fetching anything from elsewhere.

Plugin import stays light (every Airflow process loads plugins): FastAPI, Airflow's security module and
the board are imported when the API server first calls the app.
"""

# no `from __future__ import annotations`: FastAPI reads the route signatures' types at run time, and they are
# imported inside build_app()
import logging
import os
from typing import Any

from airflow.plugins_manager import AirflowPlugin

log = logging.getLogger(__name__)

PREFIX = "/flywheel"
PAGE_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; "
            "frame-ancestors 'self'; base-uri 'none'")
# served reports (Evidently, Data Docs, cards): their own scripts run in an opaque origin (no Airflow session)
# and nothing is fetched from outside the Airflow server (GX's Data Docs link CDNs: blocked, the page still reads)
FILE_CSP = ("sandbox allow-scripts allow-popups; default-src 'self' 'unsafe-inline' 'unsafe-eval' data: blob:; "
            "frame-ancestors 'self'")


def build_app() -> Any:
    """The FastAPI app (imports FastAPI and Airflow's security module: call it in the API server only)."""
    import json
    import shutil
    import tempfile
    import urllib.error
    import urllib.request
    from datetime import UTC, datetime
    from pathlib import Path
    from typing import Annotated
    from urllib.parse import quote, urlparse

    from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import GetUserDep, get_user, requires_access_dag
    from fastapi import Depends, FastAPI, Form, HTTPException, Request
    from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

    from pipelines.board import files as board_files
    from pipelines.board import pages
    from pipelines.layout import Layout
    from pipelines.spec import load_datasets, load_specs, readers

    app = FastAPI(title="Flywheel", dependencies=[Depends(get_user)], docs_url=None, redoc_url=None,
                  openapi_url=None)

    @app.exception_handler(HTTPException)
    async def _login_first(request: Request, exc: HTTPException) -> Response:
        # a browser opening a page without a session goes to the login page and comes back
        if (exc.status_code == 401 and request.method == "GET"
                and "text/html" in request.headers.get("accept", "")):
            from airflow.api_fastapi.app import get_auth_manager

            return RedirectResponse(get_auth_manager().get_url_login(next_url=str(request.url)), status_code=302)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    def _can(request: Request, viewer: Any, method: str, dag_id: str, entity: Any = None) -> None:
        requires_access_dag(method, access_entity=entity, param_dag_id=dag_id)(request, viewer)

    def _allowed(request: Request, viewer: Any, dag_id: str) -> bool:
        try:
            _can(request, viewer, "GET", dag_id)
        except HTTPException:
            return False
        return True

    def _spec(model: str) -> Any:
        spec = load_specs().get(model)
        if spec is None:
            raise HTTPException(404, f"no model {model!r} (models/<name>.yaml)")
        return spec

    def _contract(dataset: str) -> Any:
        contract = load_datasets().get(dataset)
        if contract is None:
            raise HTTPException(404, f"no dataset {dataset!r} (datasets/<name>.yaml)")
        return contract

    def model_access(stage: str, method: str = "GET") -> Any:
        entity = DagAccessEntity.RUN if method == "POST" else None

        def check(request: Request, model: str, viewer: GetUserDep) -> None:
            _spec(model)
            _can(request, viewer, method, f"{stage}__{model}", entity)
        return check

    def dataset_access(request: Request, dataset: str, viewer: GetUserDep) -> None:
        _contract(dataset)
        _can(request, viewer, "GET", f"ingest_validate__{dataset}")

    def file_access(request: Request, area: str, owner: str, viewer: GetUserDep) -> None:
        if area == "reports":
            _spec(owner)
            _can(request, viewer, "GET", f"monitor__{owner}")
        elif area == "cards":
            _spec(owner)
            _can(request, viewer, "GET", f"train__{owner}")
        elif area in ("docs", "validation"):
            _contract(owner)
            _can(request, viewer, "GET", f"ingest_validate__{owner}")
        else:
            raise HTTPException(404, "not found")

    def same_origin(request: Request) -> None:
        """CSRF: a cookie-authenticated POST must come from a page of this server (Origin, else Referer)."""
        if request.headers.get("authorization", "").lower().startswith("bearer "):
            return   # an explicit token is not ambient authority: no cross-site form can send it
        source = request.headers.get("origin") or request.headers.get("referer") or ""
        allowed = {_origin(str(request.base_url))}
        if base := os.environ.get("AIRFLOW__API__BASE_URL"):
            allowed.add(_origin(base))
        if not source or _origin(source) not in allowed:
            raise HTTPException(403, "cross-origin request refused: use the Flywheel page of this Airflow server")

    def _origin(url: str) -> str:
        p = urlparse(url)
        return f"{p.scheme}://{p.netloc}".lower()

    def _token(request: Request) -> str:
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        return request.cookies.get(COOKIE_NAME_JWT_TOKEN, "")

    def _api_base() -> str:
        # this API server itself, on loopback (the public base URL may be a proxy this host cannot reach)
        from airflow.configuration import conf

        return f"http://127.0.0.1:{conf.getint('api', 'port', fallback=8080)}"

    def _api(request: Request, method: str, path: str, body: Any = None) -> Any:
        """Airflow's REST API as the user of this request (their own token, their own permissions)."""
        req = urllib.request.Request(
            _api_base() + path, method=method, data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {_token(request)}", "Content-Type": "application/json",
                     "Accept": "application/json"})
        with urllib.request.urlopen(req, timeout=20) as r:
            return json.loads(r.read() or b"null")

    def _urls(request: Request, run_ids: dict[str, dict[str, str]] | None = None) -> Any:
        return pages.Urls(base=request.scope.get("root_path", PREFIX) or PREFIX, airflow="/",
                          mlflow=os.environ.get("FLYWHEEL_MLFLOW_UI", ""), run_ids=run_ids or {})

    def _client() -> Any:
        from pipelines import model

        model.configure_mlflow_env()
        from mlflow import MlflowClient

        return MlflowClient()

    def _run_ids(request: Request, dag_ids: list[str]) -> dict[str, dict[str, str]]:
        """run_key -> run_id of recent runs of these DAGs (to link the exact run of a version or a move)."""
        from flywheel.dagkit import run_key

        out: dict[str, dict[str, str]] = {}
        for dag_id in dag_ids:
            try:
                runs = _api(request, "GET", f"/api/v2/dags/{quote(dag_id)}/dagRuns?limit=200&order_by=-run_after")
            except (urllib.error.URLError, OSError, ValueError) as exc:
                log.warning("runs of %s not listed: %s", dag_id, exc)
                continue
            out[dag_id] = {run_key(r["dag_run_id"]): r["dag_run_id"] for r in runs.get("dag_runs", [])}
        return out

    def _html(text: str, status: int = 200) -> HTMLResponse:
        return HTMLResponse(text, status_code=status, headers={"Content-Security-Policy": PAGE_CSP,
                                                               "Cache-Control": "no-store"})

    def _may(request: Request, viewer: Any, model: str) -> frozenset[str]:
        """The page's actions this user's role may trigger (the forms of the others are disabled)."""
        may = set()
        for action in pages.ACTIONS:
            try:
                _can(request, viewer, "POST", f"{action}__{model}", DagAccessEntity.RUN)
                may.add(action)
            except HTTPException:
                continue
        return frozenset(may)

    def _model_html(request: Request, model: str, viewer: Any, status: int = 200, **kw: Any) -> HTMLResponse:
        from pipelines.board import model_board

        spec = _spec(model)
        board = model_board(spec, Layout.from_env(), _client(), datetime.now(UTC))
        dags = [f"{stage}__{model}" for stage in ("train", "rollback", "override")]
        return _html(pages.model_page(board, _urls(request, _run_ids(request, dags)), datetime.now(UTC),
                                      may=_may(request, viewer, model), **kw), status)

    @app.get("/", response_class=HTMLResponse)
    def index(request: Request, viewer: GetUserDep) -> HTMLResponse:
        from pipelines.board import dataset_board, model_board

        specs, contracts, lay, now = load_specs(), load_datasets(), Layout.from_env(), datetime.now(UTC)
        client = _client()
        models = [model_board(s, lay, client, now) for n, s in sorted(specs.items())
                  if _allowed(request, viewer, f"train__{n}")]
        datasets = [dataset_board(c, lay, [m.name for m in readers(n, specs)]) for n, c in sorted(contracts.items())
                    if _allowed(request, viewer, f"ingest_validate__{n}")]
        return _html(pages.index_page(models, datasets, _urls(request), now))

    @app.get("/models/{model}", response_class=HTMLResponse, dependencies=[Depends(model_access("train"))])
    def model_view(request: Request, model: str, viewer: GetUserDep, triggered: str = "",
                   dag: str = "") -> HTMLResponse:
        message, message_link = "", None
        if triggered and dag in (f"rollback__{model}", f"override__{model}"):
            message = f"Triggered {dag} run {triggered} as you; the page shows the move once the run has made it."
            message_link = (_urls(request).dag_run(dag, triggered), "Open the run in Airflow")
        return _model_html(request, model, viewer, message=message, message_link=message_link)

    def _trigger(request: Request, model: str, viewer: Any, dag_id: str, conf: dict[str, str]) -> Response:
        try:
            run = _api(request, "POST", f"/api/v2/dags/{quote(dag_id)}/dagRuns",
                       {"logical_date": None, "conf": conf, "note": f"from the Flywheel page: {conf['reason']}"})
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            return _model_html(request, model, viewer, exc.code,
                               error=f"Airflow refused to trigger {dag_id} ({exc.code}): {detail}")
        except (urllib.error.URLError, OSError) as exc:
            return _model_html(request, model, viewer, 502, error=f"Airflow's API did not answer: {exc}")
        base = request.scope.get("root_path", PREFIX) or PREFIX
        target = f"{base}/models/{quote(model)}?triggered={quote(run['dag_run_id'])}&dag={quote(dag_id)}"
        return RedirectResponse(target, status_code=303)

    @app.post("/models/{model}/rollback", dependencies=[Depends(model_access("rollback", "POST")),
                                                        Depends(same_origin)])
    def rollback(request: Request, model: str, viewer: GetUserDep, reason: Annotated[str, Form()] = "") -> Response:
        if not reason.strip():
            return _model_html(request, model, viewer, 400, error="A reason is required to roll back: it goes into "
                                                                  "the audit history. Nothing was triggered.")
        return _trigger(request, model, viewer, f"rollback__{model}", {"reason": reason.strip()})

    @app.post("/models/{model}/override", dependencies=[Depends(model_access("override", "POST")),
                                                        Depends(same_origin)])
    def override(request: Request, model: str, viewer: GetUserDep, reason: Annotated[str, Form()] = "",
                 version: Annotated[str, Form()] = "", action: Annotated[str, Form()] = "promote") -> Response:
        if not reason.strip():
            return _model_html(request, model, viewer, 400, error="A reason is required to override the gate: it "
                                                                  "goes into the audit history. Nothing was triggered.")
        if action not in ("promote", "reject") or not version.strip():
            return _model_html(request, model, viewer, 400, error="Choose a version and an action (promote or "
                                                                  "reject). Nothing was triggered.")
        return _trigger(request, model, viewer, f"override__{model}",
                        {"version": version.strip(), "action": action, "reason": reason.strip()})

    @app.get("/datasets/{dataset}", response_class=HTMLResponse, dependencies=[Depends(dataset_access)])
    def dataset_view(request: Request, dataset: str) -> HTMLResponse:
        from pipelines.board import dataset_board

        specs = load_specs()
        board = dataset_board(_contract(dataset), Layout.from_env(), [m.name for m in readers(dataset, specs)])
        return _html(pages.dataset_page(board, _urls(request)))

    @app.get("/dags/{dag_id}", dependencies=[Depends(requires_access_dag("GET"))])
    def dag_tab(request: Request, dag_id: str) -> Response:
        """The DAG tab: the page of the DAG's model (`<stage>__<model>`) or dataset (`ingest_validate__<d>`)."""
        base = request.scope.get("root_path", PREFIX) or PREFIX
        stage, _, name = dag_id.partition("__")
        if stage == "ingest_validate" and name in load_datasets():
            return RedirectResponse(f"{base}/datasets/{quote(name)}", status_code=302)
        if name in load_specs():
            return RedirectResponse(f"{base}/models/{quote(name)}", status_code=302)
        return RedirectResponse(f"{base}/", status_code=302)

    @app.get("/runbooks/", response_class=HTMLResponse)
    def runbooks_index(request: Request) -> HTMLResponse:
        from pipelines import runbooks

        base = _urls(request).page("runbooks")
        books = [(b.name, b.heading) for b in runbooks.list_runbooks().values()]
        return _html(pages.runbooks_page(books, runbooks.render_index(link_base=base), _urls(request)))

    @app.get("/runbooks/{name}", response_class=HTMLResponse)
    def runbook_view(request: Request, name: str) -> HTMLResponse:
        from pipelines import runbooks

        # the name is looked up in the folder's listing, never joined into a path
        base = _urls(request).page("runbooks")
        book = runbooks.find_runbook(name)
        if book is None:
            books = [(b.name, b.heading) for b in runbooks.list_runbooks().values()]
            return _html(pages.runbooks_page(books, "", _urls(request), missing=name), 404)
        return _html(pages.runbook_page(book.heading, runbooks.render_runbook(book.name, link_base=base),
                                        _urls(request)))

    @app.get("/files/{area}/{owner}/{path:path}", dependencies=[Depends(file_access)])
    def serve_file(area: str, owner: str, path: str) -> Response:
        import mimetypes

        from pipelines import storage

        headers = {"Content-Security-Policy": FILE_CSP, "X-Content-Type-Options": "nosniff"}
        ref = board_files.FileRef(area, owner, path)
        if area == "cards":
            tmp = Path(tempfile.mkdtemp(prefix="flywheel-card-"))
            try:
                card = board_files.card_artifact(_client(), _spec(owner), path, tmp)
                if card is None:
                    raise HTTPException(404, "not found")
                return Response(card.read_bytes(), media_type="text/html", headers=headers)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        loc = board_files.resolve_file(Layout.from_env(), ref, load_specs(), load_datasets())
        if loc is None:
            raise HTTPException(404, "not found")
        media = mimetypes.guess_type(path)[0] or "application/octet-stream"
        return Response(storage.read_bytes(loc), media_type=media, headers=headers)

    return app


class _LazyApp:
    """An ASGI app that builds the real one at its first call (in the API server, where FastAPI and Airflow's
    security module are already imported), so that loading the plugin costs other processes nothing."""

    def __init__(self) -> None:
        self._app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self._app is None:
            self._app = build_app()
        await self._app(scope, receive, send)


class FlywheelUI(AirflowPlugin):
    name = "flywheel_ui"
    fastapi_apps = [{"app": _LazyApp(), "url_prefix": PREFIX, "name": "Flywheel models and datasets"}]
    external_views = [
        {"name": "Flywheel", "href": f"{PREFIX}/", "url_route": "flywheel", "destination": "nav",
         "nav_top_level": True},
        {"name": "Flywheel", "href": f"{PREFIX}/dags/{{DAG_ID}}", "url_route": "flywheel-dag", "destination": "dag"},
    ]
