"""The loop at scale: a million card transactions a day, a month of history, through the real scheduler.

    .venv/bin/python bench/scale.py [--rows-per-day 1000000] [--history-days 35] [--shifted-days 1]
                                    [--topology embedded|services|both] [--json out.json] [--keep]

What it does, per topology (only environment variables differ, as in production):

1. Declarations for a daily feed, written into the run's own folder (FLYWHEEL_DATASETS_DIR / FLYWHEEL_MODELS_DIR):
   the demo's `transactions` contract with a daily cadence and a row ceiling for a million-row day, and the
   `fraud` spec with a daily drift window and no retrain cooldown (the shifted days must fire the retrain Asset).
2. `flywheel init` + `up` in a temporary FLYWHEEL_HOME, on free ports (embedded: SQLite + LocalExecutor;
   services: Celery on PostgreSQL/Redis, MLflow on PostgreSQL, data and artifacts on the S3-API server).
3. **In process** (the "work" figures): the history days are generated, validated and turned into feature tables by
   the same `pipelines/` functions the tasks call, each stage in a process forked from this one after the heavy
   libraries were imported (as a LocalExecutor task is forked from the preloaded scheduler), so its wall time, CPU
   and peak memory (VmHWM) are the stage's, in the topology's own stores. Then, on the whole history: the training
   set, the fit and registration, the gate, scoring and the drift check of the last history day (MLflow of these
   in-process stages: a SQLite file of this run, so nothing reaches the stack's registry).
4. **Through the scheduler**: `train__fraud` is triggered on the history (the first champion), then one normal day
   and `--shifted-days` shifted days are landed in the landing folder, one at a time. The landing watcher starts
   ingestion; features, scoring and monitoring follow by Assets; the shifted days' drift fires the retrain Asset.
   Every task process is sampled (`/proc/<pid>/status` VmHWM of the `airflow worker -- <ti id>` processes), so each
   task's peak memory is known; the Airflow API gives each task's duration.

It prints one table per topology: per stage, the in-process seconds (per day, mean of the history days for the
daily stages) and the scheduler's task seconds for the same work, both as rows/s, their ratio (orchestration
overhead, per row), each side's peak memory, and the end-to-end latency of a landed day (file written -> drift
verdict) against the goals of issue 16.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import multiprocessing
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from demo_stages import PRELOAD, machine  # noqa: E402  (the same preload list and machine line)

MODEL = "fraud"
DATASET = "transactions"
DAILY = "0 0 * * *"
WORKER_TITLE = re.compile(r"airflow worker -- ([0-9a-f-]{36})")


# ------------------------------------------------------------------------------------------------
# declarations of a daily million-row feed


def write_declarations(folder: Path, rows_per_day: int, sampling: float | None) -> tuple[Path, Path]:
    """The demo's contract and spec, changed for a daily feed of `rows_per_day` rows; returns (datasets, models)."""
    import yaml

    datasets, models = folder / "datasets", folder / "models"
    datasets.mkdir(parents=True, exist_ok=True)
    models.mkdir(parents=True, exist_ok=True)
    contract = yaml.safe_load((REPO / "datasets" / f"{DATASET}.yaml").read_text())
    contract["cadence"] = DAILY
    contract["description"] = f"{contract['description']} (bench/scale.py: daily, {rows_per_day:,} rows a day)"
    contract["validation"]["max_rows"] = int(rows_per_day * 3)
    (datasets / f"{DATASET}.yaml").write_text(yaml.safe_dump(contract, sort_keys=False))
    for other in (REPO / "datasets").glob("*.yaml"):   # the feature repo declares views of every example dataset
        if other.stem != DATASET:
            shutil.copy(other, datasets / other.name)
    spec = yaml.safe_load((REPO / "models" / f"{MODEL}.yaml").read_text())
    spec.pop("golden", None)          # the golden sets are the demo's weekly world, frozen by hash
    spec["drift"]["window_days"] = 1  # a day's scores against the reference
    spec["drift"]["cooldown_days"] = 0
    if sampling is not None:
        spec["training"]["sampling"] = {"negatives": sampling}
    (models / f"{MODEL}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return datasets, models


# ------------------------------------------------------------------------------------------------
# in-process stages: each forked from this (preloaded) process


def _vm(field: str, pid: int | str = "self") -> float:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def forked(fn: Callable[[], Any], log_path: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run `fn` in a child forked from this process: its result, wall and CPU seconds, peak RSS (VmHWM) and the RSS
    it started with (the preloaded libraries, shared with this process)."""
    ctx = multiprocessing.get_context("fork")
    queue = ctx.SimpleQueue()

    def child() -> None:
        os.environ.update(env or {})
        for k in [k for k, v in (env or {}).items() if v == ""]:
            os.environ.pop(k, None)
        start_mb = _vm("VmRSS")
        t, c = time.perf_counter(), time.process_time()
        with open(log_path, "a") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            logging.basicConfig(stream=log, level=logging.INFO, force=True)
            try:
                out, err = fn(), None
            except BaseException:  # noqa: BLE001 - reported to the parent
                out, err = None, traceback.format_exc()
        queue.put({"out": out, "err": err, "wall": time.perf_counter() - t, "cpu": time.process_time() - c,
                   "peak_mb": _vm("VmHWM"), "start_mb": start_mb})

    p = ctx.Process(target=child)
    p.start()
    res = queue.get()
    p.join()
    if res["err"]:
        raise RuntimeError(f"in-process stage failed (log: {log_path}):\n{res['err']}")
    return res


class Stages:
    """In-process figures: stage -> list of {wall, cpu, peak_mb, rows}."""

    def __init__(self, log_path: Path, progress: Callable[[str], None]) -> None:
        self.figs: dict[str, list[dict[str, Any]]] = {}
        self.log_path, self.progress = log_path, progress

    def run(self, stage: str, fn: Callable[[], Any], rows: Callable[[Any], int],
            env: dict[str, str] | None = None) -> Any:
        res = forked(fn, self.log_path, env)
        fig = {"wall": res["wall"], "cpu": res["cpu"], "peak_mb": res["peak_mb"], "start_mb": res["start_mb"],
               "rows": int(rows(res["out"]))}
        self.figs.setdefault(stage, []).append(fig)
        self.progress(f"in process: {stage}: {fig['wall']:.1f}s, {fig['rows']:,} rows, peak {fig['peak_mb']:.0f} MB")
        return res["out"]

    def mean(self, stage: str) -> dict[str, float] | None:
        figs = self.figs.get(stage)
        if not figs:
            return None
        n = len(figs)
        return {"wall": sum(f["wall"] for f in figs) / n, "cpu": sum(f["cpu"] for f in figs) / n,
                "rows": sum(f["rows"] for f in figs) / n, "peak_mb": max(f["peak_mb"] for f in figs),
                "runs": n, "peak_first_mb": figs[0]["peak_mb"], "peak_last_mb": figs[-1]["peak_mb"]}


def in_process(lay: Any, sc: Any, days: int, rows_per_day: int, stages: Stages, scratch: Path) -> dict[str, Any]:
    """History days 0..days-1: land (to a scratch folder the landing watcher does not see), validate, build the
    service's feature tables; then materialize, train, gate, promote, score and check drift on the last day."""
    from pipelines import features, gate, model, score, storage, training, validate
    from pipelines.layout import interval_key
    from pipelines.monitor import check_drift
    from pipelines.spec import load_specs

    spec = load_specs()[MODEL]
    repo = REPO / "feature_repo"
    declared = features.load_repo(repo)
    views = list(declared.service_views(spec.feature_service))
    tables = (lay.features(), lay.feature_cache())
    land = scratch / "landing"
    land.mkdir(parents=True, exist_ok=True)
    for day in range(days):
        start = sc.start + timedelta(days=day)
        end, key = start + timedelta(days=1), interval_key(start)
        path = land / spec.dataset.file_pattern.format(start=start)
        stages.run("land (generate + write)", lambda day=day, path=path: _land(sc, day, "normal", rows_per_day, path),
                   rows=lambda n: n)
        stages.run("validate_batch", lambda path=path, start=start, end=end: validate.validate_batch(
            path, spec.dataset, start, end, lay.validated(DATASET), lay.quarantine(DATASET),
            lay.validation_reports(DATASET), docs_dir=scratch / "data_docs", readers=[spec]).rows_landed,
            rows=lambda n: n)   # the task's work: its Data Docs too (into a scratch folder here)
        storage.delete(str(path))
    # the history's feature tables as a backfill builds them: contiguous days in passes of at most a lookback
    intervals = [(sc.start + timedelta(days=d), sc.start + timedelta(days=d + 1),
                  interval_key(sc.start + timedelta(days=d))) for d in range(days)]
    for v in views:
        stages.run(f"history: build_view_tables {v}", lambda v=v: sum(t.rows for t in features.build_view_tables(
            declared.views[v], lay.validated(DATASET), lay.features(), intervals)), rows=lambda n: n)
    start = sc.start + timedelta(days=days - 1)
    end, key = start + timedelta(days=1), interval_key(start)
    # one day alone, as the daily features task builds it, over its full lookback; the same rows as the backfill's
    for v in views:
        before = storage.read_parquet(storage.join(lay.features(), v, f"{key}.parquet"))
        stages.run(f"build_view_table {v}", lambda v=v: features.build_view_table(
            declared.views[v], lay.validated(DATASET), lay.features(), start, end, key).rows, rows=lambda n: n)
        after = storage.read_parquet(storage.join(lay.features(), v, f"{key}.parquet"))
        if len(before) != len(after) or not before.iloc[:, :2].equals(after.iloc[:, :2]):   # entity, time
            raise RuntimeError(f"{v}: the day built alone differs from the backfill's ({len(after)} vs {len(before)})")
    stages.run("apply_feature_repo", lambda: len(features.apply_feature_repo(repo)), rows=lambda n: 0)
    for v in views:
        stages.run(f"materialize {v}", lambda v=v: features.materialize(repo, [v], start, end, tables=tables) and
                   _online_rows(lay, v, start), rows=lambda n: n)
    # the whole history: a training set as of the end of the last day, then fit + register, gate, promote
    mlflow_env = {"MLFLOW_TRACKING_URI": f"sqlite:///{scratch / 'mlflow.db'}", "MLFLOW_TRACKING_USERNAME": "",
                  "MLFLOW_TRACKING_PASSWORD": "",
                  "FLYWHEEL_MLFLOW_ARTIFACT_ROOT": (scratch / "mlflow-artifacts").as_uri()}
    out = scratch / "training"
    tset = stages.run("build_training_set", lambda: training.build_training_set(
        spec, lay.validated(DATASET), repo, end, out, tables).to_dict(),
        rows=lambda t: t["train_rows"] + t["holdout_rows"], env=mlflow_env)
    feats = training.feature_columns(spec, repo)
    trained = stages.run("train_and_register", lambda: model.train_and_register(
        spec, tset, feats, {}, "bench", out, "bench/scale.py").to_dict(), rows=lambda _: tset["train_rows"],
        env=mlflow_env)
    decision = stages.run("evaluate_gate", lambda: gate.evaluate_gate(
        spec, trained["version"], tset["holdout_path"], feats, out, "bench", "bench").to_dict(),
        rows=lambda _: tset["holdout_rows"], env=mlflow_env)
    stages.run("promote", lambda: gate.promote(spec, trained["version"], decision["reason"], end, actor="bench",
                                               run_key="bench") and 0, rows=lambda _: 0, env=mlflow_env)
    # the retrain's gate has a champion to beat: the paired bootstrap on the full holdout. A second version of the
    # same run (same model, no refit) judged against the champion just promoted measures that path in-process
    second = stages.run("register (same run, version 2)", lambda: _second_version(spec, trained["version"]),
                        rows=lambda _: 0, env=mlflow_env)
    stages.run("evaluate_gate vs champion", lambda: gate.evaluate_gate(
        spec, second, tset["holdout_path"], feats, out, "bench-2", "bench").to_dict(),
        rows=lambda _: tset["holdout_rows"], env=mlflow_env)
    scores_dir, reports_dir = scratch / "scores", scratch / "reports"
    scored = stages.run("score_interval", lambda: score.score_interval(
        spec, lay.validated(DATASET), repo, start, end, key, str(scores_dir), tables=tables).rows,
        rows=lambda n: n, env=mlflow_env)
    stages.run("check_drift", lambda: _drift_rows(check_drift(
        spec, str(scores_dir), str(reports_dir), end, key, validated_dir=lay.validated(DATASET))),
        rows=lambda n: n, env=mlflow_env)
    return {"training_set": tset, "trained": trained, "gate": decision, "scored": scored}


def _second_version(spec: Any, version: str) -> str:
    """A new registered version of `version`'s run and model files (no refit): what the gate sees from a retrain."""
    from mlflow import MlflowClient

    client = MlflowClient()
    mv = client.get_model_version(spec.registered_model_name, str(version))
    return str(client.create_model_version(spec.registered_model_name, mv.source, run_id=mv.run_id,
                                           tags=dict(mv.tags)).version)


def _land(sc: Any, day: int, kind: str, rows_per_day: int, path: Any) -> int:
    from pipelines import storage
    from scenarios.cards import generate_day

    df = generate_day(sc, day, kind, rows_per_day)
    storage.write_parquet(df, path)
    return len(df)


def _drift_rows(out: Any) -> int:
    return int(out[0].rows_current + out[0].rows_reference)


def _online_rows(lay: Any, view: str, start: datetime) -> int:
    """Entity rows of the view's table for the interval (what materialize loaded into the online store)."""
    from pipelines import storage
    from pipelines.layout import interval_key

    return storage.parquet_rows(storage.join(lay.features(), view, f"{interval_key(start)}.parquet"))


# ------------------------------------------------------------------------------------------------
# through the scheduler


class TaskPeaks:
    """Samples every `airflow worker -- <ti id>` process: peak RSS (VmHWM) per task instance id."""

    def __init__(self, every: float = 0.2) -> None:
        self.peak: dict[str, float] = {}
        self.every, self._stop = every, threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> TaskPeaks:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            for proc in Path("/proc").iterdir():
                if not proc.name.isdigit():
                    continue
                try:
                    cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue
                m = WORKER_TITLE.search(cmd)
                if m:
                    hwm = _vm("VmHWM", proc.name)
                    if hwm == hwm:
                        self.peak[m.group(1)] = max(self.peak.get(m.group(1), 0.0), hwm)
            self._stop.wait(self.every)


def _ts(v: str | None) -> datetime | None:
    return datetime.fromisoformat(v.replace("Z", "+00:00")) if v else None


def scheduler_play(lay: Any, api: Any, sc: Any, days: int, shifted: int, rows_per_day: int, peaks: TaskPeaks,
                   progress: Callable[[str], None]) -> dict[str, Any]:
    """The first champion trained by train__fraud on the history, then one normal and `shifted` shifted days landed
    one at a time; every run and task instance of the play, with its peak memory."""
    from pipelines.layout import interval_key
    from pipelines.spec import load_specs
    from scenarios.cards import generate_day

    spec = load_specs()[MODEL]
    landing = lay.landing(DATASET)
    dag_ids = [d["dag_id"] for d in api.dags()]
    since = datetime.now(UTC)
    as_of = sc.start + timedelta(days=days)
    t = time.monotonic()
    api.trigger(f"train__{MODEL}", conf={"as_of": as_of.isoformat(), "reason": "bench/scale.py: the first model"},
                run_id=f"manual__bench__{int(time.time())}")
    api.wait_settled(dag_ids, timeout=1800)
    progress(f"scheduler: train__{MODEL} on {days} days settled in {time.monotonic() - t:.0f}s")
    landed = []
    from pipelines import storage

    for i in range(1 + shifted):
        day = days + i
        kind = "normal" if i == 0 else "shifted"
        start = sc.start + timedelta(days=day)
        df = generate_day(sc, day, kind, rows_per_day)
        t_land = datetime.now(UTC)
        storage.write_parquet(df, storage.join(landing, spec.dataset.file_pattern.format(start=start)))
        t = time.monotonic()
        # the watcher polls (every 5 s on S3): wait for this interval's ingest run, then for everything after it
        api.wait_run(f"ingest_validate__{DATASET}", f"batch__{interval_key(start)}", timeout=900, since=t_land)
        api.wait_settled(dag_ids, timeout=1800)
        landed.append({"day": day, "kind": kind, "key": interval_key(start), "rows": len(df),
                       "landed_at": t_land.isoformat(), "settled_s": time.monotonic() - t})
        progress(f"scheduler: day {day} ({kind}, {len(df):,} rows) settled {time.monotonic() - t:.0f}s after landing")
    runs = [r for r in api.dag_runs() if (_ts(r.get("queued_at")) or since) >= since - timedelta(seconds=1)]
    out = []
    for r in runs:
        tis = api.task_instances(r["dag_id"], r["dag_run_id"])
        out.append({"dag_id": r["dag_id"], "run_id": r["dag_run_id"], "state": r["state"],
                    "start": r.get("start_date"), "end": r.get("end_date"), "queued": r.get("queued_at"),
                    "tasks": [{"task_id": ti["task_id"], "state": ti["state"], "duration": ti.get("duration"),
                               "start": ti.get("start_date"), "end": ti.get("end_date"),
                               "peak_mb": peaks.peak.get(ti.get("id", ""))} for ti in tis]})
    return {"runs": out, "landed": landed}


# ------------------------------------------------------------------------------------------------
# the table

# stage -> (dag prefix, task id) of the scheduler's task doing the same work
TASK_OF = {
    "validate_batch": ("ingest_validate__", "validate_batch"),
    "build_view_table": ("features__", "build_feature_table"),
    "materialize": ("features__", "materialize_features"),
    "build_training_set": ("train__", "build_training_set"),
    "train_and_register": ("train__", "train_challenger"),
    "evaluate_gate": ("train__", "evaluate_gate"),
    "promote": ("train__", "promote_champion"),
    "score_interval": ("score__", "score_batch"),
    "check_drift": ("monitor__", "detect_drift"),
}


def report(topo: str, stages: Stages, sched: dict[str, Any], rows_per_day: int, days: int) -> tuple[str, dict]:
    lines = [f"\n== {topo}: {rows_per_day:,} rows/day, {days} history days; per day unless said otherwise",
             f"{'stage':<34}{'in-proc s':>10}{'rows/s':>11}{'peak MB':>9}   {'sched task s':>12}{'rows/s':>11}"
             f"{'peak MB':>9}{'ratio':>7}"]
    figures: dict[str, Any] = {}
    tasks = [(r, t) for r in sched["runs"] for t in r["tasks"] if t["state"] == "success" and t["duration"]]
    for stage in stages.figs:
        m = stages.mean(stage)
        assert m is not None
        base = stage.split(" ")[0]
        view = stage.split(" ")[1] if base in ("build_view_table", "materialize") else None
        prefix, task_id = TASK_OF.get(base, ("", ""))
        mine = [(r, t) for r, t in tasks if r["dag_id"].startswith(prefix + (view or "")) and t["task_id"] == task_id
                ] if prefix else []
        mine.sort(key=lambda rt: rt[1]["start"] or "")   # in the order they ran
        if base in ("build_training_set", "evaluate_gate"):
            # the first model's (no champion: no bootstrap) against the first run's; the retrain's gate (a champion
            # to beat) against `evaluate_gate vs champion`; the retrain's training set is in its run's line below
            mine = mine[1:2] if stage.endswith("vs champion") else mine[:1]
        s_wall = sum(t["duration"] for _, t in mine) / len(mine) if mine else None
        s_peak = max((t["peak_mb"] or 0.0) for _, t in mine) if mine else None
        rps = m["rows"] / m["wall"] if m["wall"] and m["rows"] else None
        s_rows = m["rows"]   # the same work: a day of the same size (shifted days have 10% more; see below)
        s_rps = s_rows / s_wall if s_wall and s_rows else None
        ratio = s_wall / m["wall"] if s_wall and m["wall"] else None
        figures[stage] = {"in_process": m, "scheduler_task_s": s_wall, "scheduler_peak_mb": s_peak,
                          "scheduler_tasks": len(mine), "ratio": ratio}
        lines.append(f"{stage:<34}{m['wall']:>10.2f}{_n(rps):>11}{m['peak_mb']:>9.0f}   {_f(s_wall):>12}"
                     f"{_n(s_rps):>11}{_f(s_peak, 0):>9}{_f(ratio):>7}")
    # the landed days: file written -> drift verdict (the monitor run that judged it)
    lines.append("")
    lat = []
    inproc_day = sum((stages.mean(s) or {}).get("wall", 0.0) for s in stages.figs
                     if s.split(" ")[0] in ("validate_batch", "build_view_table", "materialize", "score_interval",
                                            "check_drift"))
    for d in sched["landed"]:
        landed_at = _ts(d["landed_at"])
        mon = [r for r in sched["runs"] if r["dag_id"].startswith("monitor__") and r["end"]
               and _ts(r["end"]) >= landed_at]
        # the monitor run of this day: the first one to end after the landing (days are landed one at a time); the
        # verdict is its detect_drift's end (the report written, the retrain Asset decided); the run's end adds the
        # report's e-mail to the owners
        run = min(mon, key=lambda r: _ts(r["end"]), default=None)
        verdict = next((_ts(t["end"]) for t in (run or {}).get("tasks", []) if t["task_id"] == "detect_drift"
                        and t["end"]), None)
        e2e = (verdict - landed_at).total_seconds() if verdict else None
        emailed = (_ts(run["end"]) - landed_at).total_seconds() if run else None
        # a shifted day has more rows than the in-process day: its work scaled by rows as well (an upper bound:
        # the feature builds read a lookback, which one day's extra rows hardly change)
        scaled = inproc_day * d["rows"] / rows_per_day
        lat.append({**d, "landing_to_verdict_s": e2e, "landing_to_monitor_run_end_s": emailed,
                    "ratio_to_in_process": e2e / inproc_day if e2e else None,
                    "ratio_to_in_process_scaled": e2e / scaled if e2e else None})
        more = (f"; {_f(e2e / scaled if e2e else None)}x scaled to its {d['rows']:,} rows ({scaled:.1f} s)"
                if d["rows"] != rows_per_day else "")
        lines.append(f"day {d['day']} ({d['kind']}, {d['rows']:,} rows): landing -> drift verdict "
                     f"{_f(e2e)} s (goal <= 120 s), {_f(e2e / inproc_day if e2e else None)}x the in-process "
                     f"work of the same stages on {rows_per_day:,} rows ({inproc_day:.1f} s{more}; goal <= 1.5x); "
                     f"the monitor run (report e-mailed) ended at {_f(emailed)} s")
    trains = [r for r in sched["runs"] if r["dag_id"] == f"train__{MODEL}"]
    for r in trains:
        dur = (_ts(r["end"]) - _ts(r["start"])).total_seconds() if r["end"] and r["start"] else None
        peak = max((t["peak_mb"] or 0.0 for t in r["tasks"]), default=None)
        lines.append(f"train__{MODEL} run {r['run_id']}: {r['state']}, {_f(dur)} s, peak task memory {_f(peak, 0)} MB "
                     "(goals: <= 600 s, <= 8,000 MB)")
    failed = [f"{r['dag_id']}/{r['run_id']}" for r in sched["runs"] if r["state"] == "failed"]
    if failed:
        lines.append(f"FAILED runs: {', '.join(failed)}")
    return "\n".join(lines), {"stages": figures, "days": lat, "train_runs": trains, "failed": failed}


def _f(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _n(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


# ------------------------------------------------------------------------------------------------


def play_topology(topo: str, args: argparse.Namespace, root: Path, progress: Callable[[str], None]) -> dict:
    from flywheel import runtime
    from flywheel.airflow_api import AirflowAPI
    from pipelines.layout import Layout, default_data_uri
    from scenarios.cards import Scenario

    home = root / topo
    home.mkdir(parents=True)
    datasets, models = write_declarations(root / f"{topo}-declarations", args.rows_per_day, args.sampling)
    os.environ.update({"FLYWHEEL_HOME": str(home), "FLYWHEEL_TOPOLOGY": topo,
                       "FLYWHEEL_DATASETS_DIR": str(datasets), "FLYWHEEL_MODELS_DIR": str(models)})
    if topo == "services":
        os.environ["FLYWHEEL_DB_PREFIX"] = f"flywheel_scale_{os.getpid()}"
    lay, ports = Layout(home), runtime.Ports.free()
    t = time.monotonic()
    env = runtime.init(lay, ports)
    runtime.up(lay, ports, env)
    progress(f"{topo}: services up in {time.monotonic() - t:.0f}s")
    os.environ.update({k: v for k, v in env.items() if k.startswith(("FLYWHEEL_", "MLFLOW_", "AWS_", "DO_NOT"))})
    lay = Layout(home, default_data_uri())
    try:
        api = AirflowAPI(f"http://127.0.0.1:{ports.airflow}", "admin", runtime.admin_password(lay))
        deadline = time.monotonic() + 300
        while not any(d["dag_id"] == f"train__{MODEL}" for d in api.dags()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"DAGs not parsed: {api.import_errors()}")
            time.sleep(2)
        for d in api.dags():
            if d["is_paused"]:
                api.unpause(d["dag_id"])
        api.wait_settled([d["dag_id"] for d in api.dags()], timeout=600)
        sc = Scenario(customers=args.customers, merchants=args.merchants)
        stages = Stages(root / f"{topo}-inprocess.log", progress)
        t = time.monotonic()
        inproc = in_process(lay, sc, args.history_days, args.rows_per_day, stages, root / f"{topo}-scratch")
        progress(f"{topo}: in-process history and stages in {time.monotonic() - t:.0f}s")
        with TaskPeaks() as peaks:
            sched = scheduler_play(lay, api, sc, args.history_days, args.shifted_days, args.rows_per_day, peaks,
                                   progress)
        text, figs = report(topo, stages, sched, args.rows_per_day, args.history_days)
        return {"text": text, "figures": figs, "in_process_outcomes": {"gate": inproc["gate"].get("reason")},
                "raw": {"in_process": stages.figs, "scheduler": sched}}
    finally:
        runtime.down(lay)
        if topo == "services":
            runtime.reset_services(runtime.environment(lay, ports))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows-per-day", type=int, default=1_000_000)
    ap.add_argument("--history-days", type=int, default=35)
    ap.add_argument("--shifted-days", type=int, default=1)
    ap.add_argument("--customers", type=int, default=300_000)
    ap.add_argument("--merchants", type=int, default=20_000)
    ap.add_argument("--sampling", type=float, default=None,
                    help="training.sampling.negatives of the bench's spec (keep every fraud, this share of the rest)")
    ap.add_argument("--topology", choices=["embedded", "services", "both"], default="embedded")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--report-from", type=Path, help="print the tables again from a --json file of an earlier run")
    args = ap.parse_args(argv)
    if args.report_from:
        saved = json.loads(args.report_from.read_text())
        for topo, res in saved["results"].items():
            stages = Stages(Path(os.devnull), lambda _: None)
            stages.figs = res["raw"]["in_process"]
            print(report(topo, stages, res["raw"]["scheduler"], saved["args"]["rows_per_day"],
                         saved["args"]["history_days"])[0])
        return 0
    # stopped by Ctrl-C or `kill` (also when started with nohup, which ignores SIGINT): the `finally` blocks stop the
    # run's services and drop its databases
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    for k, v in {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1", "GX_ANALYTICS_ENABLED": "false",
                 "FEAST_USAGE": "False"}.items():
        os.environ.setdefault(k, v)
    root = Path(tempfile.mkdtemp(prefix="flywheel-scale-"))
    t0 = time.monotonic()

    def progress(text: str) -> None:
        sys.stderr.write(f"[{time.monotonic() - t0:7.1f}s] {text}\n")
        sys.stderr.flush()

    import importlib

    t = time.monotonic()
    for mod in PRELOAD:
        importlib.import_module(mod)
    progress(f"preloaded {len(PRELOAD)} modules in {time.monotonic() - t:.0f}s (what the scheduler preloads)")
    info = machine()
    print(f"Flywheel scale benchmark, {info['date']}, {info['cpus']} CPUs ({info['cpu']}), {info['mem_gib']} GiB, "
          f"Python {info['python']}, 1-min load {info['load_1m_at_start']:.2f} at start")
    results = {}
    ok = False
    try:
        for topo in (["embedded", "services"] if args.topology == "both" else [args.topology]):
            results[topo] = play_topology(topo, args, root, progress)
            print(results[topo]["text"], flush=True)
        ok = True
    finally:
        total = time.monotonic() - t0
        print(f"\nwall time of the whole bench: {total / 60:.1f} min")
        if args.json:
            args.json.write_text(json.dumps({"machine": info, "args": vars(args) | {"json": str(args.json)},
                                             "results": {k: {kk: vv for kk, vv in v.items() if kk != "text"}
                                                         for k, v in results.items()}},
                                            indent=2, default=str))
        if args.keep or not ok:
            print(f"kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
