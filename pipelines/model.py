"""XGBoost training, metrics and MLflow tracking/registry for any spec.

Row features of any contract column type become model inputs (`to_matrix_frame`): `string` columns
are categorical, `timestamp` columns seconds since the epoch, the rest floats. The categories of each
string row feature are every value seen in the training rows, unioned with the contract's allowed set
when it has one, sorted (`fit_categories`). They are recorded with the version (the MLflow artifact
`categories.json`) and applied wherever the version predicts (training holdout, gate, scoring), so a
value gets the same code at training and at scoring; a value unseen at training is scored as missing
(and counted in the log), never a crash. A version trained before categories were recorded has no
`categories.json`: it falls back to the contract's allowed sets, as it was trained.
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines import tags
from pipelines.spec import REPO_ROOT, ModelSpec
from pipelines.training import LABEL, WEIGHT
from pipelines.util import sha256_file

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy as np
    import pandas as pd
    import xgboost as xgb

log = logging.getLogger(__name__)

CHAMPION = "champion"
CATEGORIES_ARTIFACT = "categories.json"
PIP_REQUIREMENTS = ["xgboost==3.2.0", "pandas<3", "numpy"]
TRAIN_CHUNK_ROWS = 1_000_000   # rows of `to_matrix_frame` built at a time for a QuantileDMatrix (bench/training.py)


def configure_mlflow_env() -> None:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def code_version(repo: Path = REPO_ROOT) -> str:
    """The git SHA of the code that trained the model ("unknown" outside a git checkout)."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _row_features_of_type(spec: ModelSpec, features: list[str], kind: str) -> list[str]:
    """The model's row features whose contract column has type `kind`, in feature order."""
    out = []
    for name in features:
        if name not in spec.row_features:
            continue
        try:
            rule = spec.dataset.column(name)
        except KeyError:
            continue
        if rule.type == kind:
            out.append(name)
    return out


def contract_categories(spec: ModelSpec, features: list[str]) -> dict[str, list[str]]:
    """String row features with an allowed set in the dataset contract, with that set in contract order:
    the categories of a version trained before `categories.json` was recorded (it was trained with these)."""
    out = {}
    for name in _row_features_of_type(spec, features, "string"):
        allowed = spec.dataset.column(name).allowed
        if allowed:
            out[name] = [str(v) for v in allowed]
    return out


def _as_text(col: pd.Series) -> pd.Series:
    """A string column as text (missing stays missing), so 5 and "5" are one category."""
    return col.astype("string")


def fit_categories(spec: ModelSpec, train: pd.DataFrame, features: list[str]) -> dict[str, list[str]]:
    """The categories of every string row feature: each value seen in the training rows, unioned with the
    contract's allowed set when it has one, sorted (the codes XGBoost sees follow this order)."""
    out = {}
    for name in _row_features_of_type(spec, features, "string"):
        seen = set(_as_text(train[name]).dropna().unique().tolist()) if name in train.columns else set()
        allowed = spec.dataset.column(name).allowed or ()
        out[name] = sorted(seen | {str(v) for v in allowed})
    return out


def to_matrix_frame(df: pd.DataFrame, spec: ModelSpec, features: list[str],
                    categories: dict[str, list[str]] | None = None) -> pd.DataFrame:
    """The model's input frame: fixed column order; string row features as categoricals with the version's
    `categories` (from `fit_categories` at training, `load_categories` afterwards; None: a version from
    before they were recorded, which uses the contract's allowed sets); timestamp row features as seconds
    since the epoch; floats elsewhere.

    A value unseen at training becomes missing (XGBoost's missing branch), never an error; the count of
    such values per column is logged and kept in `frame.attrs["unseen_categories"]`."""
    import pandas as pd

    cats = categories if categories is not None else contract_categories(spec, features)
    timestamps = set(_row_features_of_type(spec, features, "timestamp"))
    out = pd.DataFrame(index=df.index)
    unseen: dict[str, int] = {}
    for name in features:
        if name in cats:
            text = _as_text(df[name])
            col = pd.Categorical(text, categories=cats[name])
            unseen[name] = int((text.notna().to_numpy() & (col.codes == -1)).sum())
            out[name] = col
        elif name in timestamps:
            ts = pd.to_datetime(df[name], utc=True, errors="coerce")
            out[name] = (ts - pd.Timestamp(0, tz="UTC")).dt.total_seconds().astype("float64")
        else:
            out[name] = pd.to_numeric(df[name], errors="coerce").astype("float64")
    for name, count in unseen.items():
        if count:
            log.warning("%s: %d of %d value(s) of `%s` were not seen at training; scored as missing",
                        spec.name, count, len(df), name)
    out.attrs["unseen_categories"] = unseen
    return out


def metrics_for(spec: ModelSpec, y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Every registered metric of the spec's task (pipelines/metrics.py; NaN where undefined: empty or
    one-class data, non-finite predictions, and the gate fails closed), plus the report-only
    `positive_rate` of a classifier."""
    import numpy as np

    from pipelines.metrics import values

    y = np.asarray(y, dtype=np.float64)
    out = values(spec.task, y, pred)
    if spec.task == "binary":
        out["positive_rate"] = float(np.mean(y)) if len(y) else math.nan
    return out


def predict(booster: xgb.Booster, frame: pd.DataFrame) -> np.ndarray:
    """The booster's predictions for `frame` (from `to_matrix_frame`), in place: no DMatrix is built (the same
    values as `booster.predict(DMatrix(frame, enable_categorical=True))`, ~15% less time at 1M rows)."""
    import numpy as np

    return np.asarray(booster.inplace_predict(frame))


def single_row_latency_ms(booster: xgb.Booster, frame: pd.DataFrame, samples: int = 300,
                          warmup: int = 10, rounds: int = 3) -> dict[str, float]:
    """Latency of predicting one row at a time as an online scorer would (one thread, the booster's
    in-place prediction on a one-row frame: same values as `predict`), over `samples` rows of `frame`
    (cycled) after `warmup` untimed calls, in milliseconds.

    Each call is timed in CPU time of the scoring thread (`time.thread_time`): the model's own cost, which a
    busy host's waits for the CPU do not inflate (a gate on wall time rejected good models on a loaded
    machine). The samples are timed in `rounds` blocks and `p95_ms` is the lowest block's p95 (as `timeit`
    reports its best repeat); `p95_all_ms` is the p95 over every sample and `p95_wall_ms` the wall-clock p95,
    for the record."""
    import time

    import numpy as np

    nan = float("nan")
    if len(frame) == 0 or samples <= 0:
        return {"p50_ms": nan, "p95_ms": nan, "p95_all_ms": nan, "p99_ms": nan, "p95_wall_ms": nan, "samples": 0.0}
    scorer = booster.copy()          # the caller's booster keeps its own thread setting
    scorer.set_param({"nthread": 1})
    rows = [frame.iloc[[i % len(frame)]] for i in range(samples + warmup)]
    cpu, wall = [], []
    for i, row in enumerate(rows):
        t, w = time.thread_time(), time.perf_counter()
        scorer.inplace_predict(row)
        if i >= warmup:
            cpu.append((time.thread_time() - t) * 1000.0)
            wall.append((time.perf_counter() - w) * 1000.0)
    blocks = [b for b in np.array_split(np.array(cpu), max(1, min(rounds, len(cpu)))) if len(b)]
    p50, p95_all, p99 = np.percentile(cpu, [50, 95, 99])
    return {"p50_ms": float(p50), "p95_ms": float(min(np.percentile(b, 95) for b in blocks)),
            "p95_all_ms": float(p95_all), "p99_ms": float(p99), "p95_wall_ms": float(np.percentile(wall, 95)),
            "samples": float(len(cpu))}


def library_versions() -> dict[str, str]:
    """Versions of what trains and serves the model (recorded on every run for reproducibility)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for dist in ("xgboost", "mlflow", "pandas", "numpy", "scikit-learn", "pyarrow", "feast"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "absent"
    return out


def fit(spec: ModelSpec, train: pd.DataFrame, features: list[str], params: dict[str, Any],
        categories: dict[str, list[str]] | None = None, *, quantile: bool = True) -> xgb.Booster:
    """XGBoost with early stopping on the newest 15% of the training rows (time order), minimising the objective
    of the spec's primary metric (pipelines/metrics.py: squared error for RMSE, absolute error for MAE,
    logistic for the binary metrics). String row features are categorical with `categories` (default:
    `fit_categories` of `train`).

    A sampled training set (`training.sampling`) carries the column WEIGHT: the fit and the early-stopping
    metric weigh each row by it, so both estimate what the whole window would give (calibrated probabilities,
    the same meaning of `min_child_weight`). With the `hist` tree method the matrices are `xgb.QuantileDMatrix`es
    fed `TRAIN_CHUNK_ROWS` rows of the input frame at a time (the validation one binned with the training one's
    cuts, `ref=`): neither the whole input frame nor a float copy of it is held, so `fit` adds 0.56-0.58x the
    memory of a `DMatrix` at 5-10M rows, for the same trees and ~18% more CPU in a 5-round fit
    (bench/training.py). `quantile=False` builds `DMatrix`es (the bench's comparison, and other tree methods)."""
    import xgboost as xgb

    p = dict(params)
    rounds = int(p.pop("num_boost_round", 200))
    early = int(p.pop("early_stopping_rounds", 20))
    from pipelines.metrics import metric as registered

    primary = registered(spec.primary_metric)   # the objective follows the metric the gate judges
    booster_params = {"objective": primary.objective, "eval_metric": primary.eval_metric, "tree_method": "hist",
                      "seed": spec.seed, "nthread": 2, "max_cat_to_onehot": 1, **p}
    cut = int(len(train) * 0.85)
    cats = fit_categories(spec, train, features) if categories is None else categories
    w = train[WEIGHT].to_numpy(dtype="float64") if WEIGHT in train.columns else None

    def frame(lo: int, hi: int) -> pd.DataFrame:
        return to_matrix_frame(train.iloc[lo:hi], spec, features, cats)

    dtrain, dval = _train_matrices(frame, train[LABEL].to_numpy(), w, cut, booster_params, quantile,
                                   TRAIN_CHUNK_ROWS)
    booster = xgb.train(booster_params, dtrain, num_boost_round=rounds, evals=[(dval, "validation")],
                        early_stopping_rounds=early, verbose_eval=False)
    return booster[: booster.best_iteration + 1]


def _train_matrices(frame: Callable[[int, int], pd.DataFrame], y: np.ndarray, w: np.ndarray | None, cut: int,
                    params: dict[str, Any], quantile: bool, chunk_rows: int) -> tuple[xgb.DMatrix, xgb.DMatrix]:
    """The training matrix (rows before `cut`) and the early-stopping one (from `cut`) of the input frame that
    `frame(lo, hi)` builds for rows [lo, hi), categoricals kept as such: QuantileDMatrix pairs fed chunk by chunk
    when `quantile` and the tree method is `hist`, else DMatrix pairs of the whole frame."""
    import xgboost as xgb

    if not (quantile and params["tree_method"] == "hist"):
        x = frame(0, len(y))
        return (xgb.DMatrix(x.iloc[:cut], label=y[:cut], weight=None if w is None else w[:cut],
                            enable_categorical=True),
                xgb.DMatrix(x.iloc[cut:], label=y[cut:], weight=None if w is None else w[cut:],
                            enable_categorical=True))

    class Chunks(xgb.DataIter):
        """Rows [lo, hi) in chunks of `chunk_rows`, each built when XGBoost asks for it (it passes over them
        twice: to sketch the bin edges, then to bin the rows) and released after."""

        def __init__(self, lo: int, hi: int) -> None:
            self.bounds = [(a, min(a + chunk_rows, hi)) for a in range(lo, hi, chunk_rows)]
            self.at = 0
            super().__init__(release_data=True)

        def next(self, input_data: Callable[..., None]) -> bool:
            if self.at >= len(self.bounds):
                return False
            lo, hi = self.bounds[self.at]
            input_data(data=frame(lo, hi), label=y[lo:hi], weight=None if w is None else w[lo:hi])
            self.at += 1
            return True

        def reset(self) -> None:
            self.at = 0

    dtrain = xgb.QuantileDMatrix(Chunks(0, cut), enable_categorical=True, max_bin=int(params.get("max_bin", 256)))
    return dtrain, xgb.QuantileDMatrix(Chunks(cut, len(y)), enable_categorical=True, ref=dtrain)


@dataclass(frozen=True)
class TrainedVersion:
    model_name: str
    version: str
    run_id: str
    metrics: dict[str, float]
    params: dict[str, Any]
    reused: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _existing_version(client: Any, spec: ModelSpec, run_key: str) -> Any:
    """A version already registered for this orchestrator run (re-runs must not duplicate it)."""
    for mv in client.search_model_versions(f"name='{spec.registered_model_name}'"):
        if mv.tags.get(tags.RUN_KEY) == run_key:
            return mv
    return None


def train_and_register(spec: ModelSpec, training_set: dict[str, Any], features: list[str],
                       params_override: dict[str, Any], run_key: str, reference_dir: Path,
                       reason: str) -> TrainedVersion:
    """Fit, evaluate on the holdout, log everything to MLflow and register a new version."""
    configure_mlflow_env()
    from mlflow import MlflowClient

    client = MlflowClient()
    existing = _existing_version(client, spec, run_key)
    if existing is not None:
        run = client.get_run(existing.run_id)
        log.info("version %s already registered for %s; reusing it", existing.version, run_key)
        return TrainedVersion(spec.registered_model_name, existing.version, existing.run_id,
                              dict(run.data.metrics), dict(run.data.params), reused=True)

    from pipelines.release.cost import measured, record_cost

    with measured() as cost:
        trained = _train_and_log(spec, training_set, features, params_override, run_key, reference_dir, reason)
    as_of = str(training_set.get("as_of") or training_set["window"]["labelled_until"])
    record_cost(client, trained.run_id, "train", cost, datetime.fromisoformat(as_of))
    return trained


def _train_and_log(spec: ModelSpec, training_set: dict[str, Any], features: list[str],
                   params_override: dict[str, Any], run_key: str, reference_dir: Path, reason: str) -> TrainedVersion:
    import mlflow
    import pandas as pd
    from mlflow import MlflowClient

    client = MlflowClient()
    train = pd.read_parquet(training_set["train_path"])
    holdout = pd.read_parquet(training_set["holdout_path"])
    params = {**spec.params, **params_override}
    categories = fit_categories(spec, train, features)
    booster = fit(spec, train, features, params, categories)
    pred = predict(booster, to_matrix_frame(holdout, spec, features, categories))
    metrics = {f"holdout_{k}": v for k, v in metrics_for(spec, holdout[LABEL].to_numpy(), pred).items()}
    metrics["boosted_rounds"] = float(booster.num_boosted_rounds())

    reference_dir.mkdir(parents=True, exist_ok=True)
    # the drift reference stands for the rows the model will score: a sampled training set is drawn by its weights
    weighted = WEIGHT in train.columns
    ref = train[features].sample(n=min(len(train), spec.drift.reference_rows), random_state=spec.seed,
                                 weights=train[WEIGHT] if weighted else None, replace=weighted)
    ref = ref.assign(prediction=predict(booster, to_matrix_frame(ref, spec, features, categories)))
    ref_path = reference_dir / "reference.parquet"
    ref.to_parquet(ref_path, index=False)

    sha = code_version()
    mlflow.set_experiment(f"flywheel/{spec.name}")
    with mlflow.start_run(run_name=f"{spec.name}-{run_key}") as run:
        mlflow.set_tags({tags.MODEL: spec.name, tags.RUN_KEY: run_key, tags.REASON: reason,
                         tags.CODE_VERSION: sha,
                         tags.FEATURE_SERVICE: spec.feature_service,
                         tags.TRAIN_SHA256: training_set["train_sha256"],
                         tags.HOLDOUT_SHA256: training_set["holdout_sha256"],
                         tags.SPEC_SHA256: sha256_file(spec.path),
                         tags.SEED: str(spec.seed),
                         **sampling_tags(training_set),
                         **{f"{tags.LIB_PREFIX}{k}": v for k, v in library_versions().items()},
                         **{f"{tags.WINDOW_PREFIX}{k}": v for k, v in training_set["window"].items()}})
        mlflow.log_params({"seed": spec.seed, **params, "features": ",".join(features),
                           "train_rows": training_set["train_rows"],
                           "holdout_rows": training_set["holdout_rows"]})
        mlflow.log_metrics({k: v for k, v in metrics.items() if math.isfinite(v)})
        mlflow.log_dict({"features": features, "categorical": sorted(categories)}, "features.json")
        mlflow.log_dict(categories, CATEGORIES_ARTIFACT)     # what to_matrix_frame needs to score it
        if spec.explain is not None:   # the card's global importance (pipelines/release/explain.py)
            from pipelines.release.explain import IMPORTANCE_ARTIFACT, global_importance

            hx = to_matrix_frame(holdout, spec, features, categories)
            mlflow.log_dict({"rows": min(spec.explain.importance_rows, len(hx)),
                             "features": global_importance(booster, hx, list(hx.columns), spec.explain.importance_rows,
                                                           spec.seed)}, IMPORTANCE_ARTIFACT)
        mlflow.log_artifact(str(ref_path), artifact_path="reference")
        mlflow.log_artifact(str(spec.path), artifact_path="spec")   # the thresholds the gate used
        info = mlflow.xgboost.log_model(booster, name="model", pip_requirements=PIP_REQUIREMENTS,
                                        registered_model_name=spec.registered_model_name)
        run_id = run.info.run_id
    version = str(info.registered_model_version)
    for k, v in {tags.RUN_KEY: run_key, tags.REASON: reason,
                 tags.TRAINED_UNTIL: training_set["window"]["labelled_until"],
                 # when the retrain happened in data time: the retrain cooldown counts from here
                 tags.TRAINED_AS_OF: str(training_set.get("as_of") or training_set["window"]["labelled_until"]),
                 tags.TRAIN_ROWS: str(training_set["train_rows"]),
                 tags.CODE_VERSION: sha,
                 **{f"{tags.LIB_PREFIX}{k}": v for k, v in library_versions().items() if k in ("xgboost", "mlflow",
                                                                                                 "pandas")}}.items():
        client.set_model_version_tag(spec.registered_model_name, version, k, v)
    log.info("registered %s v%s (run %s): %s", spec.registered_model_name, version, run_id,
             json.dumps({k: round(v, 4) for k, v in metrics.items()}))
    return TrainedVersion(spec.registered_model_name, version, run_id, metrics, params)


def sampling_tags(training_set: dict[str, Any]) -> dict[str, str]:
    """The run tags of how the training rows were sampled (`TrainingSet.sampling`; none: every row was kept)."""
    record = training_set.get("sampling")
    if not record:
        rows = str(training_set["train_rows"])
        return {tags.SAMPLING_RULE: "none", tags.SAMPLING_FRACTION: "1", tags.SAMPLING_WEIGHT: "1",
                tags.SAMPLING_ROWS_BEFORE: rows, tags.SAMPLING_ROWS_AFTER: rows}
    return {tags.SAMPLING_RULE: str(record["rule"]), tags.SAMPLING_FRACTION: f"{record['fraction']:g}",
            tags.SAMPLING_WEIGHT: f"{record['weight']:g}", tags.SAMPLING_ROWS_BEFORE: str(record["train_rows_before"]),
            tags.SAMPLING_ROWS_AFTER: str(record["train_rows_after"])}


def load_version(model_name: str, version: str) -> xgb.Booster:
    configure_mlflow_env()
    import mlflow.xgboost

    return mlflow.xgboost.load_model(f"models:/{model_name}/{version}")


def run_categories(client: Any, run_id: str) -> dict[str, list[str]] | None:
    """The categories recorded with a training run (`categories.json`), or None when the run has none (a
    version trained before they were recorded: `to_matrix_frame` then uses the contract's allowed sets).
    A recorded file that cannot be read raises: the version's inputs would be guessed."""
    import tempfile

    if CATEGORIES_ARTIFACT not in {Path(f.path).name for f in client.list_artifacts(run_id)}:
        log.info("run %s has no %s: the contract's allowed sets are its categories", run_id, CATEGORIES_ARTIFACT)
        return None
    with tempfile.TemporaryDirectory(prefix="flywheel-categories-") as tmp:
        raw = json.loads(Path(client.download_artifacts(run_id, CATEGORIES_ARTIFACT, tmp)).read_text())
    if not isinstance(raw, dict) or not all(isinstance(v, list) for v in raw.values()):
        raise ValueError(f"run {run_id}: {CATEGORIES_ARTIFACT} must map each column to its list of categories")
    return {str(k): [str(c) for c in v] for k, v in raw.items()}


def load_categories(model_name: str, version: str) -> dict[str, list[str]] | None:
    """The categories of a registered version (see `run_categories`), for `to_matrix_frame`."""
    configure_mlflow_env()
    from mlflow import MlflowClient

    client = MlflowClient()
    run_id = client.get_model_version(model_name, str(version)).run_id
    return run_categories(client, run_id) if run_id else None    # no run, no recorded categories


def _not_found(exc: Exception) -> bool:
    return "not found" in str(exc).lower() or "RESOURCE_DOES_NOT_EXIST" in str(exc)


def version_by_alias(client: Any, model_name: str, alias: str) -> Any:
    """The model version behind `alias`, or None when the alias (or the model) does not exist.

    MLflow's basic-auth app (flywheel/mlflow_auth.py) answers an alias lookup on a model that does not exist with 403
    (it has no model to check a permission on), not 404: a 403 is asked again as "does the model exist?", None when
    it does not, the refusal when it does."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(model_name, alias)
    except MlflowException as exc:
        if _not_found(exc):
            return None
        if "error code 403" not in str(exc) and getattr(exc, "error_code", "") != "PERMISSION_DENIED":
            raise
        try:
            client.get_registered_model(model_name)
        except MlflowException as again:
            if _not_found(again):
                return None
        raise


def by_alias(model_name: str, alias: str) -> Any:
    """The model version behind `alias`, or None when the alias (or the model) does not exist."""
    configure_mlflow_env()
    from mlflow import MlflowClient

    return version_by_alias(MlflowClient(), model_name, alias)


def champion(model_name: str) -> Any:
    """The model version behind the `champion` alias, or None when there is none yet."""
    return by_alias(model_name, CHAMPION)


@dataclass(frozen=True)
class ChampionInfo:
    version: str
    run_id: str
    trained_until: str | None      # labels up to here were used
    trained_as_of: str | None      # the (data-time) moment of the retrain: cooldowns count from here
    features: list[str]
    categorical: list[str]
    reference_path: str
    categories: dict[str, list[str]] | None = None   # None: trained before categories.json (contract's sets)


def champion_info(model_name: str, download_dir: Path) -> ChampionInfo | None:
    """The champion's version, training cut-off, inputs and training reference sample (downloaded)."""
    configure_mlflow_env()
    from mlflow import MlflowClient

    champ = champion(model_name)
    if champ is None:
        return None
    client = MlflowClient()
    download_dir.mkdir(parents=True, exist_ok=True)
    meta = json.loads(Path(client.download_artifacts(champ.run_id, "features.json", str(download_dir))).read_text())
    ref = client.download_artifacts(champ.run_id, "reference/reference.parquet", str(download_dir))
    return ChampionInfo(str(champ.version), champ.run_id, champ.tags.get(tags.TRAINED_UNTIL),
                        champ.tags.get(tags.TRAINED_AS_OF) or champ.tags.get(tags.TRAINED_UNTIL),
                        list(meta["features"]), sorted(meta.get("categorical", {})), ref,
                        run_categories(client, str(champ.run_id)))
