"""Golden datasets: curated cases every challenger is judged on, frozen so they never change under it.

A set (spec `golden:`, pipelines/release/specs.py) is a parquet or CSV file of model inputs (the row features
and the feature service's features, as the model reads them) and the label column. It is frozen by its
sha256, declared in the spec next to the file (`flywheel golden hash FILE` prints it): the gate reads the
file, and a missing file, a different hash or a missing column fails closed (not promoted, with the reason
and what to do). Each challenger's run records the hash it was judged on (`flywheel.golden.<name>.sha256`),
so every version says which golden sets it passed.

Per set: the primary metric of the challenger (and the champion, on the same rows, each with its own
categories), a value threshold (`min_primary` or `max_primary`), and no regression against the champion
beyond noise and `max_regression`: the gate's paired bootstrap (resampling the entity key when the file has
it) must not put the whole interval of the improvement below `-max_regression`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from pipelines.release.specs import GoldenSpec
    from pipelines.spec import ModelSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GoldenResult:
    name: str
    file: str
    sha256: str | None              # what the file hashes to now (None: unreadable)
    rows: int = 0
    positives: int | None = None
    challenger: float | None = None
    champion: float | None = None
    improvement: dict[str, Any] | None = None
    passed: bool = False
    detail: str = ""
    checks: list[dict[str, Any]] = field(default_factory=list)


def read_golden(g: GoldenSpec) -> tuple[pd.DataFrame | None, str | None, str | None]:
    """(frame, sha256 now, error) of a golden set; an error says what is wrong and what to do."""
    import pandas as pd

    from pipelines.util import sha256_file

    if not g.file.exists():
        return None, None, (f"golden set {g.name}: {g.file} is missing; restore it (it is versioned with the "
                            "spec) or remove the set from the spec")
    sha = sha256_file(g.file)
    if sha != g.sha256:
        return None, sha, (f"golden set {g.name}: {g.file} changed (sha256 {sha[:12]}…, the spec froze "
                           f"{g.sha256[:12]}…); a golden set never changes under a model: restore the file, or "
                           "declare the new one on purpose with its hash (`flywheel golden hash FILE`)")
    frame = pd.read_csv(g.file) if g.file.suffix == ".csv" else pd.read_parquet(g.file)
    return frame, sha, None


def judge_golden(spec: ModelSpec, g: GoldenSpec, y: np.ndarray, challenger: np.ndarray | None,
                 champion: np.ndarray | None, champion_version: str | None, clusters: np.ndarray | None,
                 file: str, sha: str | None) -> GoldenResult:
    """The set's verdict from predictions on its rows (pure)."""
    import numpy as np

    from pipelines.gate import paired_bootstrap
    from pipelines.metrics import metric as registered

    m = registered(spec.primary_metric)
    metric = spec.primary_metric
    y = np.asarray(y, dtype=np.float64)
    positives = int(np.nansum(y)) if spec.task == "binary" else None
    if challenger is None or len(challenger) != len(y) or not np.all(np.isfinite(challenger)):
        return GoldenResult(g.name, file, sha, len(y), positives, detail=f"golden set {g.name}: the challenger "
                            "made no (finite) predictions on it: not promoted")
    value = float(m.value(y, challenger))
    checks: list[dict[str, Any]] = []
    if g.min_primary is not None:
        ok = math.isfinite(value) and value >= g.min_primary
        checks.append({"what": "min_primary", "passed": ok, "value": value, "threshold": g.min_primary,
                       "detail": f"{metric} {value:.4f} (must be >= {g.min_primary:g})"})
    if g.max_primary is not None:
        ok = math.isfinite(value) and value <= g.max_primary
        checks.append({"what": "max_primary", "passed": ok, "value": value, "threshold": g.max_primary,
                       "detail": f"{metric} {value:.4f} (must be <= {g.max_primary:g})"})
    champ_value, improvement = None, None
    if g.max_regression is not None:
        if champion_version is None:
            checks.append({"what": "no_regression", "passed": True, "value": None, "threshold": -g.max_regression,
                           "detail": "no champion yet: value thresholds only"})
        elif champion is None or len(champion) != len(y):
            checks.append({"what": "no_regression", "passed": False, "value": None, "threshold": -g.max_regression,
                           "detail": f"champion v{champion_version} could not be scored on the set: cannot tell "
                                     "whether the challenger regresses"})
        else:
            champ_value = float(m.value(y, champion))
            iv = paired_bootstrap(m, y, challenger, champion, g.resamples,
                                  spec.gate.get("confidence", 0.95), spec.seed, clusters)
            improvement = {"estimate": iv.estimate, "low": iv.low, "high": iv.high, "confidence": iv.confidence,
                           "resamples": iv.resamples}
            if not iv.defined:
                ok, why = False, "improvement undefined on the set's resamples: cannot tell signal from noise"
            else:
                ok = iv.high >= -g.max_regression
                why = ("worse beyond noise and tolerance" if not ok else "no regression beyond noise and tolerance")
            checks.append({"what": "no_regression", "passed": ok, "value": iv.high, "threshold": -g.max_regression,
                           "detail": f"vs champion v{champion_version} {champ_value:.4f}: improvement "
                                     f"{iv.estimate:+.4f}, {iv.confidence:.0%} CI [{iv.low:+.4f}, {iv.high:+.4f}]; "
                                     f"upper bound must be >= {-g.max_regression:g} ({why})"})
    passed = all(c["passed"] for c in checks) and bool(checks)
    detail = (f"golden set {g.name} ({len(y)} rows" + (f", {positives} positives" if positives is not None else "")
              + f"): challenger {metric} {value:.4f}; " + "; ".join(c["detail"] for c in checks))
    return GoldenResult(g.name, file, sha, len(y), positives, value, champ_value, improvement, passed, detail,
                        checks)


def evaluate_golden(spec: ModelSpec, features: list[str], predict_version: Any, challenger_version: str,
                    champion_version: str | None) -> list[GoldenResult]:
    """Every golden set of the spec, judged for the challenger against the champion.

    `predict_version(version, frame) -> predictions` scores a version on a frame (the gate's: each version
    with its own categories). Fails closed per set: unreadable, changed or incomplete sets do not pass."""
    import numpy as np

    out = []
    for g in spec.golden:
        frame, sha, error = read_golden(g)
        if error is None and frame is not None:
            need = [c for c in [*features, spec.label.column] if c not in frame.columns]
            if need:
                error = (f"golden set {g.name}: {g.file} lacks the column(s) {need} the model needs; freeze a new "
                         "set with the model's inputs and the label")
            elif frame[spec.label.column].isna().any():
                error = f"golden set {g.name}: {int(frame[spec.label.column].isna().sum())} rows have no label"
            elif frame.empty:
                error = f"golden set {g.name}: {g.file} has no rows"
        if error is not None or frame is None:
            log.warning("%s", error)
            out.append(GoldenResult(g.name, str(g.file), sha, detail=f"{error}: not promoted"))
            continue
        y = frame[spec.label.column].to_numpy(dtype="float64")
        chal = champ = None
        try:
            chal = predict_version(challenger_version, frame)
        except Exception as exc:
            log.exception("challenger v%s could not score golden set %s", challenger_version, g.name)
            out.append(GoldenResult(g.name, str(g.file), sha, len(frame),
                                    detail=f"golden set {g.name}: the challenger could not score it ({exc})"))
            continue
        if champion_version is not None:
            try:
                champ = predict_version(champion_version, frame)
            except Exception:
                log.exception("champion v%s could not score golden set %s", champion_version, g.name)
        clusters = frame[spec.entity_key].to_numpy() if spec.entity_key in frame.columns else None
        out.append(judge_golden(spec, g, y, np.asarray(chal), None if champ is None else np.asarray(champ),
                                champion_version, clusters, str(g.file), sha))
    return out
