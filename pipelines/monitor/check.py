"""The monitor stage as the DAG runs it (`check_drift`): the production log of the last window vs the
champion's training reference, performance on the labels now due, the retrain decision, the verdict.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines import storage
from pipelines.monitor.drift import PREDICTION_COLUMN, compute_drift
from pipelines.monitor.performance import _gate_value, performance_drift
from pipelines.monitor.policy import decide_retrain, needs_email, plan_email
from pipelines.monitor.reports import list_reports, record_verdict

if TYPE_CHECKING:
    from pipelines.monitor.results import DriftResult, EmailPlan, RetrainDecision
    from pipelines.spec import ModelSpec
    from pipelines.storage import Location

log = logging.getLogger(__name__)


def scored_rows(spec: ModelSpec, scores_dir: Location, start: datetime, end: datetime) -> Any:
    """The production log of the window: the batch scores of the intervals overlapping [start, end)
    (`pipelines.score.read_scores`) and the online endpoint's rows of the same intervals
    (`pipelines.serving.log.read_online`), with a `source` column, batch or online. An online row whose row id
    the batch log also holds (a request for a transaction that later landed in a batch) is counted once, as its
    batch row: the monitor judges each event once."""
    import pandas as pd

    from pipelines.score import read_scores
    from pipelines.serving.log import SOURCE, read_online

    batch = read_scores(scores_dir, start, end, spec.dataset.cadence)
    online = read_online(scores_dir, start, end, spec.dataset.cadence)
    if len(batch):
        batch = batch.assign(**{SOURCE: "batch"})
    if len(online) == 0:
        return batch
    rid = spec.dataset.row_id
    if len(batch) and rid in batch.columns and rid in online.columns:
        seen = set(batch[rid].astype(str))
        online = online[~online[rid].astype(str).isin(seen)]
    log.info("%s: %d batch and %d online scored rows in %s -> %s", spec.name, len(batch), len(online),
             start.isoformat(), end.isoformat())
    return pd.concat([batch, online], ignore_index=True) if len(batch) else online.reset_index(drop=True)


def check_drift(
    spec: ModelSpec,
    scores_dir: Location,
    reports_dir: Location,
    interval_end: datetime,
    key: str,
    *,
    validated_dir: Location | None = None,
    retrain_in_flight: int = 0,
    download_dir: Path | None = None,
) -> tuple[DriftResult, RetrainDecision, EmailPlan]:
    """Drift and performance of the last `drift.window_days` of scores vs the champion; retrain or not; email
    the owners or not (one email per alarm episode: `plan_email`).

    `validated_dir` (the model's validated batches) is where delayed labels are read from; None skips
    the performance part. `retrain_in_flight` is the number of `train__<model>` runs queued or running
    (the DAG asks Airflow). Writes <key>.html, <key>.json and the index line; returns the verdict and
    the decision. Scores, validated batches and reports are local paths or URIs (pipelines/storage.py).
    The champion's features.json and training reference are downloaded from MLflow into `download_dir`
    (local); by default reports_dir/_champion/<key> when reports_dir is local, else a temporary folder.
    Returns the verdict, the retrain decision and the email plan.
    """
    import pandas as pd

    from pipelines.model import champion_info
    from pipelines.score import join_delayed_labels, label_join_unsupported
    from pipelines.serving.log import SOURCE

    if download_dir is None and not storage.is_remote(reports_dir):
        download_dir = storage.local_path(reports_dir) / "_champion" / key
    with tempfile.TemporaryDirectory(prefix="flywheel-champion-") as tmp:
        champ = champion_info(spec.registered_model_name, download_dir or Path(tmp))
        reference = pd.read_parquet(champ.reference_path) if champ is not None else None
    if champ is None or reference is None:
        raise ValueError(f"{spec.name}: no champion, so no reference to compare with; train a model first.")
    start = interval_end - timedelta(days=spec.drift.window_days)
    current = scored_rows(spec, scores_dir, start, interval_end)
    if len(current) == 0:
        raise ValueError(
            f"{spec.name}: no scored rows in {start.isoformat()} → {interval_end.isoformat()} under {scores_dir}; "
            "check that score__<model> ran for this interval (or that the batch was not blocked)."
        )
    result = compute_drift(
        reference,
        current,
        champ.features,
        champ.categorical,
        spec,
        reports_dir,
        key,
        champ.version,
        start,
        interval_end,
    )

    unsupported = label_join_unsupported(spec)
    if validated_dir is None:
        perf = performance_drift(spec, None, None, None, unavailable="no validated batches given: not checked")
    elif unsupported:
        perf = performance_drift(spec, None, None, None, unavailable=unsupported)
    else:
        labelled = join_delayed_labels(spec, current, validated_dir, interval_end)
        perf = performance_drift(
            spec,
            labelled["label"],
            labelled[PREDICTION_COLUMN],
            _gate_value(spec.registered_model_name, champ.version),
            rows_pending=len(current) - len(labelled),
        )
    by_source = ({str(k): int(v) for k, v in current[SOURCE].value_counts().items()}
                 if SOURCE in current.columns else {"batch": len(current)})
    if SOURCE in current.columns and validated_dir is not None and not unsupported:
        perf = {**perf, "labelled_rows_online": int((labelled[SOURCE] == "online").sum())}
    result = replace(result, performance=perf, rows_by_source=by_source)

    trained_at = datetime.fromisoformat(champ.trained_as_of) if champ.trained_as_of else None
    history = list_reports(reports_dir)
    decision = decide_retrain(
        result, spec, trained_at, interval_end, history=history, retrain_in_flight=retrain_in_flight
    )
    plan = plan_email(key, result.interval_end, needs_email(result, decision), history,
                      mode=spec.drift.alerts, cooldown_days=spec.drift.cooldown_days)
    record_verdict(reports_dir, key, result, decision, spec, plan)
    log.info(
        "%s drift %s: %.0f%% columns drifted; performance %s; %s; email: %s (%s)",
        spec.name,
        key,
        100 * result.drifted_share,
        perf.get("status"),
        decision.reason,
        plan.kind,
        plan.reason,
    )
    return result, decision, plan
