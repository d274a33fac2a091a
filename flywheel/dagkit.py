"""Shared wiring for Flywheel's DAGs: Assets (declared once), default args, context helpers.

Nothing heavy is imported here: DAG files parse in milliseconds. The work lives in pipelines/.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset

from pipelines.spec import REPO_ROOT, DatasetContract, ModelSpec, load_datasets, load_specs

if TYPE_CHECKING:
    from pipelines.mail import Email, Pages

log = logging.getLogger(__name__)

SMTP_CONN_ID = "flywheel_smtp"
FEAST_POOL = "feast_online_store"   # one writer at a time into the embedded SQLite online store
# the first interval any DAG can run: tasks are not created for a run before their start_date (its run would
# "succeed" with nothing done), and a backfill may land files of any past interval
START_DATE = datetime(1970, 1, 1)


FEATURE_REPO = REPO_ROOT / "feature_repo"


def specs() -> dict[str, ModelSpec]:
    return load_specs()


def datasets() -> dict[str, DatasetContract]:
    return load_datasets()


def views() -> dict[str, dict[str, Any]]:
    """The computed feature views (name -> dataset, join keys, features, lookback), without importing Feast."""
    from pipelines.features.declarations import view_index

    return dict(view_index(FEATURE_REPO)["views"])


def model_views(spec: ModelSpec) -> list[str]:
    """The views of the model's FeatureService (declared in feature_repo/)."""
    from pipelines.features.declarations import view_index

    services = view_index(FEATURE_REPO)["services"]
    if spec.feature_service not in services:
        raise ValueError(f"{spec.path}: features.service {spec.feature_service!r} is not a FeatureService of "
                         f"{FEATURE_REPO / 'definitions.py'} ({sorted(services)}).")
    return list(services[spec.feature_service])


def catch_up_features(spec: ModelSpec) -> list[str]:
    """Before a model reads its features: rebuild every table of its views that is missing or older than a
    validated batch it reads (an asset event Airflow did not deliver, a features run still queued), so
    training and scoring never read a stale snapshot. Returns "view/key" of what was rebuilt."""
    from pipelines.features import catch_up, load_repo
    from pipelines.layout import Layout

    lay, repo, contracts = Layout.from_env(), load_repo(FEATURE_REPO), datasets()
    rebuilt = []
    for name in model_views(spec):
        view = repo.view(name)
        for table in catch_up(view, lay.validated(view.dataset), lay.features(), contracts[view.dataset].cadence):
            rebuilt.append(f"{name}/{table.interval_key}")
    if rebuilt:
        log.warning("%s: rebuilt %d stale feature tables before reading them: %s", spec.name, len(rebuilt),
                    ", ".join(rebuilt))
    return rebuilt


# --- Assets: the loop as an asset graph. One function per concept, used by producer and consumer.
LANDING_POLL_ENV = "FLYWHEEL_LANDING_POLL_SECONDS"   # how often the landing watcher looks (default 5 s)


def landed_asset(dataset: str) -> Asset:
    """A file landed in the dataset's landing area (or a new version of one), seen by the landing watcher.
    extra: {"from_trigger": true, "payload": {dataset, files: [{file, interval_start, interval_end, key, sha256}]}}."""
    import os

    from airflow.sdk import AssetWatcher

    from flywheel.triggers import LandingTrigger

    poll = float(os.environ.get(LANDING_POLL_ENV) or 5)
    return Asset(name=f"{dataset}__landed", uri=f"x-flywheel://datasets/{dataset}/landed", group="flywheel",
                 watchers=[AssetWatcher(name=f"{dataset}__landing_watch", trigger=LandingTrigger(dataset, poll))])


def validated_asset(dataset: str) -> Asset:
    """A batch of `dataset` passed its gate. extra: interval_start, interval_end, key, clean_path, rows_*."""
    return Asset(name=f"{dataset}__validated", uri=f"x-flywheel://datasets/{dataset}/validated", group="flywheel")


def features_asset(view: str) -> Asset:
    """A feature view's table for an interval was built and materialized. extra: interval_start/end, key, ..."""
    return Asset(name=f"{view}__features", uri=f"x-flywheel://features/{view}", group="flywheel")


def scores_asset(model: str) -> Asset:
    return Asset(name=f"{model}__scores", uri=f"x-flywheel://{model}/scores", group="flywheel")


def retrain_asset(model: str) -> Asset:
    return Asset(name=f"{model}__retrain_request", uri=f"x-flywheel://{model}/retrain", group="flywheel")


def champion_event(spec: ModelSpec, event: str, result: dict[str, Any], reason: str,
                   context: dict[str, Any]) -> dict[str, Any]:
    """The `extra` of every `<model>__champion` event, the same keys whatever moved the alias:
    event (promote | rollback | override), model, registered_model, champion (the version now serving,
    None when an override took it away), previous (the version it replaced), reason, actor, run_id,
    plus the move's own details (`rolled_back` for a rollback; `action`, `version` for an override)."""
    previous = result.get("previous", result.get("rolled_back"))
    return {**result, "event": event, "model": spec.name, "registered_model": spec.registered_model_name,
            "champion": None if result.get("champion") is None else str(result["champion"]),
            "previous": None if previous is None else str(previous), "reason": reason,
            "actor": actor(context), "run_id": context["dag_run"].run_id}


def champion_asset(model: str) -> Asset:
    return Asset(name=f"{model}__champion", uri=f"x-flywheel://{model}/champion", group="flywheel")


def default_args(spec: ModelSpec) -> dict[str, Any]:
    return {
        "owner": spec.owners[0].split("@")[0],
        "email": list(spec.owners),      # told when a task fails after its retries (not on each retry)
        "email_on_retry": False,
        "retries": 1,
        "retry_delay": timedelta(seconds=10),
    }


def dag_kwargs(spec: ModelSpec, dag_prefix: str, stage: str) -> dict[str, Any]:
    """What every Flywheel DAG shares: id `<stage>__<model>`, one run at a time, no catch-up, owners."""
    return {"dag_id": f"{dag_prefix}__{spec.name}", "start_date": START_DATE, "catchup": False,
            "max_active_runs": 1, "default_args": default_args(spec),
            "tags": tags(spec, stage) + [f"dataset:{spec.dataset.name}"]}


def data_dag_kwargs(dag_id: str, owners: tuple[str, ...] | list[str], stage: str, labels: list[str]) -> dict[str, Any]:
    """The same for the data DAGs of a dataset or a feature view (owners: the dataset's)."""
    return {"dag_id": dag_id, "start_date": START_DATE, "catchup": False, "max_active_runs": 1,
            "default_args": {"owner": owners[0].split("@")[0], "email": list(owners), "email_on_retry": False,
                             "retries": 1, "retry_delay": timedelta(seconds=10)},
            "tags": ["flywheel", f"stage:{stage}", *labels]}


def tags(spec: ModelSpec, stage: str) -> list[str]:
    return ["flywheel", f"model:{spec.name}", f"stage:{stage}", *spec.tags]


def doc(spec: ModelSpec, stage: str, what: str) -> str:
    return (f"### {stage} · `{spec.name}`\n\n{what}\n\n*Model:* {spec.description}  \n"
            f"*Owners:* {', '.join(spec.owners)}  \n*Spec:* `{spec.path.name}`")


def interval_events(context: dict[str, Any], asset: Asset) -> list[dict[str, Any]]:
    """The extras of the asset events that triggered this run, oldest first, one per interval."""
    events = context["triggering_asset_events"][asset]
    seen: dict[str, dict[str, Any]] = {}
    for ev in events:
        extra = dict(ev.extra or {})
        if "interval_start" in extra:
            seen[extra["interval_start"]] = extra
    return [seen[k] for k in sorted(seen)]


def parse_ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def next_tick(cadence: str, after: datetime) -> datetime:
    """The cadence's first tick strictly after `after` (UTC): the end of the interval that starts there."""
    from datetime import UTC

    from croniter import croniter

    return croniter(cadence, after).get_next(datetime).astimezone(UTC)


def run_link(context: dict[str, Any]) -> str:
    """The Airflow UI page of this DAG run."""
    return str(context["ti"].log_url).split("/tasks/")[0]


def send_email(mail: Email) -> None:
    """Deliver `mail` through Airflow's SMTP provider and the `flywheel_smtp` connection.

    The hook's `send_email_smtp` builds multipart/mixed with every file as application/octet-stream and
    cannot show a picture inline; so the message is built by pipelines.mail.build_message (text and HTML
    alternatives, inline PNGs by Content-ID, attachments with their own content types, remote locations read
    from the store) and sent on the client the hook opened and logged in (SSL/STARTTLS, auth, timeout and
    retry limit from the connection), retried like the hook retries its own sends.
    """
    from airflow.providers.smtp.hooks.smtp import SmtpHook

    from pipelines.mail import build_message

    with SmtpHook(smtp_conn_id=SMTP_CONN_ID) as hook:
        sender = hook.from_email
        if not sender:
            raise ValueError(f"the {SMTP_CONN_ID} connection has no from_email (its extra): set it to the address "
                             "Flywheel sends from.")
        msg = build_message(mail, sender)
        client = hook._smtp_client   # the hook's logged-in smtplib client: it has no public accessor
        for attempt in range(hook.smtp_retry_limit + 1):
            try:
                client.send_message(msg, from_addr=sender, to_addrs=list(mail.to))
                break
            except Exception:
                if attempt == hook.smtp_retry_limit:
                    raise
    log.info("email sent to %s: %s", ", ".join(mail.to), mail.subject)


def send_or_queue(mail: Email, *, expire_hours: float = 72.0, on_sent: dict[str, Any] | None = None) -> dict[str, Any]:
    """Send now through `send_email`; when the server does not take it, keep it in the outbox, where the
    `deliver_outbox` DAG retries it until it is delivered or expires (pipelines/outbox.py). Never raises for
    a delivery failure: returns {"status": "sent"} or {"status": "pending", "outbox_id", "error", "expires_at"}."""
    from datetime import UTC

    from pipelines.layout import Layout
    from pipelines.outbox import send_or_queue as deliver

    return deliver(send_email, Layout.from_env().outbox(), mail, now=datetime.now(UTC), expire_hours=expire_hours,
                   on_sent=on_sent)


def flywheel_pages() -> Pages:
    """Flywheel's pages as emails link them: Airflow's API base URL (AIRFLOW__API__BASE_URL, set by
    flywheel/runtime.py) and the folders whose files the Flywheel page serves (plugins/flywheel_ui.py,
    pipelines/board/files.py): every model's reports, every dataset's validation results and Data Docs."""
    import os

    from pipelines.layout import Layout
    from pipelines.mail import Pages

    lay = Layout.from_env()
    folders = [(lay.reports(m), f"reports/{m}") for m in specs()]
    for d in datasets():
        folders += [(lay.validation_reports(d), f"validation/{d}"), (str(lay.data_docs(d) / "site"), f"docs/{d}")]
    return Pages(base_url=os.environ.get("AIRFLOW__API__BASE_URL") or None, folders=tuple(folders))


def run_key(run_id: str) -> str:
    """A DAG run id as a file-name- and tag-safe key (outputs and audit entries are keyed by it)."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in run_id)


def actor(context: dict[str, Any]) -> str:
    """Who/what acts in this run, for audit records: the triggering user (or the run type) and the run."""
    dag_run = context["dag_run"]
    run_type = getattr(dag_run, "run_type", None)
    who = getattr(dag_run, "triggering_user_name", None) or str(getattr(run_type, "value", run_type) or "airflow")
    return f"{who} via {dag_run.dag_id} run {dag_run.run_id}"


def required_text(params: dict[str, Any], name: str) -> str:
    """A required, non-empty text param (the Param schema says so too; this also catches blanks)."""
    value = str(params.get(name) or "").strip()
    if not value:
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(f"param `{name}` is required and must not be empty: trigger again with a {name}.")
    return value
