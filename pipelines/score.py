"""Batch scoring with the `champion` alias: the production log, one file per data interval."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipelines.spec import ModelSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoreResult:
    path: str
    rows: int
    model_version: str
    interval_key: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def score_interval(spec: ModelSpec, validated_dir: Path, repo_path: Path, start: datetime, end: datetime,
                   key: str, scores_dir: Path) -> ScoreResult | None:
    """Score the interval's rows with the champion; None when there is no champion yet."""
    from mlflow import MlflowClient

    from pipelines import model as m
    from pipelines.training import label_rows, with_features

    champ = m.champion(spec.registered_model_name)
    if champ is None:
        log.info("%s: no champion yet; nothing to score for %s", spec.name, key)
        return None
    client = MlflowClient()
    meta_dir = scores_dir / "_champion" / str(champ.version)
    meta_dir.mkdir(parents=True, exist_ok=True)
    meta = Path(client.download_artifacts(champ.run_id, "features.json", str(meta_dir)))
    features = json.loads(meta.read_text())["features"]
    if spec.label.kind == "column":
        rows = label_rows(spec, validated_dir, start, end, with_label=False)
    else:
        # entity-snapshot models score every active entity once, as of the interval's end
        rows = label_rows(spec, validated_dir, end, end + timedelta(days=1), with_label=False)
    if rows.empty:
        raise ValueError(f"{spec.name}: no validated rows for {key}; was the batch blocked?")
    frame = with_features(spec, repo_path, rows)
    booster = m.load_version(spec.registered_model_name, champ.version)
    frame["prediction"] = m.predict(booster, m.to_matrix_frame(frame, spec, features))
    frame["model_version"] = str(champ.version)
    frame["scored_for"] = key
    out = scores_dir / f"{key}.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(out)
    log.info("%s: scored %d rows for %s with v%s", spec.name, len(frame), key, champ.version)
    return ScoreResult(str(out), len(frame), str(champ.version), key)


def read_scores(scores_dir: Path, start: datetime, end: datetime) -> Any:
    """The production log of the intervals that start in [start, end)."""
    import pandas as pd

    frames = []
    for p in sorted(scores_dir.glob("*.parquet")):
        key = datetime.fromisoformat(p.stem).replace(tzinfo=start.tzinfo)
        if start <= key < end:
            frames.append(pd.read_parquet(p))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
