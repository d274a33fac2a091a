"""How often the guardrail rolls back a champion that is not worse (A/A), and how often it catches one that is.

    .venv/bin/python bench/guardrail.py [--rows 10000] [--entities 3000] [--base-rate 0.025]
        [--aa-seeds 200] [--detect-seeds 100] [--drops 0.02 0.05 0.10] [--budget 130]
        [--reg-rows 2000] [--reg-entities 600] [--reg-rises 0.02 0.05 0.10] [--seed-start 0]

Calls `pipelines.guardrail.judge_guard` as the monitor does (pipelines/monitor/guard.py), with the default
`GuardSpec()` (tolerance 0, 1,000 paired resamples, 95% two-sided interval, min_rows 200, min_positives 10,
bootstrap seed 0), entities as clusters, on synthetic labelled windows shaped like the fraud model's weekly
window. One window per seed (fresh data, models and labels), drawn so:

- `--entities` customers, each with at least one row, the other rows spread by a gamma(1) activity: ~3.3
  rows each on average, a few customers with 15+ rows.
- a latent risk z = customer effect + row effect (both N(0, 1)); the label is Bernoulli(sigmoid(a + 2 z)),
  a solved for `--base-rate`. Positives cluster on customers, so resampling customers matters.
- a model's score = z + its own error (customer part N(0, 0.5) + row part N(0, 0.6)): AP about 0.3.
  Two models drawn this way with independent errors are *equally good* (same population AP), not the same.

Cases (binary, `average_precision`):

- `A/A identical`: champion and previous champion give the same predictions.
- `A/A equal quality`: two independently noised models of the same quality: the honest A/A. A rollback
  here is a false rollback.
- `drop D`: the champion is the A/A champion with a share f of its score's variance replaced by
  independent noise (variance kept), f solved on a 300,000-row calibration window (common random numbers)
  so its population AP is D below the previous champion's. Same windows and seeds as the A/A row.
- `too few labels`: `min_rows - 1` rows and the largest drop: "none" is expected every time.

Regression (`rmse` from the metrics registry, a smaller window: `--reg-rows`, `--reg-entities`): the label
is 3.5 + z + N(0, 0.8), a model predicts 3.5 + z + its own error (as above); A/A identical, A/A equal, and
the champion's error widened so its population RMSE is `--reg-rises` (relative) above the previous one's.

Columns: `N` seeds, `rollbacks`, the rate with its 95% Clopper-Pearson interval, `pop diff` (champion minus
previous in the population: exact for rmse, from the calibration window for AP), `window diff` (the mean
over seeds of the same difference on the judged window), `better` (seeds whose interval lies above 0), and
for AP `@tol .01`: the rate with the fraud model's `tolerance: 0.01` (models/fraud.yaml), read off the same
intervals (rollback iff the interval's upper end < -tolerance, judge_guard's rule; checked against a
judge_guard call with that tolerance on the first seeds).

Below an A/A equal-quality row, the interval width check: the SD of the judged difference over the seeds
(the true sampling SD: every seed is a fresh window) against the SD the bootstrap implies (its mean 95% width
/ 3.92). A calibrated interval misses 0 in ~2.5% of the seeds on each side: a rollback rate well above 2.5%
with a bootstrap SD below the true one means the interval is too narrow.

Timing: judge_guard's wall and CPU seconds per call (median of the calls of the run) against the raw floor
in the same run: the metric computed once on the window with plain numpy (argsort + cumsum for AP, one
mean for rmse), run `resamples` times in a loop, interleaved with judge_guard calls on the same window. A
paired bootstrap scores two models per resample, so 2x that floor is what a paired one costs at minimum.

The number of seeds: judge_guard is timed first and each case gets min(asked, its share of `--budget`
seconds), at least 10 (the shares: A/A equal 50%, the drops 40%, the rest small; cases asked with 0 seeds
give theirs to the others); the N used is printed. The budget is a target: setup, the floor of 10 seeds and
a load that changes after the probe add to it. On 2 busy cores one call at 10,000 rows costs ~1.0 CPU-s,
so the default run (~2.5 minutes) gets 40-60 A/A seeds, not 200: to pool more, run again with a
disjoint `--seed-start`, e.g. A/A only: `--drops --reg-rises --identical-seeds 0 --reg-seeds 0
--few-seeds 0 --seed-start 1000 --budget 240`.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

NOW = datetime(2026, 3, 20, tzinfo=UTC)
PROMOTED = NOW - timedelta(days=5)
BETA = 2.0                                   # label log-odds per unit of latent risk
ERR_ENTITY, ERR_ROW = 0.5, 0.6               # a model's error: customer part, row part
REG_MEAN, REG_NOISE = 3.5, 0.8               # regression label: 3.5 + z + N(0, 0.8)
FRAUD_TOLERANCE = 0.01                       # models/fraud.yaml guardrail.tolerance


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def solve_intercept(base_rate: float) -> float:
    """The label intercept a with mean sigmoid(a + BETA z) = base_rate (z ~ N(0, 2))."""
    z = np.random.default_rng(12345).normal(0.0, np.sqrt(2.0), 400_000)
    lo, hi = -20.0, 5.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if sigmoid(mid + BETA * z).mean() < base_rate else (lo, mid)
    return (lo + hi) / 2


def entities_of(rng: np.random.Generator, rows: int, entities: int) -> np.ndarray:
    """Each customer gets one row, the remaining rows go by a gamma(1) activity; shuffled."""
    k = min(entities, rows)
    activity = rng.gamma(1.0, 1.0, k)
    extra = rng.choice(k, rows - k, p=activity / activity.sum())
    return rng.permutation(np.concatenate([np.arange(k), extra]))


@dataclass
class Window:
    y: np.ndarray
    previous: np.ndarray          # the previous champion's score
    champion: np.ndarray          # the A/A champion (equal quality, independent error)
    noise: np.ndarray             # N(0, 1) per row, for the degraded champions
    clusters: np.ndarray


def window(seed: int, rows: int, entities: int, intercept: float, task: str = "binary") -> Window:
    rng = np.random.default_rng([seed, 0 if task == "binary" else 1])
    ent = entities_of(rng, rows, entities)
    k = int(ent.max()) + 1
    z = rng.normal(0, 1, k)[ent] + rng.normal(0, 1, rows)

    def model() -> np.ndarray:
        return z + rng.normal(0, ERR_ENTITY, k)[ent] + rng.normal(0, ERR_ROW, rows)

    if task == "binary":
        y = (rng.random(rows) < sigmoid(intercept + BETA * z)).astype(float)
        return Window(y, model(), model(), rng.normal(0, 1, rows), ent)
    y = REG_MEAN + z + rng.normal(0, REG_NOISE, rows)
    return Window(y, REG_MEAN + model(), REG_MEAN + model(), rng.normal(0, 1, rows), ent)


def degrade(score: np.ndarray, noise: np.ndarray, f: float) -> np.ndarray:
    """A share f of the score's variance replaced by noise (the variance kept)."""
    if f <= 0:
        return score
    return np.sqrt(1 - f) * score + np.sqrt(f) * score.std() * noise


def plain_ap(y: np.ndarray, score: np.ndarray) -> float:
    """The floor: average precision with numpy, no tie handling (continuous scores have no ties)."""
    order = np.argsort(-score)
    ys = y[order]
    tp = np.cumsum(ys)
    return float((tp / np.arange(1, len(ys) + 1))[ys == 1].sum() / tp[-1])


def plain_rmse(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.sqrt(np.mean((y - pred) ** 2)))


def calibrate_drops(drops: list[float], intercept: float) -> tuple[float, dict[float, float]]:
    """The share f of noise giving each population AP drop, on one 300,000-row window (common random numbers)."""
    w = window(987_654, 300_000, 90_000, intercept)
    base = plain_ap(w.y, w.champion)
    out = {}
    for d in drops:
        lo, hi = 0.0, 1.0
        for _ in range(18):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if base - plain_ap(w.y, degrade(w.champion, w.noise, mid)) < d else (lo, mid)
        out[d] = (lo + hi) / 2
    return base, out


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    from scipy.stats import beta

    a = (1 - level) / 2
    lo = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a, k + 1, n - k))
    return lo, hi


@dataclass
class Case:
    name: str
    metric: str
    task: str
    rows: int
    entities: int
    asked: int
    share: float                   # of the budget
    make: object                   # (Window) -> (champion_pred, previous_pred)
    pop_diff: float | None = None
    tol_column: bool = False
    n: int = 0
    actions: list[str] = field(default_factory=list)
    highs: list[float] = field(default_factory=list)
    lows: list[float] = field(default_factory=list)
    diffs: list[float] = field(default_factory=list)
    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)


def judge(case: Case, w: Window, spec):
    from pipelines.guardrail import judge_guard

    a, b = case.make(w)
    return judge_guard(case.metric, case.task, w.y, a, b, spec, champion="3", previous="2",
                       promoted_at=PROMOTED, now=NOW, clusters=w.clusters)


def timed(fn):
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - c


def floor_vs_judge(case: Case, w: Window, spec, floor_fn, repeats: int = 3) -> dict[str, float]:
    """judge_guard on one window, interleaved with the floor (the metric once x resamples) on the same window."""
    a, b = case.make(w)
    j, f = [], []
    for _ in range(repeats):
        j.append(timed(lambda: judge(case, w, spec))[1:])
        f.append(timed(lambda: [floor_fn(w.y, a) for _ in range(spec.resamples)])[1:])
    return {"judge": statistics.median(x[0] for x in j), "judge_cpu": statistics.median(x[1] for x in j),
            "floor": statistics.median(x[0] for x in f), "floor_cpu": statistics.median(x[1] for x in f),
            "single": statistics.median(x[0] for x in f) / spec.resamples}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=10_000, help="labelled rows in a binary window")
    ap.add_argument("--entities", type=int, default=3_000, help="customers (clusters) in a binary window")
    ap.add_argument("--base-rate", type=float, default=0.025)
    ap.add_argument("--aa-seeds", type=int, default=200, help="seeds of the A/A equal-quality case (at most)")
    ap.add_argument("--detect-seeds", type=int, default=100, help="seeds per injected drop (at most)")
    ap.add_argument("--identical-seeds", type=int, default=20)
    ap.add_argument("--drops", type=float, nargs="*", default=[0.02, 0.05, 0.10], help="population AP drops")
    ap.add_argument("--reg-rows", type=int, default=2_000)
    ap.add_argument("--reg-entities", type=int, default=600)
    ap.add_argument("--reg-seeds", type=int, default=200)
    ap.add_argument("--reg-rises", type=float, nargs="*", default=[0.02, 0.05, 0.10],
                    help="relative RMSE increases of the champion")
    ap.add_argument("--few-seeds", type=int, default=200)
    ap.add_argument("--budget", type=float, default=130.0,
                    help="seconds for the seeded cases; 0 = no limit (the asked seeds)")
    ap.add_argument("--seed-start", type=int, default=0)
    args = ap.parse_args()

    from pipelines.guardrail import GuardSpec

    spec = GuardSpec()
    started = time.perf_counter()
    print(f"Flywheel guardrail benchmark, {datetime.now(UTC).isoformat(timespec='seconds')}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, numpy {np.__version__}, 1-min load {os.getloadavg()[0]:.2f} at start")
    print(f"GuardSpec() default: tolerance {spec.tolerance:g}, {spec.resamples} resamples, {spec.confidence:.0%} "
          f"two-sided, min_rows {spec.min_rows}, min_positives {spec.min_positives}, bootstrap seed {spec.seed}; "
          "clusters = entity ids")

    intercept = solve_intercept(args.base_rate)
    worst = max(args.drops, default=0.10)                   # the too-few-labels case's champion
    base_ap, shares = calibrate_drops(sorted({*args.drops, worst}), intercept)
    reg_rmse = float(np.hypot(REG_NOISE, np.hypot(ERR_ENTITY, ERR_ROW)))

    def aa_identical(w: Window):
        return w.champion, w.champion.copy()

    def aa_equal(w: Window):
        return w.champion, w.previous

    def dropped(f: float):
        return lambda w: (degrade(w.champion, w.noise, f), w.previous)

    def widened(rise: float):
        sd = reg_rmse * np.sqrt((1 + rise) ** 2 - 1)        # extra error sd: RMSE x (1 + rise)
        return lambda w: (w.champion + sd * w.noise, w.previous)

    b, r = (args.rows, args.entities), (args.reg_rows, args.reg_entities)
    cases = [Case("A/A identical", "average_precision", "binary", *b, args.identical_seeds, 0.03, aa_identical, 0.0,
                  True),
             Case("A/A equal quality", "average_precision", "binary", *b, args.aa_seeds, 0.50, aa_equal, 0.0, True)]
    cases += [Case(f"drop {d:.2f} (f={shares[d]:.3f})", "average_precision", "binary", *b, args.detect_seeds,
                   0.40 / len(args.drops), dropped(shares[d]), -d, True) for d in args.drops]
    few = spec.min_rows - 1
    cases.append(Case(f"too few labels, drop {worst:.2f}", "average_precision", "binary", few,
                      max(1, round(few * args.entities / args.rows)), args.few_seeds, 0.0,
                      dropped(shares[worst]), -worst))
    cases += [Case("A/A identical", "rmse", "regression", *r, args.identical_seeds, 0.005, aa_identical, 0.0),
              Case("A/A equal quality", "rmse", "regression", *r, args.reg_seeds, 0.035, aa_equal, 0.0)]
    cases += [Case(f"rmse +{rise:.0%}", "rmse", "regression", *r, args.reg_seeds, 0.03 / len(args.reg_rises),
                   widened(rise), reg_rmse * rise) for rise in args.reg_rises]

    # one call of each kind first: what a judge costs decides how many seeds fit the budget
    probe_b = window(10**6 + args.seed_start, args.rows, args.entities, intercept)
    probe_r = window(10**6 + args.seed_start, args.reg_rows, args.reg_entities, intercept, "regression")
    t_ap = floor_vs_judge(cases[1], probe_b, spec, plain_ap)
    t_rmse = floor_vs_judge(cases[-1], probe_r, spec, plain_rmse)
    print(f"setup (calibration + timing probes): {time.perf_counter() - started:.0f} s", file=sys.stderr)
    active = sum(c.share for c in cases if c.asked > 0)    # the budget is shared by the cases asked for
    for c in cases:
        c.share /= active or 1.0
        per = t_ap["judge"] if c.metric == "average_precision" else t_rmse["judge"]
        fits = int(c.share * args.budget / per) if args.budget > 0 and c.share > 0 else c.asked
        c.n = max(min(c.asked, fits), min(c.asked, 10))
    cases = [c for c in cases if c.n > 0]

    for c in cases:
        t0 = time.perf_counter()
        for s in range(args.seed_start, args.seed_start + c.n):
            w = window(s, c.rows, c.entities, intercept, c.task)
            v, wall, cpu = timed(lambda c=c, w=w: judge(c, w, spec))
            c.actions.append(v.action)
            c.walls.append(wall)
            c.cpus.append(cpu)
            if v.improvement is not None:
                c.highs.append(v.improvement["high"])
                c.lows.append(v.improvement["low"])
                c.diffs.append(v.champion_value - v.previous_value)
            if c.tol_column and s < args.seed_start + 3:   # the read-off tolerance rule is judge_guard's own
                t = judge(c, w, replace(spec, tolerance=FRAUD_TOLERANCE))
                assert (t.action == "rollback") == (v.improvement["high"] < -FRAUD_TOLERANCE), (c.name, s)
        print(f"{c.metric} {c.name}: {c.n} seeds in {time.perf_counter() - t0:.0f} s", file=sys.stderr)

    print(f"binary window: {args.rows:,} rows, {args.entities:,} entities, base rate {args.base_rate:.1%} "
          f"(label intercept {intercept:.2f}); population AP of each model {base_ap:.3f}; "
          f"regression window: {args.reg_rows:,} rows, {args.reg_entities:,} entities, population RMSE {reg_rmse:.3f}")
    print()
    head = (f"{'metric':<18} {'case':<30} {'rows':>6} {'N':>4} {'rollbacks':>9} {'rate':>6}  {'95% CI':<13} "
            f"{'pop diff':>8} {'window diff':>11} {'better':>6} {'@tol .01':>8}")
    print(head)
    print("-" * len(head))
    for c in cases:
        k = c.actions.count("rollback")
        lo, hi = clopper_pearson(k, c.n)
        wd = f"{np.mean(c.diffs):+.4f}" if c.diffs else "-"
        better = sum(low > 0 for low in c.lows)
        tol = f"{sum(h < -FRAUD_TOLERANCE for h in c.highs) / c.n:6.1%}" if c.tol_column else "-"
        pop = f"{c.pop_diff:+.4f}" if c.pop_diff is not None else "-"
        print(f"{c.metric:<18} {c.name:<30} {c.rows:>6,} {c.n:>4} {k:>9} {k / c.n:6.1%}  [{lo:5.1%},{hi:6.1%}] "
              f"{pop:>8} {wd:>11} {better:>6} {tol:>8}")
        if c.name == "A/A equal quality" and len(c.diffs) > 2:
            boot = float(np.mean(np.subtract(c.highs, c.lows))) / (2 * 1.959964)
            true_sd = float(np.std(c.diffs, ddof=1))
            print(f"{'':<18} {'':<30} interval width check: SD of the window diff over seeds {true_sd:.4f} vs "
                  f"the bootstrap's (mean CI width / 3.92) {boot:.4f}; 0 outside the CI: {k} below, {better} above")
        if c.name.startswith("too few"):
            none = c.actions.count("none")
            print(f"{'':<18} {'':<30} action 'none' in {none} of {c.n} seeds "
                  f"(rows {c.rows} < min_rows {spec.min_rows})")
    print()
    print(f"{'timing (window)':<34} {'judge s':>8} {'cpu s':>7} {'floor s':>8} {'cpu s':>7} {'x floor':>8} "
          f"{'x 2 floor':>9}  floor = plain metric once x {spec.resamples}")
    for metric, label, t in (("average_precision", f"average_precision, {args.rows:,} rows", t_ap),
                             ("rmse", f"rmse, {args.reg_rows:,} rows", t_rmse)):
        judged = [c for c in cases if c.metric == metric and c.highs]     # the bootstrapped calls
        if not judged:
            continue
        med_wall = statistics.median(x for c in judged for x in c.walls)
        med_cpu = statistics.median(x for c in judged for x in c.cpus)
        print(f"{label:<34} {t['judge']:8.3f} {t['judge_cpu']:7.3f} {t['floor']:8.3f} {t['floor_cpu']:7.3f} "
              f"{t['judge'] / t['floor']:8.2f} {t['judge'] / (2 * t['floor']):9.2f}  interleaved, median of 3; "
              f"one metric {1000 * t['single']:.2f} ms")
        print(f"{'  same, median over the seeded calls':<34} {med_wall:8.3f} {med_cpu:7.3f} {'':>8} {'':>7} "
              f"{med_wall / t['floor']:8.2f} {med_wall / (2 * t['floor']):9.2f}")
    print(f"\nseeds {args.seed_start}..; budget {args.budget:g} s; wall time {time.perf_counter() - started:.0f} s; "
          f"1-min load at end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
