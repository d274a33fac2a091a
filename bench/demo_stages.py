"""Time each stage of Flywheel's loop on one realistic batch, in one process.

Every stage calls the same pipelines/ function the DAG task calls (see dags/*.py), against a
temporary FLYWHEEL_HOME with MLflow tracking on a local SQLite file and the Feast registry and
online store on SQLite, so nothing here touches a running demo. Heavy libraries are imported once
before the stages (as the scheduler preload does) and their import cost is measured separately,
in fresh subprocesses: that is what every Airflow task pays when nothing is preloaded.

    .venv/bin/python bench/demo_stages.py [--weeks 6] [--tx-per-week 15000] [--keep] [--json out.json]

Library output (Feast progress bars, MLflow and GX messages, warnings) goes to <tmp>/bench.log;
stdout gets the table. See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("pandas", "xgboost", "mlflow", "feast", "great_expectations", "evidently")
# what the scheduler preloads (flywheel/runtime.py PRELOAD), plus duckdb for the PIT floor
PRELOAD = (
    "numpy",
    "pandas",
    "pyarrow.parquet",
    "sklearn.metrics",
    "xgboost",
    "mlflow",
    "mlflow.xgboost",
    "mlflow.tracking",
    "great_expectations",
    "evidently",
    "evidently.presets",
    "feast",
    "duckdb",
)
MODEL = "fraud"


@dataclass
class Figure:
    group: str  # "0".."8", or "setup"
    stage: str
    seconds: float
    rows: int | None = None
    note: str = ""
    cpu: float | None = None  # CPU seconds of this process (all its threads; not child processes)

    @property
    def rows_per_s(self) -> float | None:
        if self.rows is None or self.seconds <= 0:
            return None
        return self.rows / self.seconds

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rows_per_s": self.rows_per_s}


class Clock:
    """Wall and CPU time of each `with clock:` block, accumulated."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def __enter__(self) -> Clock:
        self._w, self._c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall.append(time.perf_counter() - self._w)
        self.cpu.append(time.process_time() - self._c)


class _CurrentStderr(logging.Handler):
    """Writes to whatever sys.stderr is at emit time (so `quiet()` captures library logging too)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:  # noqa: BLE001 - never let logging break a measurement
            self.handleError(record)


class Bench:
    def __init__(self, log_path: Path) -> None:
        self.figures: list[Figure] = []
        self.log = open(log_path, "a", buffering=1)  # noqa: SIM115 - open for the whole run
        self.t0 = time.perf_counter()

    def progress(self, text: str) -> None:
        sys.__stderr__.write(f"[{time.perf_counter() - self.t0:7.1f}s] {text}\n")
        sys.__stderr__.flush()

    @contextlib.contextmanager
    def quiet(self, what: str):
        """Send library stdout/stderr/logging to the bench log; on error show its tail."""
        self.log.write(f"\n===== {what}\n")
        start = self.log.tell()
        try:
            with contextlib.redirect_stdout(self.log), contextlib.redirect_stderr(self.log):
                yield
        except BaseException:
            self.log.flush()
            with open(self.log.name) as f:
                f.seek(start)
                tail = f.read()[-4000:]
            sys.__stderr__.write(f"--- {what} failed; library output:\n{tail}\n")
            raise

    def timed(self, group: str, stage: str, fn, *args, rows: Any = None, note: str = "", **kwargs) -> Any:
        """Run fn quietly, record its wall time; `rows` is an int or a function of the result."""
        clock = Clock()
        with self.quiet(stage), clock:
            out = fn(*args, **kwargs)
        n = rows(out) if callable(rows) else rows
        self.figures.append(Figure(group, stage, clock.wall[0], n, note, clock.cpu[0]))
        self.progress(f"{stage}: {clock.wall[0]:.2f}s")
        return out

    def add(
        self,
        group: str,
        stage: str,
        seconds: float,
        rows: int | None = None,
        note: str = "",
        cpu: float | None = None,
    ) -> None:
        self.figures.append(Figure(group, stage, seconds, rows, note, cpu))


# ------------------------------------------------------------------------------------------------
# stage 0: import cost in fresh processes


def _run_python(code: str, env: dict[str, str]) -> float:
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    dt = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"`python -c {code!r}` failed: {proc.stderr[-1000:]}")
    return dt


def import_costs(bench: Bench) -> None:
    env = dict(os.environ)
    base = min(_run_python("pass", env) for _ in range(3))
    bench.add("0", "python -c pass (baseline, min of 3)", base)
    for mod in HEAVY:
        dt = _run_python(f"import {mod}", env) - base
        bench.add("0", f"import {mod}", dt, note="fresh process, minus baseline")
        bench.progress(f"import {mod}: {dt:.2f}s")
    dt = _run_python("; ".join(f"import {m}" for m in HEAVY), env) - base
    bench.add("0", "import all six together", dt, note="shared dependencies load once")
    bench.progress(f"import all six: {dt:.2f}s")


# ------------------------------------------------------------------------------------------------
# the PIT floor: DuckDB ASOF JOIN of the same entity rows against the same parquet files


def duckdb_asof(rows: Any, features_root: Path, views: dict[str, tuple[str, list[str], timedelta]]) -> Any:
    """rows LEFT ASOF JOIN each view's snapshots (entity equal, snapshot ts <= row ts), TTL applied."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("entity_rows", rows)
    select, joins = ["e.*"], []
    for i, (view, (key, feats, ttl)) in enumerate(views.items()):
        alias = f"v{i}"
        glob = str(features_root / view / "*.parquet")
        secs = int(ttl.total_seconds())
        for f in feats:
            select.append(
                f"CASE WHEN {alias}.feature_ts >= e.event_ts - INTERVAL {secs} SECOND THEN {alias}.{f} END AS {f}"
            )
        joins.append(
            f"ASOF LEFT JOIN read_parquet('{glob}') {alias} "
            f"ON e.{key} = {alias}.{key} AND e.event_ts >= {alias}.feature_ts"
        )
    sql = f"SELECT {', '.join(select)} FROM entity_rows e {' '.join(joins)}"
    out = con.execute(sql).df()
    con.close()
    return out


def agreement(feast_df: Any, duck_df: Any, row_id: str, feats: list[str]) -> float:
    """Share of (row, feature) values equal in both joins (NaN == NaN)."""
    import numpy as np

    a = feast_df.set_index(row_id).sort_index()
    b = duck_df.set_index(row_id).sort_index()
    if len(a) != len(b) or not a.index.equals(b.index):
        return float("nan")
    same = total = 0
    for f in feats:
        x = a[f].astype("float64").to_numpy()
        y = b[f].astype("float64").to_numpy()
        same += int(np.sum(np.isclose(x, y, rtol=1e-9, atol=1e-9, equal_nan=True)))
        total += len(x)
    return same / total if total else float("nan")


# ------------------------------------------------------------------------------------------------
# the loop


def run(args: argparse.Namespace, home: Path, bench: Bench) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if not args.no_imports:
        import_costs(bench)

    # preload, as the scheduler does: stage times below are the work, not the imports
    with bench.quiet("preload"):
        import importlib

        with Clock() as clk:
            for name in PRELOAD:
                importlib.import_module(name)
        bench.add("setup", f"in-process preload ({len(PRELOAD)} modules)", clk.wall[0], cpu=clk.cpu[0])
    for name in ("mlflow", "feast", "great_expectations", "evidently", "alembic", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)

    from pipelines import features, gate, model, monitor, score, training, validate
    from pipelines.layout import Layout, interval_key
    from pipelines.spec import load_specs
    from scenarios import cards as datagen

    spec = load_specs()[MODEL]
    lay = Layout(home)
    repo = REPO_ROOT / "feature_repo"
    base = datagen.Scenario()
    sc = datagen.Scenario(
        start=base.start,
        customers=base.customers,
        merchants=base.merchants,
        tx_per_week=args.tx_per_week,
        seed=base.seed,
    )
    plans = [datagen.BatchPlan(w, "normal", "stable") for w in range(args.weeks)]
    plans.append(datagen.BatchPlan(args.weeks, "shifted", "market shift"))
    train_after = min(sc.train_after, args.weeks - 2)  # 3 by default: train as of the end of week 4
    scored_week = train_after + 1
    shifted = plans[-1]

    # setup the deployment already has: MLflow DB schema, experiment with its artifact root
    def _mlflow_init() -> None:
        model.configure_mlflow_env()
        from mlflow import MlflowClient

        MlflowClient().create_experiment(
            f"flywheel/{spec.name}", artifact_location=(home / "mlflow" / "artifacts").as_uri()
        )

    bench.timed("setup", "mlflow: create SQLite schema + experiment", _mlflow_init)

    # 1. land
    paths = []
    with bench.quiet("land"), Clock() as clk:
        for p in plans:
            paths.append(datagen.land_batch(sc, p, lay.landing(spec.dataset.name), spec.dataset.file_pattern))
    dt = clk.wall[0]
    import pandas as pd

    landed = [len(pd.read_parquet(p, columns=["transaction_id"])) for p in paths]
    bench.add("1", f"land {len(plans)} batches ({args.weeks} normal + 1 shifted)", dt, sum(landed), cpu=clk.cpu[0])
    bench.progress(f"land: {dt:.2f}s, {sum(landed)} rows")

    # 2. validate
    vclk, v_rows, results = Clock(), 0, []
    for p, path in zip(plans, paths, strict=True):
        start, end = p.interval(sc.start)
        with bench.quiet(f"validate week {p.week}"), vclk:
            res = validate.validate_batch(
                path,
                spec.dataset,
                start,
                end,
                lay.validated(spec.dataset.name),
                lay.quarantine(spec.dataset.name),
                lay.validation_reports(spec.dataset.name),
                readers=[spec],
            )
        v_rows += res.rows_landed
        results.append(res)
        if res.verdict != "accepted":
            raise RuntimeError(f"week {p.week} was {res.verdict}: {res.summary}")
    v_times = vclk.wall
    bench.add("2", f"validate {len(plans)} batches (total)", sum(v_times), v_rows, cpu=sum(vclk.cpu))
    bench.add(
        "2",
        "validate per batch (mean)",
        sum(v_times) / len(v_times),
        v_rows // len(v_times),
        note=f"min {min(v_times):.2f}s, max {max(v_times):.2f}s",
        cpu=sum(vclk.cpu) / len(vclk.cpu),
    )
    bench.progress(f"validate: mean {sum(v_times) / len(v_times):.2f}s per batch")
    extra["validate_seconds"] = v_times

    # 3. features: tables per interval, apply once, materialize per interval
    declared = features.load_repo(repo)
    views = list(declared.service_views(spec.feature_service))
    fclk, f_rows, per_interval = Clock(), 0, []
    for p in plans:
        start, end = p.interval(sc.start)
        with bench.quiet(f"feature tables week {p.week}"), fclk:
            tables = [features.build_view_table(declared.views[v], lay.validated(spec.dataset.name),
                                                lay.home / "features", start, end, interval_key(start)) for v in views]
        n = sum(t.rows for t in tables)
        f_rows += n
        per_interval.append((start, end, n))
    bench.add(
        "3",
        f"build_view_table ({len(views)} views) x{len(plans)}",
        sum(fclk.wall),
        f_rows,
        note=f"mean {sum(fclk.wall) / len(fclk.wall):.2f}s per interval",
        cpu=sum(fclk.cpu),
    )
    bench.progress(f"feature tables: {sum(fclk.wall):.2f}s")
    applied = bench.timed("3", "apply_feature_repo (once)", features.apply_feature_repo, repo)
    mclk = Clock()
    for start, end, _ in per_interval:
        with bench.quiet(f"materialize {start:%Y-%m-%d}"), mclk:
            features.materialize(repo, views, start, end)
    m_times = mclk.wall
    bench.add(
        "3",
        f"materialize x{len(plans)}",
        sum(m_times),
        f_rows,
        note=f"mean {sum(m_times) / len(m_times):.2f}s per interval",
        cpu=sum(mclk.cpu),
    )
    bench.progress(f"materialize: {sum(m_times):.2f}s")
    extra["feast_objects"] = applied

    # 4. training set as of the end of week train_after
    as_of = sc.start + timedelta(weeks=train_after + 1)
    run_key = "bench"
    tset = bench.timed(
        "4",
        f"build_training_set as of {as_of:%Y-%m-%d}",
        training.build_training_set,
        spec,
        lay.validated(spec.dataset.name),
        repo,
        as_of,
        lay.home / "training" / spec.name / run_key,
        rows=lambda ts: ts.train_rows + ts.holdout_rows,
    )

    # the PIT join on its own: Feast vs a plain DuckDB ASOF JOIN, same rows, same parquet files
    # (the entity rows are the training set's own rows, so any window logic of build_training_set holds)
    with bench.quiet("feature service"):
        store = features.feature_store(repo)
        fs = store.get_feature_service(spec.feature_service)
        view_specs = {}
        for proj in fs.feature_view_projections:
            fv = store.get_feature_view(proj.name)
            view_specs[proj.name] = (declared.views[proj.name].join_keys[0], [f.name for f in proj.features], fv.ttl)
        feature_names = {f for _, fl, _ in view_specs.values() for f in fl}
        both = pd.concat([pd.read_parquet(tset.train_path), pd.read_parquet(tset.holdout_path)], ignore_index=True)
        rows = both[[c for c in both.columns if c not in feature_names]]
    feast_df = bench.timed(
        "4", "  PIT join alone: with_features (default path)", training.with_features, spec, repo, rows, rows=len(rows)
    )
    duck_df = bench.timed(
        "4", "  PIT floor: DuckDB ASOF JOIN", duckdb_asof, rows, lay.home / "features", view_specs, rows=len(rows)
    )
    feats_only = [f for _, fl, _ in view_specs.values() for f in fl]
    agree = agreement(feast_df, duck_df, spec.dataset.row_id, feats_only)
    feast_s = bench.figures[-2].seconds
    duck_s = bench.figures[-1].seconds
    extra["pit_join"] = {
        "entity_rows": len(rows),
        "views": list(view_specs),
        "features": len(feats_only),
        "feast_seconds": feast_s,
        "duckdb_seconds": duck_s,
        "ratio": feast_s / duck_s if duck_s else None,
        "value_agreement": agree,
    }

    # 5. train + register
    def _train() -> Any:
        feats = training.feature_columns(spec, repo)
        return feats, model.train_and_register(
            spec, tset.to_dict(), feats, {}, run_key, lay.home / "training" / spec.name / run_key, "benchmark"
        )

    feats, trained = bench.timed("5", "train_and_register (xgboost + MLflow)", _train, rows=tset.train_rows)
    extra["trained"] = {"version": trained.version, "metrics": trained.metrics}
    # the same fit alone, to split the stage into xgboost and MLflow/bookkeeping
    with bench.quiet("read train set"):
        train_df = pd.read_parquet(tset.train_path)
    bench.timed(
        "5",
        "  same xgboost fit alone (pipelines.model.fit)",
        model.fit,
        spec,
        train_df,
        feats,
        dict(spec.params),
        rows=len(train_df),
        note="not part of the sum",
    )

    # 6. gate, then promote
    decision = bench.timed(
        "6",
        "evaluate_gate (challenger vs champion)",
        gate.evaluate_gate,
        spec,
        trained.version,
        tset.holdout_path,
        feats,
        lay.home / "training" / spec.name / run_key,
        rows=tset.holdout_rows,
    )
    extra["gate"] = {"promote": decision.promote, "reason": decision.reason}
    # stages 7-8 need a champion: on a rejection (small --tx-per-week) promote anyway, and say so
    forced = "" if decision.promote else "FORCED: the gate rejected; the bench needs a champion"
    extra["gate"]["forced_promotion"] = bool(forced)
    bench.timed("6", "promote (alias move)", gate.promote, spec, trained.version, decision.reason, as_of, note=forced)

    # 7. score, 8. drift
    for p in (plans[scored_week], shifted):
        start, end = p.interval(sc.start)
        bench.timed(
            "7",
            f"score_interval week {p.week} ({p.kind})",
            score.score_interval,
            spec,
            lay.validated(spec.dataset.name),
            repo,
            start,
            end,
            interval_key(start),
            lay.scores(spec.name),
            rows=lambda r: r.rows if r else 0,
        )
    start, end = shifted.interval(sc.start)
    drift, retrain = bench.timed(
        "8",
        f"check_drift week {shifted.week} (shifted)",
        monitor.check_drift,
        spec,
        lay.scores(spec.name),
        lay.reports(spec.name),
        end,
        interval_key(start),
        validated_dir=lay.validated(spec.dataset.name),
        rows=lambda r: r[0].rows_current + r[0].rows_reference,
        note="current + reference rows",
    )
    extra["drift"] = {
        "drifted_share": drift.drifted_share,
        "drift_detected": drift.drift_detected,
        "drifted": drift.drifted_columns,
        "retrain_request": retrain.request,
        "reason": retrain.reason,
    }
    return extra


# ------------------------------------------------------------------------------------------------
# output


def machine() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    mem = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = round(int(line.split()[1]) / 2**20, 1)
    versions = {}
    for pkg in ("pandas", "xgboost", "mlflow", "feast", "great-expectations", "evidently", "duckdb"):
        with contextlib.suppress(PackageNotFoundError):
            versions[pkg] = version(pkg)
    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "mem_gib": mem,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_1m_at_start": load,
        "versions": versions,
    }


def fmt_table(figs: list[Figure]) -> str:
    out = io.StringIO()
    w = max(len(f.stage) for f in figs) + 2
    out.write(f"{'':6}{'stage':<{w}}{'seconds':>9}{'cpu s':>8}{'rows':>10}{'rows/s':>11}  note\n")
    out.write("-" * (6 + w + 38 + 24) + "\n")
    last = None
    for f in figs:
        if last is not None and f.group != last:
            out.write("\n")
        last = f.group
        rows = f"{f.rows:,}" if f.rows is not None else ""
        rps = f"{f.rows_per_s:,.0f}" if f.rows_per_s is not None else ""
        cpu = f"{f.cpu:.2f}" if f.cpu is not None else ""
        out.write(f"{f.group:<6}{f.stage:<{w}}{f.seconds:>9.2f}{cpu:>8}{rows:>10}{rps:>11}  {f.note}".rstrip() + "\n")
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--weeks",
        type=int,
        default=6,
        help="normal weeks landed before the one shifted week (default 6: weeks 0..5, then 6)",
    )
    parser.add_argument(
        "--tx-per-week", type=int, default=None, help="transactions per normal week (default: Scenario's, 15000)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary FLYWHEEL_HOME (and bench.log)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON to this path")
    parser.add_argument("--no-imports", action="store_true", help="skip stage 0 (the subprocess import costs)")
    args = parser.parse_args(argv)
    if args.weeks < 2:
        parser.error("--weeks must be >= 2 (training needs labelled history and a week to score)")
    if args.json:
        args.json = args.json.resolve()  # the run chdirs into the temporary home

    home = Path(tempfile.mkdtemp(prefix="flywheel-bench-")).resolve()
    (home / "feast").mkdir()
    (home / "mlflow" / "artifacts").mkdir(parents=True)
    # forced, not defaulted: a shell pointing at a running demo must not be written to
    os.environ.update(
        {
            "FLYWHEEL_HOME": str(home),
            "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
            "FLYWHEEL_FEAST_REGISTRY": f"sqlite:///{home / 'feast' / 'registry.db'}",
            "FLYWHEEL_FEAST_ONLINE": str(home / "feast" / "online.db"),
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
            "DO_NOT_TRACK": "1",
            "GX_ANALYTICS_ENABLED": "false",
            "FEAST_USAGE": "False",
            "NO_COLOR": "1",
            "TQDM_DISABLE": "1",
        }
    )
    os.environ.pop("MLFLOW_REGISTRY_URI", None)
    os.environ.pop("FLYWHEEL_MLFLOW_UI", None)
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    os.chdir(home)  # anything that writes relative to the cwd (./mlruns) lands in the temp home

    root = logging.getLogger()
    root.handlers[:] = [_CurrentStderr()]
    root.setLevel(logging.WARNING)

    if args.tx_per_week is None:
        from scenarios.cards import Scenario

        args.tx_per_week = Scenario().tx_per_week
    meta = {**machine(), "args": {"weeks": args.weeks, "tx_per_week": args.tx_per_week}, "home": str(home)}
    bench = Bench(home / "bench.log")
    bench.progress(
        f"FLYWHEEL_HOME={home}  ({args.weeks} normal weeks + 1 shifted, "
        f"{args.tx_per_week} tx/week; library output in {home / 'bench.log'})"
    )
    ok = False
    try:
        extra = run(args, home, bench)
        ok = True
    finally:
        wall = time.perf_counter() - bench.t0
        bench.log.close()
        if not ok:
            sys.__stderr__.write(f"bench failed; state kept in {home}\n")
    work = sum(
        f.seconds
        for f in bench.figures
        if f.group not in ("0", "setup") and not f.stage.startswith("  ") and "per batch" not in f.stage
    )
    bench.add("=", "sum of stages 1-8", work)
    bench.add("=", "wall time of this run (incl. stage 0 and setup)", wall)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    meta["load_1m_at_end"] = os.getloadavg()[0]

    print(
        f"Flywheel stage benchmark, {meta['date']}, {meta['cpus']} CPUs ({meta['cpu']}), "
        f"{meta['mem_gib']} GiB, Python {meta['python']}, 1-min load {meta['load_1m_at_start']:.2f} at start, "
        f"{meta['load_1m_at_end']:.2f} at end"
    )
    print(
        f"{args.weeks} normal weeks + 1 shifted week, {args.tx_per_week:,} tx/normal week, model `{MODEL}`; "
        f"peak RSS {peak:,.0f} MB"
    )
    print()
    print(fmt_table(bench.figures), end="")
    pit = extra["pit_join"]
    print()
    print(
        f"PIT join, {pit['entity_rows']:,} entity rows x {len(pit['views'])} views ({pit['features']} features):"
        f" Feast {pit['feast_seconds']:.2f}s vs DuckDB ASOF {pit['duckdb_seconds']:.2f}s = "
        f"{pit['ratio']:.1f}x the floor; values agree on {100 * pit['value_agreement']:.2f}%"
    )
    forced = " (promoted anyway: the bench needs a champion)" if extra["gate"]["forced_promotion"] else ""
    print(f"gate: {extra['gate']['reason']}{forced}")
    if "drift" in extra:
        d = extra["drift"]
        print(
            f"drift week {args.weeks}: {100 * d['drifted_share']:.0f}% of columns drifted "
            f"(detected={d['drift_detected']}); retrain request={d['retrain_request']}"
        )

    if args.json:
        payload = {
            "meta": {**meta, "peak_rss_mb": peak, "wall_seconds": wall},
            "figures": [f.to_dict() for f in bench.figures],
            **extra,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    if args.keep:
        print(f"kept {home}")
    else:
        os.chdir(REPO_ROOT)
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
