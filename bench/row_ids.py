"""What row identity across batches costs at a year of daily batches (pipelines/validate/row_ids.py).

    .venv/bin/python bench/row_ids.py [--intervals 365] [--rows 1000000] [--resent 1000] [--keep] [--json out.json]

The situation: a dataset with a daily cadence has accepted `--intervals - 1` batches of `--rows` rows each
(a year: 364), and the gate checks the next 1M-row batch, whose ids must not have been accepted before.
The batch carries `--resent` ids of three earlier intervals (the first, the middle and the last one),
which the check must find and confirm; the rest of its ids are new.

Setup (not timed): the reports folder gets one index file per earlier interval, written by
`row_ids.write_index` as the gate writes it. The three intervals the batch re-sends ids from have real
ids (`t<interval>-<n>`, hashed by `row_ids.id_hashes`) and a validated file holding them (the id column:
the only one the check reads); the others hold 64-bit random values (a good 64-bit hash of distinct
ids is indistinguishable from them, and they are 100x faster to make) and an empty validated file
(their validated file is only opened on a hash hit, and there is none: 1M ids against 364M expect
1e6 * 3.64e8 / 2**64 = 2e-5 collisions).

Measured, in a fresh subprocess (so that imports, the setup and the floors below are not counted):

- `hash the batch`: `row_ids.BatchIds.of` on the landed frame (arrow strings, as `read_batch` gives);
- `check against N intervals`: `row_ids.seen_elsewhere`: list the folders, read the index files (4 read
  ahead in threads while one is screened), screen each, confirm the hits against the validated files
  (must find exactly the re-sent rows); wall time and CPU time of the process (all threads);
- `write the batch's index`: `row_ids.write_index` of the accepted batch's clean ids;
- `peak RSS growth`: the process's RSS high-water mark (VmHWM, reset just before through
  /proc/self/clear_refs) minus its RSS before the three steps, the batch frame already in memory.

The floors, in this process, on the same hashes (the earlier intervals' index files read into memory
first: `read every index into memory`):

- `floor: one presorted array`: every earlier hash in one sorted in-memory array (sorting it is setup,
  printed apart) and one `np.searchsorted` of the sorted batch: the least any exact-hash lookup can cost;
- `floor: np.isin per interval`: `np.isin(batch, interval, assume_unique=True)` on the in-memory arrays,
  timed on `--isin-sample` intervals and scaled to all of them (running it on all would take minutes);
- `same screen, no I/O`: the gate's own screen (`HashScreen.common`) over the in-memory arrays: the check
  minus reading and decoding the files.

The index files are in the page cache (just written): reading them from a cold disk or from S3 adds the
transfer of the `index on disk` bytes. Data goes to a temporary directory (2 GB at the defaults), removed
at the end unless --keep. At the defaults the run takes about 2-3 minutes on 2 cores and needs about 9 GB
of RAM (the floors hold every hash in memory, and sort them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

FIRST = datetime(2025, 1, 1, tzinfo=UTC)


def key_of(i: int) -> str:
    return f"{FIRST + timedelta(days=i):%Y-%m-%d}"


def real_ids(i: int, rows: int) -> list[str]:
    return [f"t{i:03d}-{j:07d}" for j in range(rows)]


def resent_from(intervals: int) -> list[int]:
    """The earlier intervals whose ids the batch re-sends: the first, the middle and the last one."""
    return sorted({0, (intervals - 1) // 2, intervals - 2})


def batch_ids(intervals: int, rows: int, resent: int) -> list[str]:
    """The checked batch's ids: new ones, then `resent` ids of earlier intervals (spread over `resent_from`)."""
    ids = real_ids(intervals - 1, rows - resent)
    sources = resent_from(intervals)
    for n, i in enumerate(sources):
        share = resent // len(sources) + (1 if n < resent % len(sources) else 0)
        ids += [f"t{i:03d}-{j:07d}" for j in range(0, share * 997, 997)]  # spread through the interval
    return ids


def rss_mb(field: str = "VmRSS") -> float:
    """This process's resident set (VmRSS) or its high-water mark (VmHWM), in MiB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return float("nan")


# ----------------------------------------------------------------------------------------------
# setup


def build(root: Path, intervals: int, rows: int) -> dict[str, Any]:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines.validate import row_ids

    reports, validated = root / "reports", root / "validated"
    validated.mkdir(parents=True)
    rng = np.random.default_rng(20260105)
    real = set(resent_from(intervals))
    empty = pa.table({"transaction_id": pa.array([], type=pa.string())})
    t = time.perf_counter()
    for i in range(intervals - 1):
        if i in real:
            ids = real_ids(i, rows)
            hashes = row_ids.sorted_distinct(row_ids.id_hashes(np.asarray(ids, dtype=object)))
            table = pa.table({"transaction_id": pa.array(ids, type=pa.string())})
            pq.write_table(table, validated / f"{key_of(i)}.parquet")
        else:
            # distinct in all but ~1e-8 of the draws (what write_index is given: sorted distinct hashes)
            hashes = np.sort(rng.integers(0, 2**64 - 1, rows, dtype=np.uint64, endpoint=True))
            pq.write_table(empty, validated / f"{key_of(i)}.parquet")
        row_ids.write_index(reports, key_of(i), hashes, "transaction_id")
        if i % 50 == 49:
            print(f"  setup: {i + 1}/{intervals - 1} intervals indexed", file=sys.stderr)
    files = sorted((reports / row_ids.INDEX).glob("*.parquet"))
    sizes = [f.stat().st_size for f in files]
    return {"setup_s": time.perf_counter() - t, "index_bytes": sum(sizes), "index_files": len(files)}


# ----------------------------------------------------------------------------------------------
# the measured check, in a fresh process


def child(root: Path, intervals: int, rows: int, resent: int) -> dict[str, Any]:
    import numpy as np
    import pandas as pd

    from pipelines.spec import REPO_ROOT as ROOT
    from pipelines.spec import load_contract
    from pipelines.validate import row_ids

    contract = load_contract(ROOT / "datasets" / "transactions.yaml")
    df = pd.DataFrame({"transaction_id": pd.array(batch_ids(intervals, rows, resent), dtype="string[pyarrow]")})
    key = key_of(intervals - 1)
    before = rss_mb()
    with open("/proc/self/clear_refs", "w") as fh:  # reset VmHWM: the peak from here on
        fh.write("5")
    t0 = time.perf_counter()
    ids = row_ids.BatchIds.of(df, contract)
    t1, c1 = time.perf_counter(), time.process_time()
    found = row_ids.seen_elsewhere(ids, key, root / "validated", root / "reports")
    t2, c2 = time.perf_counter(), time.process_time()
    bad = np.sort(np.concatenate(list(found.values()))) if found else np.zeros(0, dtype=np.int64)
    row_ids.write_index(root / "reports", key, ids.clean_hashes(bad), "transaction_id")
    t3 = time.perf_counter()
    peak = rss_mb("VmHWM")
    row_ids.remove_index(root / "reports", key)  # the next run checks the same state
    expected = set(range(rows - resent, rows))
    return {
        "hash_s": t1 - t0,
        "check_s": t2 - t1,
        "check_cpu_s": c2 - c1,
        "write_s": t3 - t2,
        "peak_growth_mb": peak - before,
        "rss_before_mb": before,
        "found": {k: len(v) for k, v in found.items()},
        "found_right_rows": {int(x) for v in found.values() for x in v} == expected,
    }


# ----------------------------------------------------------------------------------------------
# floors, on the same hashes in memory


def floors(root: Path, intervals: int, rows: int, resent: int, isin_sample: int) -> dict[str, Any]:
    import numpy as np

    from pipelines.validate import row_ids

    files = sorted((root / "reports" / row_ids.INDEX).glob("*.parquet"))
    t = time.perf_counter()
    arrays = [row_ids.read_index(str(f), "transaction_id") for f in files]
    read_s = time.perf_counter() - t
    assert all(a is not None for a in arrays)
    batch = row_ids.id_hashes(np.asarray(batch_ids(intervals, rows, resent), dtype=object))
    out: dict[str, Any] = {"read_all_s": read_s, "in_memory_mb": sum(a.nbytes for a in arrays) / 2**20}

    t = time.perf_counter()
    everything = np.sort(np.concatenate(arrays))
    out["sort_all_s"] = time.perf_counter() - t
    t = time.perf_counter()
    b = np.sort(batch)
    at = np.minimum(np.searchsorted(everything, b), len(everything) - 1)
    hits = int((everything[at] == b).sum())
    out["presorted_s"] = time.perf_counter() - t
    out["presorted_hits"] = hits
    del everything

    sample = arrays[:: max(1, len(arrays) // isin_sample)][:isin_sample]
    t = time.perf_counter()
    isin_hits = sum(int(np.isin(batch, a, assume_unique=True).sum()) for a in sample)
    out["isin_sample_s"] = time.perf_counter() - t
    out["isin_sample"] = len(sample)
    out["isin_all_s"] = out["isin_sample_s"] * len(arrays) / len(sample)
    out["isin_sample_hits"] = isin_hits

    t = time.perf_counter()
    screen = row_ids.HashScreen(batch)
    screened = sum(len(screen.common(a)) for a in arrays)  # type: ignore[arg-type]
    out["screen_s"] = time.perf_counter() - t
    out["screen_hits"] = screened
    return out


# ----------------------------------------------------------------------------------------------


def machine() -> str:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%S+00:00}, {os.cpu_count()} CPUs, {mem:.1f} GiB, Python "
        f"{platform.python_version()}, numpy {np.__version__}, pandas {pd.__version__}, pyarrow {pa.__version__}, "
        f"1-min load {os.getloadavg()[0]:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--intervals", type=int, default=365, help="intervals in all, the checked one included")
    parser.add_argument("--rows", type=int, default=1_000_000, help="ids per interval")
    parser.add_argument("--resent", type=int, default=1000, help="ids of earlier intervals in the checked batch")
    parser.add_argument("--repeats", type=int, default=2, help="runs of the measured check (best is shown)")
    parser.add_argument("--isin-sample", type=int, default=12, help="intervals np.isin is timed on")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.intervals, args.rows, args.resent)))
        return

    root = Path(tempfile.mkdtemp(prefix="flywheel-bench-row-ids-"))
    try:
        head = machine()
        earlier = args.intervals - 1
        print(f"  setup: {earlier} intervals of {args.rows:,} ids in {root}", file=sys.stderr)
        setup = build(root, args.intervals, args.rows)
        runs = []
        for _ in range(args.repeats):
            cmd = [
                sys.executable,
                __file__,
                "--child",
                str(root),
                "--intervals",
                str(args.intervals),
                "--rows",
                str(args.rows),
                "--resent",
                str(args.resent),
            ]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO_ROOT)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        best = min(runs, key=lambda r: r["check_s"])
        print("  floors (in memory)", file=sys.stderr)
        floor = floors(root, args.intervals, args.rows, args.resent, args.isin_sample)

        ids_total = earlier * args.rows
        per_file = setup["index_bytes"] / setup["index_files"]
        lines = [
            ("hash the batch (BatchIds.of)", f"{best['hash_s']:.2f} s"),
            (
                f"check against {earlier} intervals (seen_elsewhere)",
                f"{best['check_s']:.2f} s, CPU {best['check_cpu_s']:.2f} s (all threads; runs: "
                f"{', '.join(format(r['check_s'], '.2f') for r in runs)} s)",
            ),
            ("write the batch's index (write_index)", f"{best['write_s']:.2f} s"),
            ("  = the gate's added cost for the batch", f"{best['hash_s'] + best['check_s'] + best['write_s']:.2f} s"),
            ("peak RSS growth (hash + check + write)", f"{best['peak_growth_mb']:.0f} MiB"),
            (
                "re-sent rows found, confirmed",
                f"{sum(best['found'].values())} of {args.resent} "
                f"({best['found']}); right rows: {best['found_right_rows']}",
            ),
            (
                "index on disk",
                f"{setup['index_bytes'] / 2**30:.2f} GiB for {ids_total:,} ids: "
                f"{per_file / 2**20:.2f} MiB a {args.rows:,}-id interval, "
                f"{8 * setup['index_bytes'] / ids_total:.1f} bits an id",
            ),
            ("read every index into memory", f"{floor['read_all_s']:.2f} s ({floor['in_memory_mb']:,.0f} MiB)"),
            (
                "floor: one presorted array (searchsorted)",
                f"{floor['presorted_s']:.2f} s (+ {floor['sort_all_s']:.1f} s to sort it once; "
                f"{floor['presorted_hits']} hits)",
            ),
            (
                f"floor: np.isin per interval (x{earlier})",
                f"{floor['isin_all_s']:.1f} s (timed on {floor['isin_sample']}: {floor['isin_sample_s']:.2f} s)",
            ),
            ("same screen, no I/O", f"{floor['screen_s']:.2f} s ({floor['screen_hits']} hash hits)"),
        ]
        print(f"Row identity across batches, {head}")
        print(
            f"{args.intervals} daily intervals of {args.rows:,} ids: one batch checked against {earlier}; "
            f"setup {setup['setup_s']:.0f} s"
        )
        width = max(len(a) for a, _ in lines)
        for a, b in lines:
            print(f"  {a:<{width}}  {b}")
        if args.json:
            args.json.write_text(
                json.dumps(
                    {
                        "machine": head,
                        "args": vars(args) | {"json": str(args.json)},
                        "setup": setup,
                        "runs": runs,
                        "floors": floor,
                    },
                    indent=2,
                    default=str,
                )
            )
    finally:
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
