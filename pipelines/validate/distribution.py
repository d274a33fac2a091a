"""Distribution sanity of a batch against the batches accepted before it (a gross-error check, not drift).

An accepted batch leaves a profile of its clean rows (`profile`: per `validation.distribution.columns`,
the mean and standard deviation, and the 5th/50th/95th percentiles); the next batches compare their
clean rows with the average of the last `reference_batches` profiles (`check_distribution`). The
profile files themselves are kept by registry.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipelines.util import json_safe
from pipelines.validate import messages
from pipelines.validate.gx import raised, rule_of

if TYPE_CHECKING:
    import pandas as pd

    from pipelines.spec import DatasetContract
    from pipelines.validate.gx import GXBatch
    from pipelines.validate.results import RuleFailure

QUANTILES = (0.05, 0.5, 0.95)


def qname(q: float) -> str:
    return f"p{round(q * 100):02d}"


def profile(clean: pd.DataFrame, contract: DatasetContract, key: str) -> dict[str, Any]:
    """What the distribution check of the following batches compares with (clean rows only)."""
    columns: dict[str, Any] = {}
    for name in contract.distribution.columns:
        if name not in clean.columns:
            continue
        s = clean[name].dropna().astype("float64")
        if not len(s):
            continue
        q = s.quantile(list(QUANTILES), interpolation="nearest").tolist()
        columns[name] = {
            "mean": float(s.mean()),
            "std": float(s.std(ddof=0)),
            **{qname(p): float(v) for p, v in zip(QUANTILES, q, strict=True)},
        }
    return {"key": key, "rows": len(clean), "columns": columns}


def band(ref: float, std: float, ratio: float) -> tuple[float, float]:
    """Within a factor `ratio` of `ref`; around 0, +-(ratio - 1) reference standard deviations."""
    if ref > 0:
        return ref / ratio, ref * ratio
    if ref < 0:
        return ref * ratio, ref / ratio
    return -(ratio - 1) * std, (ratio - 1) * std


def check_distribution(
    gx_batch: GXBatch,
    clean: pd.DataFrame,
    contract: DatasetContract,
    references: list[dict[str, Any]],
    where: str,
    contract_file: str,
) -> tuple[list[RuleFailure], list[Any]]:
    """GX mean/quantile expectations with bounds from the reference profiles."""
    import numpy as np

    E = gx_batch.expectations
    dist = contract.distribution
    types = {c.name: c.type for c in contract.columns}
    exps: list[Any] = []
    refs: dict[str, dict[str, float]] = {}
    for name in clean.columns:
        stats = [p["columns"][name] for p in references if name in p.get("columns", {})]
        if not stats:
            continue
        ref = {k: float(np.mean([s[k] for s in stats])) for k in stats[0]}
        refs[name] = ref
        lo, hi = band(ref["mean"], ref["std"], dist.max_ratio)
        exps.append(
            E.ExpectColumnMeanToBeBetween(column=name, min_value=lo, max_value=hi, meta={"check": "distribution"})
        )
        if types.get(name) == "float":
            ranges = [list(band(ref[qname(q)], ref["std"], dist.max_ratio)) for q in QUANTILES]
            exps.append(
                E.ExpectColumnQuantileValuesToBeBetween(
                    column=name,
                    quantile_ranges={"quantiles": list(QUANTILES), "value_ranges": ranges},
                    meta={"check": "distribution"},
                )
            )
    results = gx_batch.run(clean, "distribution", exps, {"result_format": "SUMMARY"})
    severity = "batch" if dist.severity == "block" else "warn"
    failures = []
    for r in results:
        rule, column = rule_of(r)
        assert column is not None
        error = raised(r)
        if error is not None:
            failures.append(messages.distribution_unevaluated(rule, column, severity, error, where))
            continue
        if r.success:
            continue
        kw, observed, ref = r.expectation_config.kwargs, r.result.get("observed_value"), refs[column]
        if rule == "expect_column_mean_to_be_between":
            found = [
                f"mean {messages.num(observed)} (reference {messages.num(ref['mean'])}, allowed "
                f"{messages.num(kw['min_value'])}..{messages.num(kw['max_value'])})"
            ]
            shown = [json_safe(observed, nonfinite_as_text=True)]
        else:
            values = (observed or {}).get("values") or []
            ranges = kw["quantile_ranges"]["value_ranges"]
            found = [
                f"{qname(q)} {messages.num(v)} (reference {messages.num(ref[qname(q)])}, allowed "
                f"{messages.num(lo)}..{messages.num(hi)})"
                for q, v, (lo, hi) in zip(QUANTILES, values, ranges, strict=False)
                if not lo <= v <= hi
            ]
            shown = [json_safe(v, nonfinite_as_text=True) for v in values]
        failures.append(
            messages.distribution_shift(
                rule,
                column,
                severity,
                int(clean[column].notna().sum()),
                shown,
                found,
                references,
                dist.max_ratio,
                where,
                contract_file,
            )
        )
    return failures, results
