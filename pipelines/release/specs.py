"""The model spec's release checks, declared once: `golden:` sets, `fairness:` parity rules, `explain:`.

Parsed key by key like the rest of the spec (pipelines/spec.py calls these); every error names the file and
the key, and says what to write instead.

    golden:                              # curated sets every challenger is judged on (pipelines/release/golden.py)
      - name: holiday_scam
        file: golden/fraud/holiday_scam.parquet   # repo-relative (or absolute): model inputs + the label column
        sha256: 3f1c...                  # the content hash it was frozen with (`flywheel golden hash FILE`)
        min_primary: 0.30                # value threshold on the set, in the metric's direction (optional)
        max_regression: 0.02             # vs the champion on the set: the paired bootstrap's interval must not
                                         # lie wholly below -0.02 (worse beyond noise and tolerance); optional
    fairness:                            # parity between the groups of a column (pipelines/release/fairness.py)
      - column: country
        metric: recall                   # positive_rate | recall | false_positive_rate | error_rate | mae
        parity: difference               # difference (max - min across groups) | ratio (min / max)
        threshold: 0.25                  # difference: at most; ratio: at least
        cutoff: 0.5                      # binary: a score >= cutoff is a positive (not for mae)
        min_rows: 100                    # groups with fewer rows (or positives, for recall) are reported only
        blocking: false                  # true: a breach blocks promotion
    explain:
      top_k: 3                           # the k largest feature contributions stored with each scored row
      importance_rows: 2000              # holdout rows for the card's mean |SHAP| (exact TreeSHAP)
      min_prediction: 0.5                # optional: explain only rows scoring >= 0.5 (the ones people act on);
                                         # bounds the cost for large models (bench/explain.py)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

GOLDEN_KEYS = ("name", "file", "sha256", "min_primary", "max_primary", "max_regression", "resamples")
FAIRNESS_KEYS = ("column", "metric", "parity", "threshold", "cutoff", "min_rows", "blocking")
EXPLAIN_KEYS = ("top_k", "importance_rows", "min_prediction")
PARITY_METRICS = {"positive_rate": ("binary",), "recall": ("binary",), "false_positive_rate": ("binary",),
                  "error_rate": ("binary",), "mae": ("regression",)}


@dataclass(frozen=True)
class GoldenSpec:
    name: str
    file: Path
    sha256: str
    min_primary: float | None = None     # value threshold in the metric's direction (min_ or max_, per metric)
    max_primary: float | None = None
    max_regression: float | None = None  # None: no comparison with the champion
    resamples: int = 1000


@dataclass(frozen=True)
class ParitySpec:
    column: str
    metric: str
    parity: str = "difference"
    threshold: float = 0.1
    cutoff: float = 0.5
    min_rows: int = 100
    blocking: bool = False


@dataclass(frozen=True)
class ExplainSpec:
    top_k: int = 3
    importance_rows: int = 2000
    min_prediction: float | None = None   # explain only rows scoring >= this (None: every row)


def _error(path: Path, text: str) -> Exception:
    from pipelines.spec import SpecError

    return SpecError(f"{path}: {text}")


def _mapping(raw: Any, where: str, keys: tuple[str, ...], path: Path) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise _error(path, f"`{where}` must be a mapping with keys {', '.join(keys)}; got {raw!r}.")
    unknown = sorted(set(raw) - set(keys))
    if unknown:
        raise _error(path, f"unknown key(s) {[f'{where}.{k}' for k in unknown]}; known: {', '.join(keys)}.")
    return raw


def _number(raw: dict[str, Any], key: str, where: str, path: Path, default: Any = None, *, low: float | None = None,
            whole: bool = False) -> Any:
    v = raw.get(key, default)
    if v is None:
        return None
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and (not whole or float(v).is_integer())
    if not ok or (low is not None and v < low):
        bound = f" >= {low:g}" if low is not None else ""
        raise _error(path, f"`{where}.{key}` must be a {'whole ' if whole else ''}number{bound}, got {v!r}.")
    return int(v) if whole else float(v)


def parse_golden(raw: Any, path: Path, repo_root: Path) -> tuple[GoldenSpec, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise _error(path, "`golden` is a list of sets, each {name, file, sha256, min_primary|max_primary, "
                           "max_regression}.")
    out, names = [], set()
    for i, item in enumerate(raw):
        where = f"golden[{i}]"
        g = _mapping(item, where, GOLDEN_KEYS, path)
        for key in ("name", "file", "sha256"):
            if not g.get(key):
                hint = " (run `flywheel golden hash FILE` and paste its output)" if key == "sha256" else ""
                raise _error(path, f"`{where}.{key}` is required{hint}.")
        name = str(g["name"])
        if not name.isidentifier() or name in names:
            raise _error(path, f"`{where}.name` {name!r} must be a unique identifier.")
        names.add(name)
        file = Path(str(g["file"]))
        sha = str(g["sha256"]).lower()
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise _error(path, f"`{where}.sha256` must be 64 hex digits (`flywheel golden hash {file}`), got "
                               f"{g['sha256']!r}.")
        spec = GoldenSpec(name, file if file.is_absolute() else repo_root / file, sha,
                          _number(g, "min_primary", where, path), _number(g, "max_primary", where, path),
                          _number(g, "max_regression", where, path, low=0.0),
                          _number(g, "resamples", where, path, 1000, low=100, whole=True))
        if spec.min_primary is None and spec.max_primary is None and spec.max_regression is None:
            raise _error(path, f"`{where}` declares no expectation: give min_primary (or max_primary for an error "
                               "metric) and/or max_regression.")
        out.append(spec)
    return tuple(out)


def parse_fairness(raw: Any, path: Path, task: str, columns: list[str]) -> tuple[ParitySpec, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise _error(path, "`fairness` is a list of rules, each {column, metric, parity, threshold, ...}.")
    out = []
    for i, item in enumerate(raw):
        where = f"fairness[{i}]"
        f = _mapping(item, where, FAIRNESS_KEYS, path)
        column = f.get("column")
        if column not in columns:
            raise _error(path, f"`{where}.column` {column!r} is not a column of the model's dataset "
                               f"({', '.join(columns)}).")
        metric = str(f.get("metric"))
        if task not in PARITY_METRICS.get(metric, ("",)):
            ok = sorted(m for m, t in PARITY_METRICS.items() if task in t)
            raise _error(path, f"`{where}.metric` {metric!r} does not fit a {task} model; use one of {ok}.")
        parity = f.get("parity", "difference")
        if parity not in ("difference", "ratio"):
            raise _error(path, f"`{where}.parity` must be `difference` (max - min) or `ratio` (min / max), got "
                               f"{parity!r}.")
        blocking = f.get("blocking", False)
        if not isinstance(blocking, bool):
            raise _error(path, f"`{where}.blocking` must be true or false, got {blocking!r}.")
        threshold = _number(f, "threshold", where, path, low=0.0)
        if threshold is None:
            raise _error(path, f"`{where}.threshold` is required (difference: the largest gap allowed; ratio: the "
                               "smallest min/max allowed).")
        out.append(ParitySpec(str(column), str(metric), parity, threshold,
                              _number(f, "cutoff", where, path, 0.5, low=0.0),
                              _number(f, "min_rows", where, path, 100, low=1, whole=True), blocking))
    return tuple(out)


def parse_explain(raw: Any, path: Path) -> ExplainSpec | None:
    if raw is None or raw is False:
        return None
    e = _mapping({} if raw is True else raw, "explain", EXPLAIN_KEYS, path)
    d = ExplainSpec()
    return ExplainSpec(_number(e, "top_k", "explain", path, d.top_k, low=0, whole=True),
                       _number(e, "importance_rows", "explain", path, d.importance_rows, low=100, whole=True),
                       _number(e, "min_prediction", "explain", path))
