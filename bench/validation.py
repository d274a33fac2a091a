"""What the GX validation gate costs against a plain pandas implementation of the same rules.

    .venv/bin/python bench/validation.py [--rows 100000 1000000] [--repeats 3] [--json out.json]

For each size, the demo's generator (`scenarios.cards.generate_week` on a `Scenario` with
`tx_per_week` = rows) lands two batches of the same shape: a clean week and the demo's "bad rows"
week (12 bad rows: negative amounts, an unknown channel, null customers). A previous week is
validated first, so the distribution check has a reference profile, as in a running loop.

Both implementations check the same rules of datasets/transactions.yaml on the same batch (schema,
types, row count, null shares, duplicate batch, non-null, unique ids, allowed values (the label's
0/1 included), ranges, the timestamp not in the future and inside the interval, quarantine share,
distribution against the reference), and must find the same bad rows and the same verdict (checked,
printed). The GX gate runs with the dataset's readers (fraud, spend), as ingest_validate__transactions
does. `validation.max_rows` (150,000 in the contract) is lifted for the run: the 1M-row batches would
be blocked by it, and a blocked batch stops before the interesting work.

Figures, per size and batch (min of --repeats runs, the two implementations interleaved):

- `rules`: the checks alone, on the frame already in memory. GX: the batch suite, the row suite
  (BOOLEAN_ONLY, then COMPLETE for what failed) and the distribution suite, each on a new
  ephemeral context, as `validate_batch` runs them. Plain: the same rules as pandas/numpy
  expressions producing the same bad-row mask.
- `gate`: end to end: read the file, hash it, check, split, write the clean, quarantine, report and
  profile files. GX: `pipelines.validate.validate_batch` (without Data Docs); plain: the same steps
  in pandas. `+docs`: the extra cost of building the GX Data Docs page (`docs_dir`).
- `peak MB`: peak RSS growth of one end-to-end run in a fresh subprocess (the process's RSS
  high-water mark, VmHWM, minus its RSS before the call; the frame and the outputs included),
  after a warm-up run on 1,000 rows so that lazy imports are not counted as per-batch memory.

The ratio is GX / plain. Data and outputs go to a temporary directory, removed at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from functools import cache, partial
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

WEEK0 = datetime(2026, 1, 5, tzinfo=UTC)  # the reference week
WEEK1 = WEEK0 + timedelta(days=7)  # the benchmarked week
KINDS = ("normal", "bad_rows")


def contract_for_bench() -> Any:
    from pipelines.spec import REPO_ROOT as ROOT
    from pipelines.spec import load_contract

    return dataclasses.replace(load_contract(ROOT / "datasets" / "transactions.yaml"), max_rows=None)


@cache
def readers_for_bench() -> tuple[Any, ...]:
    """The models reading the dataset (their labels must not leak), loaded once: not part of the timings."""
    from pipelines.spec import load_specs, readers

    return tuple(readers("transactions", load_specs()))


# ----------------------------------------------------------------------------------------------
# the plain implementation


def plain_rules(
    df: Any, contract: Any, start: datetime, end: datetime, references: list[dict[str, Any]]
) -> dict[str, Any]:
    """The gate's rules in plain pandas/numpy: the bad-row mask, per-rule counts, batch problems."""
    import numpy as np
    import pandas as pd

    problems: list[str] = []
    expected = contract.column_names
    if set(df.columns) != set(expected):
        problems.append("schema")
    n = len(df)
    if n < contract.min_rows or (contract.max_rows is not None and n > contract.max_rows):
        problems.append("row_count")
    for c in contract.columns:
        if c.name in df.columns and c.nullable and c.max_null_share is not None and n:
            if df[c.name].isna().sum() / n > c.max_null_share:
                problems.append(f"null_share({c.name})")
    ok = []
    for c in contract.columns:
        if c.name not in df.columns:
            continue
        dt = df[c.name].dtype
        good = {
            "string": isinstance(dt, pd.StringDtype),
            "int": pd.api.types.is_integer_dtype(dt),
            "float": pd.api.types.is_numeric_dtype(dt) and not pd.api.types.is_bool_dtype(dt),
            "timestamp": isinstance(dt, pd.DatetimeTZDtype),
        }[c.type]
        if good:
            ok.append(c)
        else:
            problems.append(f"type({c.name})")
    bad = np.zeros(n, dtype=bool)
    counts: dict[str, int] = {}

    def hit(name: str, mask: Any) -> None:
        mask = np.asarray(mask, dtype=bool)
        k = int(mask.sum())
        if k:
            counts[name] = k
            bad[mask] = True

    for c in ok:
        s = df[c.name]
        null = s.isna().to_numpy()
        if not c.nullable:
            hit(f"not_null({c.name})", null)
            if n and null.all():
                problems.append(f"all_null({c.name})")
        if c.unique or c.name == contract.row_id:
            hit(f"unique({c.name})", s.duplicated(keep=False).to_numpy() & ~null)
        if c.allowed is not None:
            hit(f"in_set({c.name})", ~s.isin(list(c.allowed)).to_numpy(dtype=bool, na_value=True) & ~null)
        if c.type in ("int", "float") and (c.min is not None or c.max is not None):
            v = s.to_numpy(dtype="float64", na_value=np.nan)
            out = np.zeros(n, dtype=bool)
            if c.min is not None:
                out |= v < c.min
            if c.max is not None:
                out |= v > c.max
            hit(f"range({c.name})", out & ~null)
    ts_col = contract.timestamp
    if ts_col in [c.name for c in ok]:
        ts = df[ts_col]
        valid = ts.notna().to_numpy()
        hit(f"not_in_future({ts_col})", (ts >= pd.Timestamp(end)).to_numpy() & valid)
        hit(f"in_interval({ts_col})", (ts < pd.Timestamp(start)).to_numpy() & valid)
    bad_rows = np.flatnonzero(bad)
    if n and len(bad_rows) / n > contract.max_quarantine_share:
        problems.append("max_quarantine_share")
    warnings = []
    if references:
        keep = ~bad
        for name in contract.distribution.columns:
            stats = [p["columns"][name] for p in references if name in p["columns"]]
            if not stats or name not in df.columns:
                continue
            ref = {k: float(np.mean([s[k] for s in stats])) for k in stats[0]}
            v = df[name].to_numpy(dtype="float64", na_value=np.nan)[keep]
            v = v[~np.isnan(v)]
            observed = {"mean": float(v.mean())}
            if contract.column(name).type == "float":
                q = np.quantile(v, [0.05, 0.5, 0.95], method="closest_observation")
                observed.update(p05=float(q[0]), p50=float(q[1]), p95=float(q[2]))
            for k, x in observed.items():
                lo, hi = band(ref[k], ref["std"], contract.distribution.max_ratio)
                if not lo <= x <= hi:
                    warnings.append(f"{name}.{k}")
    return {"bad_rows": bad_rows, "counts": counts, "problems": problems, "warnings": warnings}


def band(ref: float, std: float, ratio: float) -> tuple[float, float]:
    """The same tolerance band as the gate (one definition, so both sides check the same rule)."""
    from pipelines.validate.distribution import band as gate_band

    return gate_band(ref, std, ratio)


def plain_gate(
    path: Path, contract: Any, start: datetime, end: datetime, out: Path, references: list[dict[str, Any]]
) -> dict[str, Any]:
    """End to end in plain pandas: read, hash, check, split, write clean + quarantine + report + profile."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines.util import sha256_file

    digest = sha256_file(path)
    registry = out / "registry.json"
    seen = json.loads(registry.read_text()) if registry.exists() else {}
    table = pq.read_table(path)
    arrow_strings = pd.StringDtype("pyarrow")
    df = table.to_pandas(types_mapper={pa.string(): arrow_strings, pa.large_string(): arrow_strings}.get)
    for c in contract.columns:  # the same normalisation as the gate: nullable whole floats -> ints
        s = df[c.name]
        if c.type == "int" and pd.api.types.is_float_dtype(s.dtype):
            df[c.name] = s.astype("Int64")
        if c.type == "timestamp" and s.dt.tz is None:
            df[c.name] = s.dt.tz_localize("UTC")
    res = plain_rules(df, contract, start, end, references)
    if any(k != start.date().isoformat() and v == digest for k, v in seen.items()):
        res["problems"].append("duplicate_batch")
    bad_rows = res["bad_rows"]
    blocked = bool(res["problems"])
    out.mkdir(parents=True, exist_ok=True)
    if not blocked:
        keep = np.ones(len(df), dtype=bool)
        keep[bad_rows] = False
        clean = df.loc[keep, contract.column_names].reset_index(drop=True)
        clean = clean.astype({c.name: "int64" for c in contract.columns if c.type == "int"})
        pq.write_table(pa.Table.from_pandas(clean, preserve_index=False), out / "clean.parquet")
        v = clean["amount"].to_numpy()
        profile = {
            "mean": float(v.mean()),
            "std": float(v.std()),
            **dict(zip(("p05", "p50", "p95"), np.quantile(v, [0.05, 0.5, 0.95]).tolist(), strict=True)),
        }
        (out / "profile.json").write_text(json.dumps(profile))
    if len(bad_rows):
        q = df.iloc[bad_rows].reset_index(drop=True)
        q["_quarantine_reasons"] = "see report"
        pq.write_table(pa.Table.from_pandas(q, preserve_index=False), out / "quarantine.parquet")
    report = {
        "verdict": "blocked" if blocked else "accepted",
        "rows": len(df),
        "quarantined": len(bad_rows),
        "counts": res["counts"],
        "problems": res["problems"],
        "warnings": res["warnings"],
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return report


# ----------------------------------------------------------------------------------------------
# the GX implementation, split where validate_batch is


def gx_rules(
    df: Any, contract: Any, start: datetime, end: datetime, references: list[dict[str, Any]]
) -> dict[str, Any]:
    from pipelines.validate import distribution, outputs, rules
    from pipelines.validate.gx import GXBatch

    gx_batch = GXBatch()
    failures, ok, _ = rules.check_batch_rules(gx_batch, df, contract, readers_for_bench(), "bench", "contract")
    row_failures, bad_rows, _, _ = rules.check_row_rules(
        gx_batch, df, contract, ok, start, end, "bench", "contract", "q"
    )
    failures += row_failures
    cols = [c for c in contract.distribution.columns if c in ok]
    if references and cols:
        clean = outputs.without(df[cols], bad_rows)
        failures += distribution.check_distribution(gx_batch, clean, contract, references, "bench", "contract")[0]
    return {"bad_rows": bad_rows, "failures": failures}


def gx_gate(path: Path, contract: Any, start: datetime, end: datetime, home: Path, docs: bool = False) -> Any:
    from pipelines.validate import validate_batch

    return validate_batch(
        path,
        contract,
        start,
        end,
        home / "validated",
        home / "quarantine",
        home / "reports",
        docs_dir=home / "docs" if docs else None,
        readers=readers_for_bench(),
    )


# ----------------------------------------------------------------------------------------------
# measuring


def best_of(repeats: int, fns: dict[str, Any]) -> dict[str, float]:
    """Min wall time of each callable over `repeats` rounds, the callables interleaved per round."""
    best = {k: float("inf") for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t)
    return best


def rss_mb(field: str = "VmRSS") -> float:
    """This process's resident set (VmRSS) or its high-water mark (VmHWM), in MiB.

    Not resource.getrusage's ru_maxrss: Linux carries it over fork+exec, so a child started by a
    big parent would report the parent's peak.
    """
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def worker(args: argparse.Namespace) -> None:
    """One end-to-end run in this (fresh) process; prints the peak RSS growth as JSON."""
    import great_expectations  # noqa: F401 - imported before the baseline, as the scheduler preload does
    import pandas  # noqa: F401
    import pyarrow
    import pyarrow.parquet

    from pipelines.validate.registry import reference_profiles

    logging.disable(logging.WARNING)
    contract = contract_for_bench()
    home = Path(args.home)
    path = Path(args.file)
    out = Path(tempfile.mkdtemp(dir=home))
    shutil.copytree(home / "reports", out / "reports")  # the reference profile, not shared between workers
    refs = reference_profiles(out / "reports", WEEK1.strftime("%Y-%m-%d"), contract.distribution.reference_batches)
    small = out / "warmup" / path.name  # a warm-up on 1,000 rows: lazy imports are not per-row memory
    small.parent.mkdir()
    first = next(pyarrow.parquet.ParquetFile(path).iter_batches(batch_size=1000))
    pyarrow.parquet.write_table(pyarrow.Table.from_batches([first]), small)

    def once(file: Path, where: Path) -> None:
        if args.worker == "gx":
            gx_gate(file, contract, WEEK1, WEEK1 + timedelta(days=7), where)
        else:
            plain_gate(file, contract, WEEK1, WEEK1 + timedelta(days=7), where / "plain", refs)

    once(small, out / "warm")
    before = rss_mb()
    t = time.perf_counter()
    once(path, out)
    seconds = time.perf_counter() - t
    peak = rss_mb("VmHWM")
    print(json.dumps({"rss_before_mb": before, "peak_rss_mb": peak, "growth_mb": peak - before, "seconds": seconds}))


def measure_memory(kind: str, path: Path, home: Path) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--worker", kind, "--file", str(path), "--home", str(home)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=REPO_ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_size(rows: int, repeats: int, tmp: Path) -> list[dict[str, Any]]:
    from pipelines.validate.reading import read_batch
    from pipelines.validate.registry import reference_profiles
    from scenarios.cards import Scenario, generate_week

    contract = contract_for_bench()
    home = tmp / f"rows{rows}"
    landing = home / "landing"
    landing.mkdir(parents=True)
    sc = Scenario(tx_per_week=rows, customers=max(3000, rows // 5), merchants=max(400, rows // 40))
    paths = {}
    for week, kind, start in ((0, "normal", WEEK0), (1, "normal", WEEK1), (1, "bad_rows", WEEK1)):
        df = generate_week(sc, week, kind)
        p = landing / kind / f"transactions_{start:%Y-%m-%d}.parquet"
        p.parent.mkdir(exist_ok=True)
        df.to_parquet(p, index=False)
        paths[(week, kind)] = p
    logging.disable(logging.WARNING)
    ref = gx_gate(paths[(0, "normal")], contract, WEEK0, WEEK1, home)  # the reference profile for week 1
    assert ref.verdict == "accepted", ref.summary
    key1 = WEEK1.strftime("%Y-%m-%d")
    references = reference_profiles(home / "reports", key1, contract.distribution.reference_batches)
    end = WEEK1 + timedelta(days=7)
    rows_out = []
    for kind in KINDS:
        path = paths[(1, kind)]
        frame, problem = read_batch(str(path), contract)
        assert problem is None and frame is not None
        n = len(frame)
        # same answer from both implementations
        g = gx_rules(frame, contract, WEEK1, end, references)
        p = plain_rules(frame, contract, WEEK1, end, references)
        same_rows = bool((g["bad_rows"] == p["bad_rows"]).all()) and len(g["bad_rows"]) == len(p["bad_rows"])
        run_home = home / f"run_{kind}"
        shutil.copytree(home / "reports", run_home / "reports")
        plain_out = run_home / "plain"
        gx_result = gx_gate(path, contract, WEEK1, end, run_home)
        plain_result = plain_gate(path, contract, WEEK1, end, plain_out, references)
        same_verdict = gx_result.verdict == plain_result["verdict"]
        rules = best_of(
            repeats,
            {
                "gx": partial(gx_rules, frame, contract, WEEK1, end, references),
                "plain": partial(plain_rules, frame, contract, WEEK1, end, references),
            },
        )
        gate = best_of(
            repeats,
            {
                "gx": partial(gx_gate, path, contract, WEEK1, end, run_home),
                "plain": partial(plain_gate, path, contract, WEEK1, end, plain_out, references),
                "gx_docs": partial(gx_gate, path, contract, WEEK1, end, run_home, docs=True),
            },
        )
        mem_gx = measure_memory("gx", path, home)
        mem_plain = measure_memory("plain", path, home)
        rows_out.append(
            {
                "rows": n,
                "batch": kind,
                "verdict": gx_result.verdict,
                "quarantined": gx_result.rows_quarantined,
                "warnings": [f.column for f in gx_result.failures if f.severity == "warn"],
                "same_bad_rows": same_rows,
                "same_verdict": same_verdict,
                "rules_gx_s": rules["gx"],
                "rules_plain_s": rules["plain"],
                "gate_gx_s": gate["gx"],
                "gate_plain_s": gate["plain"],
                "docs_extra_s": gate["gx_docs"] - gate["gx"],
                "peak_gx_mb": mem_gx["growth_mb"],
                "peak_plain_mb": mem_plain["growth_mb"],
                "rss_before_gx_mb": mem_gx["rss_before_mb"],
                "rss_before_plain_mb": mem_plain["rss_before_mb"],
                "file_mb": path.stat().st_size / 2**20,
                "frame_mb": frame.memory_usage(deep=True).sum() / 2**20,
            }
        )
        del frame
    return rows_out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--worker", choices=["gx", "plain"], help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    parser.add_argument("--home", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return 0
    import great_expectations as gx
    import pandas as pd

    load0 = os.getloadavg()[0]
    print(
        f"Flywheel validation benchmark, {datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, pandas {pd.__version__}, great-expectations {gx.__version__}, "
        f"1-min load {load0:.2f} at start",
        flush=True,
    )
    tmp = Path(tempfile.mkdtemp(prefix="flywheel-bench-validation-"))
    results = []
    try:
        for rows in args.rows:
            print(f"... {rows:,} rows", file=sys.stderr, flush=True)
            results += bench_size(rows, args.repeats, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    head = (
        f"{'rows':>10} {'batch':9} {'verdict':9} {'quar.':>5} {'same':5} {'rules GX':>9} {'plain':>7} {'ratio':>6} "
        f"{'gate GX':>8} {'plain':>7} {'ratio':>6} {'+docs':>6} {'peak MB GX':>10} {'plain':>6} {'frame MB':>8}"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        same = "yes" if r["same_bad_rows"] and r["same_verdict"] else "NO"
        print(
            f"{r['rows']:>10,} {r['batch']:9} {r['verdict']:9} {r['quarantined']:>5} {same:5} "
            f"{r['rules_gx_s']:>8.3f}s {r['rules_plain_s']:>6.3f}s {r['rules_gx_s'] / r['rules_plain_s']:>5.1f}x "
            f"{r['gate_gx_s']:>7.3f}s {r['gate_plain_s']:>6.3f}s {r['gate_gx_s'] / r['gate_plain_s']:>5.1f}x "
            f"{r['docs_extra_s']:>5.2f}s {r['peak_gx_mb']:>10.0f} {r['peak_plain_mb']:>6.0f} {r['frame_mb']:>8.0f}"
        )
    print(
        f"1-min load at end {os.getloadavg()[0]:.2f}; times are the min of {args.repeats} interleaved runs; "
        "peak MB = max RSS growth of one end-to-end run in a fresh process"
    )
    if args.json:
        args.json.write_text(json.dumps({"results": results, "load_1m": [load0, os.getloadavg()[0]]}, indent=2))
    return 0 if all(r["same_bad_rows"] and r["same_verdict"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
