"""What the gate's paired bootstrap costs on a big holdout: before (a sort per resample) and now (sufficient
statistics), against raw floors measured in the same run (issue 16, "scale on one machine").

    .venv/bin/python bench/bootstrap.py [--rows 200000 1000000 2000000] [--resamples 1000]
        [--metrics average_precision log_loss] [--old-resamples 3] [--seed 0] [--slices-at 2000000]

Data per size N (seeded): about 1.2% positives, clusters of ~7 rows (N / 7 entities, rows assigned at random,
so a customer's rows are spread over the ranking), a latent risk z per row, the label Bernoulli(sigmoid(a + 2z)),
two models scoring z plus their own noise, as probabilities rounded to float32 (some tied scores, as XGBoost's
are). The gate's call: `pipelines.gate.paired_bootstrap(metric, y, challenger, champion, resamples, 0.95, seed,
clusters)`, entities as clusters.

Lines per size and metric:

- `before (extrapolated)`: the previous implementation (kept below as `old_paired_deltas`: per chunk of
  `2,000,000 // N` resamples a (resamples x clusters) count matrix by one bincount, its columns gathered to rows,
  `Metric.weighted` of both models, which argsorts the rows on every call). Only the first `--old-resamples`
  resamples (at least one old chunk) are run; the line extrapolates their time to `--resamples` and says so.
- `now: paired_bootstrap`: the whole call, every resample, as the gate makes it.
- `  prepare (sort once, bins)`: `Metric.resampler` for both models (the one sort, the sparse bin matrix, the
  per-cluster totals): part of the line above.
- `floor: the draws alone`: `cluster_counts` for every resample, nothing else: the same resamples cannot be
  drawn for less (300,000 x 1,000 random integers at 2M rows).
- `floor: sparse product alone` (ranking metrics): the (bins x clusters) @ (clusters x B) products for both
  models on already drawn counts, nothing else.
- `floor: one cumsum over rows` (ranking metrics): one numpy cumsum over an N x B matrix of float64 (timed on a
  chunk, extrapolated): what any per-row pass over every resample costs at the least, once per model.

- `+ slices (3 and 12 values)` (first metric, at `--slices-at` rows): what `compare_slices` adds in the gate:
  one `paired_bootstrap` per value of two slice columns (3 values at 55/43/2%, 12 values at random), on the
  value's rows with their clusters, as `compare_slices` calls it. A customer's rows spread over several values,
  so the slices draw more cluster counts in all than the primary metric does.

`seconds` is wall time, `cpu s` the process's CPU time in it; the ratio is taken on CPU time, which a busy shared
machine disturbs less (single-threaded work waiting for a core shows as wall >> cpu).

`agreement`: the first `--old-resamples` improvements of the old path against the new path on the same draws
(same seed), max |difference|.

About 2.5 minutes on 2 cores with the defaults.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines import gate  # noqa: E402
from pipelines.metrics import metric as registered  # noqa: E402


def holdout(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    clusters = rng.integers(0, max(1, n // 7), n)
    z = rng.normal(size=n)
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-(-6.3 + 2.0 * z)))).astype(np.float64)

    def model(noise: float) -> np.ndarray:
        s = z + rng.normal(0.0, noise, n)
        return (1.0 / (1.0 + np.exp(-(-5.5 + 2.0 * s)))).astype(np.float32).astype(np.float64)

    return y, model(0.6), model(0.7), clusters


def old_paired_deltas(m, y, a, b, clusters, resamples: int, seed: int) -> np.ndarray:
    """The previous `paired_bootstrap` loop (before issue 16), for its first `resamples` improvements."""
    _, member = np.unique(clusters, return_inverse=True)
    member = member.ravel()
    n, k = len(y), int(member.max()) + 1
    rng = np.random.default_rng(seed)
    chunk = max(1, min(resamples, 2_000_000 // n))
    out = []
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        idx = rng.integers(0, k, size=(size, k)) + (np.arange(size)[:, None] * k)
        w = np.bincount(idx.ravel(), minlength=size * k).reshape(size, k).astype(np.float64)[:, member]
        out.append(m.sign * (m.weighted(y, a, w) - m.weighted(y, b, w)))
    return np.concatenate(out)


def timed(fn, *args):
    t0, c0 = time.perf_counter(), time.process_time()
    value = fn(*args)
    return value, time.perf_counter() - t0, time.process_time() - c0


def slice_columns(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed + 1)
    return [rng.choice(np.array(["a", "b", "c"]), size=n, p=[0.55, 0.43, 0.02]), rng.integers(0, 12, n)]


def slice_bootstraps(m, y, a, b, clusters, labels, B, seed):
    """What `compare_slices` runs: one paired bootstrap per slice value (all values here are big enough)."""
    units = defined = 0
    for lab in labels:
        for value in sorted(set(lab.tolist()), key=str):
            mask = lab == value
            iv = gate.paired_bootstrap(m, y[mask], a[mask], b[mask], B, 0.95, seed, clusters[mask])
            units += iv.units
            defined += iv.defined
    return units, defined


def draw_all(rng: np.random.Generator, k: int, B: int, chunk: int) -> list[np.ndarray]:
    return [gate.cluster_counts(rng, k, min(chunk, B - s)) for s in range(0, B, chunk)]


def prepare_both(m, y, a, b, member, k):
    return m.resampler(y, a, member, k), m.resampler(y, b, member, k)


def apply_all(fns, counts):
    return [f(c) for c in counts for f in fns]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[200_000, 1_000_000, 2_000_000])
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--metrics", nargs="+", default=["average_precision", "log_loss"])
    ap.add_argument("--old-resamples", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--slices-at", type=int, default=2_000_000, help="rows at which the slice line is measured")
    args = ap.parse_args()
    B = args.resamples
    print(f"Flywheel paired bootstrap benchmark, {datetime.now(UTC).isoformat(timespec='seconds')}, "
          f"{os.cpu_count()} CPUs, numpy {np.__version__}; {B} resamples, 95% interval, entities as clusters")
    head = f"{'rows':>10}  {'metric':<18} {'line':<36} {'seconds':>8} {'cpu s':>7} {'cpu x floor':>11}  note"
    print(head)
    print("-" * (len(head) + 30))
    started = time.perf_counter()
    for n in args.rows:
        y, a, b, clusters = holdout(n, args.seed)
        _, member = np.unique(clusters, return_inverse=True)
        member = member.ravel()
        k = int(member.max()) + 1
        print(f"{n:>10,}  {'':<18} data: {int(y.sum()):,} positives ({y.mean():.2%}), {k:,} clusters "
              f"({n / k:.1f} rows each), {len(np.unique(a)):,} distinct challenger scores")
        # the floors shared by the metrics: every resample drawn, nothing else
        rng = np.random.default_rng(args.seed)
        chunk = max(1, min(B, gate._COUNTS_BUDGET // k))
        _, draw_s, draw_cpu = timed(draw_all, rng, k, B, chunk)
        for name in args.metrics:
            m = registered(name)
            r = min(B, max(args.old_resamples, 2_000_000 // n))     # at least one of the old chunks
            old, old_s, old_cpu = timed(old_paired_deltas, m, y, a, b, clusters, r, args.seed)
            iv, new_s, new_cpu = timed(gate.paired_bootstrap, m, y, a, b, B, 0.95, args.seed, clusters)
            (ours, theirs), prep_s, prep_cpu = timed(prepare_both, m, y, a, b, member, k)
            first = gate.cluster_counts(np.random.default_rng(args.seed), k, r)
            agree = float(np.nanmax(np.abs(old - m.sign * (ours(first) - theirs(first)))))
            floor_s, floor_cpu, floor_line = draw_s, draw_cpu, "floor: the draws alone"
            rows = [(f"before (extrapolated from {r})", old_s * B / r, old_cpu * B / r,
                     f"{r} resamples in {old_s:.2f} s, x {B / r:g}: a sort of {n:,} rows per model per resample"),
                    ("now: paired_bootstrap", new_s, new_cpu,
                     f"[{iv.low:+.5f}, {iv.high:+.5f}] around {iv.estimate:+.5f}, {iv.valid} valid; "
                     f"agreement with before on {r} resamples: max |diff| {agree:.1e}"),
                    ("  prepare (sort once, bins)", prep_s, prep_cpu, "Metric.resampler of both models")]
            extra = []
            if name in ("average_precision", "roc_auc"):
                from pipelines.metrics import _ranked_bins

                sums = [_ranked_bins(y, s, member, k) for s in (a, b)]
                counts = draw_all(np.random.default_rng(args.seed), k, B, chunk)
                _, mm_s, mm_cpu = timed(apply_all, sums, counts)
                del counts
                extra.append(("floor: sparse product alone", mm_s, mm_cpu,
                              "bins x clusters @ clusters x B for both models, counts already drawn "
                              "(with the bins' cumsums)"))
                step = max(1, 20_000_000 // n)
                x = np.random.default_rng(1).random((n, step))
                _, cs_s, cs_cpu = timed(np.cumsum, x, 0)
                del x
                extra.append(("floor: one cumsum over rows", cs_s * B / step, cs_cpu * B / step,
                              f"n x B float64, one model; timed on B = {step}, x {B / step:g}"))
            rows.append((floor_line, floor_s, floor_cpu, f"cluster_counts for {B} resamples ({k:,} x {B})"))
            if n == args.slices_at and name == args.metrics[0]:
                labels = slice_columns(n, args.seed)
                (units, defined), sl_s, sl_cpu = timed(slice_bootstraps, m, y, a, b, clusters, labels, B, args.seed)
                rows.insert(2, ("+ slices (3 and 12 values)", sl_s, sl_cpu,
                                f"{sum(len(set(v.tolist())) for v in labels)} paired_bootstrap calls, {units:,} "
                                f"clusters drawn per resample in all, {defined} intervals defined; primary + "
                                f"slices = {new_s + sl_s:.1f} s"))
            rows += extra
            for label, s, c, note in rows:
                print(f"{n:>10,}  {name:<18} {label:<36} {s:8.2f} {c:7.2f} {c / floor_cpu:11.2f}  {note}")
        print(file=sys.stderr, end=f"{n:,} rows done at {time.perf_counter() - started:.0f} s\n")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak memory of this process: {peak:,.0f} MB; wall time {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
