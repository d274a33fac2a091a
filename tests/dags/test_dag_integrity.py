"""DAG integrity and structure: what the scheduler and a user of the Airflow UI would see."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.dags

REPO = Path(__file__).resolve().parents[2]
DAG_FILES = sorted((REPO / "dags").rglob("*.py"))
HEAVY = ("pandas", "numpy", "xgboost", "mlflow", "feast", "evidently", "great_expectations", "sklearn", "pyarrow")
MODEL_STAGES = ("train", "score", "monitor", "rollback", "override")


@pytest.fixture(scope="module", autouse=True)
def declarations_index():
    """What `flywheel init` leaves behind: the views' parse-time index (DAG files read it without Feast)."""
    from pipelines.features import view_index

    return view_index(REPO / "feature_repo")


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


@pytest.fixture(scope="module")
def specs():
    from pipelines.spec import load_specs

    return load_specs()


@pytest.fixture(scope="module")
def datasets():
    from pipelines.spec import load_datasets

    return load_datasets()


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}


def test_every_stage_exists_for_every_spec_dataset_and_view(dagbag, specs, datasets, declarations_index):
    assert len(specs) >= 2, "ship at least two specs so nothing is specific to one model"
    expected = {f"{stage}__{name}" for stage in MODEL_STAGES for name in specs}
    expected |= {f"ingest_validate__{d}" for d in datasets} | {f"features__{v}" for v in declarations_index["views"]}
    assert expected <= set(dagbag.dag_ids)
    # one gate per dataset and one builder per view, never one per model
    assert not {f"{stage}__{m}" for stage in ("ingest_validate", "features") for m in specs} & set(dagbag.dag_ids)


def test_owners_retries_tags(dagbag, specs, datasets, declarations_index):
    # tasks that must not retry: a blocked batch fails at once (a retry would re-send the email), and the
    # outbox is tried again by its next scheduled run anyway
    no_retry = {("gate_batch",), ("deliver_pending",)}
    for dag_id, dag in dagbag.dags.items():
        stage, _, subject = dag_id.partition("__")
        assert "flywheel" in dag.tags and any(t.startswith("stage:") for t in dag.tags), dag_id
        assert dag.doc_md, f"{dag_id} has no documentation for the UI"
        for t in dag.tasks:
            assert t.owner and t.owner != "airflow", f"{dag_id}.{t.task_id} has no owner"
            if (t.task_id,) not in no_retry:
                assert t.retries >= 1, f"{dag_id}.{t.task_id} has no retries"
        if stage in ("example", "deliver_outbox"):
            continue
        if stage in ("ingest_validate", "land"):
            owners, tag = datasets[subject].owners, f"dataset:{subject}"
        elif stage == "features":
            owners = datasets[declarations_index["views"][subject]["dataset"]].owners
            tag = f"view:{subject}"
        else:
            owners, tag = specs[subject].owners, f"model:{subject}"
        assert tag in dag.tags, (dag_id, dag.tags)
        assert set(dag.default_args["email"]) == set(owners), dag_id


def test_gate_batch_fails_closed_without_retry(dagbag, datasets):
    # a blocked batch must fail at once: a retry would re-send the email and delay the verdict
    for name in datasets:
        assert dagbag.dags[f"ingest_validate__{name}"].get_task("gate_batch").retries == 0


def test_task_chains(dagbag, specs):
    def edges(dag_id):
        dag = dagbag.dags[dag_id]
        return {(t.task_id, d) for t in dag.tasks for d in t.downstream_task_ids}

    assert edges("ingest_validate__transactions") == {("validate_batch", "gate_batch")}
    assert edges("features__customer_stats") == {("build_feature_table", "materialize_features")}
    assert edges("land__transactions") == {("plan_ingestion", "start_ingestion")}
    # landing is enough: the land DAG is scheduled on an Asset whose watcher looks at the landing area
    cond = dagbag.dags["land__transactions"].timetable.asset_condition
    (landed,) = cond.objects
    assert landed.uri == "x-flywheel://datasets/transactions/landed" and landed.watchers
    start = dagbag.dags["land__transactions"].get_task("start_ingestion")
    assert start.partial_kwargs["trigger_dag_id"] == "ingest_validate__transactions"
    assert start.partial_kwargs["reset_dag_run"] is True
    assert edges("train__fraud") == {("build_training_set", "train_challenger"), ("train_challenger", "evaluate_gate"),
                                     ("evaluate_gate", "promote_champion"), ("evaluate_gate", "write_model_card"),
                                     ("promote_champion", "write_model_card")}
    # the guardrail runs beside the drift check (a drift failure never stops it), only for a model that declares it;
    # so does the champion sentinel (every model)
    assert edges("monitor__fraud") == {("watch_champion", "announce_restore"), ("detect_drift", "email_report"),
                                       ("detect_drift", "request_retrain"), ("guard_champion", "email_guard"),
                                       ("guard_champion", "announce_rollback")}
    # only tasks that skip unless there is something to announce have outlets: a task that succeeds emits an event
    monitor = dagbag.dags["monitor__fraud"]
    assert {t.task_id for t in monitor.tasks if t.outlets} == {"announce_restore", "announce_rollback",
                                                               "request_retrain"}
    assert not [m for m, spec in specs.items() if spec.guardrail is None
                and "guard_champion" in dagbag.dags[f"monitor__{m}"].task_ids]


def test_assets_close_the_loop(dagbag, specs, declarations_index):
    """ingest (per dataset) → features (per view) → score (per model, once ALL its views are built) → monitor →
    train, each hop an Asset (the UI's asset graph)."""
    def outlets(dag_id):
        return {a.uri for t in dagbag.dags[dag_id].tasks for a in t.outlets}

    def scheduled_on(dag_id):
        cond = getattr(dagbag.dags[dag_id].timetable, "asset_condition", None)
        return {a.uri for a in getattr(cond, "objects", ())}

    for m, spec in specs.items():
        views = declarations_index["services"][spec.feature_service]
        assert views
        for v in views:
            dataset = declarations_index["views"][v]["dataset"]
            assert outlets(f"ingest_validate__{dataset}") & scheduled_on(f"features__{v}")
        # the score DAG waits for every view of the model's FeatureService (an AND of their Assets)
        assert scheduled_on(f"score__{m}") == set().union(*(outlets(f"features__{v}") for v in views))
        for producer, consumer in [("score", "monitor"), ("monitor", "train")]:
            shared = outlets(f"{producer}__{m}") & scheduled_on(f"{consumer}__{m}")
            assert shared, f"{producer}__{m} does not trigger {consumer}__{m} through an Asset"


def test_the_example_reacts_to_every_models_champion_events(dagbag, specs):
    """The documented extension point parses and subscribes to each `<model>__champion` Asset (any of them)."""
    dag = dagbag.dags["example__on_new_champion"]
    cond = dag.timetable.asset_condition
    assert type(cond).__name__ == "AssetAny"
    assert {a.uri for a in cond.objects} == {f"x-flywheel://{m}/champion" for m in specs}
    champion_producers = {t.dag_id for d in dagbag.dags.values() for t in d.tasks
                          if any(a.uri.endswith("/champion") for a in t.outlets)}
    # every monitor: the sentinel's restore (announce_restore), and the guardrail's rollback where declared
    assert champion_producers == {f"{stage}__{m}" for m in specs for stage in ("train", "rollback", "override",
                                                                              "monitor")}


def test_train_dag_params_let_an_engineer_experiment(dagbag):
    params = dagbag.dags["train__fraud"].params
    assert {"as_of", "reason", "params"} <= set(params.keys())


@pytest.fixture(scope="module")
def parse_costs() -> dict[str, dict]:
    """Each DAG file imported in turn by one fresh interpreter that has Airflow loaded (as the DAG processor has):
    the CPU seconds of each import and the heavy libraries it pulled in (a library a file imports first is
    charged to that file; one interpreter instead of one per file saves an Airflow import per file)."""
    code = f"""
import sys, time, json, importlib.util
sys.path.insert(0, {str(REPO / 'dags')!r})
import airflow.sdk, airflow.timetables.interval, airflow.exceptions  # what the DAG processor already has
out = {{}}
for i, path in enumerate({[str(p) for p in DAG_FILES]!r}):
    before = set(sys.modules)
    t = time.process_time()
    spec = importlib.util.spec_from_file_location(f"dagfile{{i}}", path)
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    dt = time.process_time() - t
    heavy = sorted({{m.split('.')[0] for m in set(sys.modules) - before}} & set({list(HEAVY)!r}))
    out[path] = {{"seconds": dt, "heavy": heavy}}
print(json.dumps(out))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_file_parses_fast_and_light(path, parse_costs):
    """Each DAG file imports in < 2 s of CPU once Airflow is loaded, and pulls in no heavy library. CPU time, not
    wall time: the suite's demo runs play in the background, and a busy machine must not fail a light file."""
    res = parse_costs[str(path)]
    assert res["heavy"] == [], f"{path.name} imports {res['heavy']} at parse time"
    assert res["seconds"] < 2.0, f"{path.name} took {res['seconds']:.2f} CPU-s to import"
