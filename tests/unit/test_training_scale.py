"""Training at scale: a model fitted on a weighted sample of negatives stays calibrated on the unsampled holdout,
QuantileDMatrix trains the same model as DMatrix, and the MLflow run and the model card say how it was sampled."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines import model as m
from pipelines import tags
from pipelines.metrics import values
from pipelines.model_card import card_facts, card_markdown
from pipelines.spec import REPO_ROOT, SamplingSpec, load_specs
from pipelines.training import LABEL, WEIGHT, TrainingSample, sample_mask, sample_weights

pytestmark = pytest.mark.unit

FRAUD = load_specs(REPO_ROOT / "models")["fraud"]
SAMPLING = SamplingSpec("negatives", 0.1, FRAUD.seed)
SPEC = dataclasses.replace(FRAUD, sampling=SAMPLING)
FEATURES = ["amount", "channel", "category", "risk"]        # `risk`: a numeric feature, as a view would give it
PARAMS = {"num_boost_round": 100, "early_stopping_rounds": 10, "max_depth": 3, "eta": 0.3}


def population(n: int, seed: int) -> pd.DataFrame:
    """Rows of a rare-positive binary problem (~3% positives) in time order, with row ids."""
    rng = np.random.default_rng(seed)
    channel = rng.choice(np.array(["pos", "online", "wallet"], dtype=object), n)
    amount = rng.lognormal(3.5, 0.8, n)
    risk = rng.normal(size=n)
    z = -5.6 + 1.3 * risk + 0.9 * (channel == "online") + 0.3 * np.log(amount)
    return pd.DataFrame({"transaction_id": [f"t{seed}-{i:06d}" for i in range(n)], "amount": amount,
                         "channel": channel, "risk": risk,
                         "category": rng.choice(np.array(FRAUD.dataset.column("category").allowed, dtype=object), n),
                         LABEL: (rng.random(n) < 1 / (1 + np.exp(-z))).astype("float64")})


def sampled(frame: pd.DataFrame, sampling: SamplingSpec = SAMPLING) -> pd.DataFrame:
    """The training rows `sampling` keeps, with their weights, as build_training_set writes them."""
    kept = frame[sample_mask(sampling, frame["transaction_id"], frame[LABEL])].reset_index(drop=True)
    return kept.assign(**{WEIGHT: sample_weights(sampling, kept[LABEL])})


TRAIN, HOLDOUT = population(60_000, seed=1), population(30_000, seed=2)
SAMPLED = sampled(TRAIN)


def holdout_predictions(train: pd.DataFrame, **kw) -> np.ndarray:
    cats = m.fit_categories(SPEC, train, FEATURES)
    booster = m.fit(SPEC, train, FEATURES, PARAMS, cats, **kw)
    return m.predict(booster, m.to_matrix_frame(HOLDOUT, SPEC, FEATURES, cats))


def test_the_sample_is_mostly_positives_and_weighs_as_the_window():
    rate = TRAIN[LABEL].mean()
    assert 0.02 < rate < 0.05
    assert SAMPLED[LABEL].sum() == TRAIN[LABEL].sum()                  # every positive
    assert SAMPLED[LABEL].mean() > 4 * rate                             # the sample is far from the base rate
    assert SAMPLED[WEIGHT].sum() == pytest.approx(len(TRAIN), rel=0.03)


def test_a_weighted_fit_on_sampled_negatives_is_calibrated_on_the_full_holdout():
    """The holdout is never sampled: a model trained on 10% of the negatives, each weighted 10, predicts the base
    rate on average and ranks about as well as one trained on every row; without the weights it would predict
    several times the base rate."""
    rate = HOLDOUT[LABEL].mean()
    weighted = holdout_predictions(SAMPLED)
    assert abs(weighted.mean() - rate) < 0.15 * rate, (weighted.mean(), rate)
    unweighted = holdout_predictions(SAMPLED.drop(columns=WEIGHT))
    assert unweighted.mean() > 2.5 * rate, (unweighted.mean(), rate)
    full = holdout_predictions(TRAIN)
    y = HOLDOUT[LABEL].to_numpy()
    ap_sampled = values("binary", y, weighted)["average_precision"]
    ap_full = values("binary", y, full)["average_precision"]
    assert ap_sampled > ap_full - 0.03, (ap_sampled, ap_full)
    # calibrated across the range too: the predicted and observed rates agree in each fifth of the scores
    order = np.argsort(weighted)
    for part in np.array_split(order, 5):
        assert abs(weighted[part].mean() - y[part].mean()) < 0.3 * y[part].mean() + 0.004


def test_quantile_dmatrix_trains_the_same_model_as_dmatrix(monkeypatch):
    """The matrix is a memory choice, not a model change: same categories, same trees, whether the frame goes to
    XGBoost whole or in chunks."""
    d = holdout_predictions(SAMPLED, quantile=False)
    np.testing.assert_allclose(holdout_predictions(SAMPLED, quantile=True), d, rtol=0, atol=1e-6)
    monkeypatch.setattr(m, "TRAIN_CHUNK_ROWS", 2000)        # the ~7,700 rows in 4 chunks
    np.testing.assert_allclose(holdout_predictions(SAMPLED, quantile=True), d, rtol=0, atol=1e-6)


# ---- the MLflow run and the card

@pytest.fixture(scope="module")
def tracking(tmp_path_factory):
    """One MLflow registry on SQLite for the module (creating its tables costs seconds)."""
    from mlflow_sqlite import sqlite_tracking

    tmp = tmp_path_factory.mktemp("scale-mlflow")
    with sqlite_tracking(tmp) as client:
        client.create_experiment(f"flywheel/{SPEC.name}", artifact_location=(tmp / "artifacts").as_uri())
        yield client


def training_set(folder: Path, train: pd.DataFrame, record: dict | None) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    train.to_parquet(folder / "train.parquet", index=False)
    HOLDOUT.to_parquet(folder / "holdout.parquet", index=False)
    return {"train_path": str(folder / "train.parquet"), "holdout_path": str(folder / "holdout.parquet"),
            "train_rows": len(train), "holdout_rows": len(HOLDOUT), "train_sha256": "t", "holdout_sha256": "h",
            "window": {"train_start": "2026-01-01T00:00:00+00:00", "holdout_start": "2026-02-05T00:00:00+00:00",
                       "labelled_until": "2026-02-07T00:00:00+00:00"}, "sampling": record}


def test_the_run_and_the_card_say_how_the_training_set_was_sampled(tracking, tmp_path):
    from datetime import UTC, datetime

    counted = TrainingSample(SAMPLING, datetime(2026, 2, 5, tzinfo=UTC))
    counted.rows_before, counted.rows_after = len(TRAIN), len(SAMPLED)
    tv = m.train_and_register(SPEC, training_set(tmp_path / "set", SAMPLED, counted.record()), FEATURES, PARAMS,
                              "run-1", tmp_path / "ref", "test")
    client = tracking
    run = client.get_run(tv.run_id)
    assert {k: v for k, v in run.data.tags.items() if k.startswith("flywheel.sampling.")} == {
        tags.SAMPLING_RULE: "negatives", tags.SAMPLING_FRACTION: "0.1", tags.SAMPLING_WEIGHT: "10",
        tags.SAMPLING_ROWS_BEFORE: str(len(TRAIN)), tags.SAMPLING_ROWS_AFTER: str(len(SAMPLED))}
    assert run.data.params["train_rows"] == str(len(SAMPLED)) and run.data.params["holdout_rows"] == "30000"
    # holdout metrics are on the unsampled holdout: calibrated there
    assert abs(tv.metrics["holdout_positive_rate"] - HOLDOUT[LABEL].mean()) < 1e-12
    # the drift reference stands for the scored population, not the positive-rich sample
    ref = pd.read_parquet(client.download_artifacts(tv.run_id, "reference/reference.parquet", str(tmp_path / "d")))
    assert len(ref) == min(len(SAMPLED), SPEC.drift.reference_rows)
    assert abs(ref["prediction"].mean() - TRAIN[LABEL].mean()) < 0.25 * TRAIN[LABEL].mean()
    assert SAMPLED[LABEL].mean() > 4 * TRAIN[LABEL].mean()

    md = card_markdown(SPEC, card_facts(SPEC, tv.version, tmp_path / "card"))
    line = next(x for x in md.splitlines() if x.startswith("| sampling |"))
    assert "`negatives`: every positive and 10% of the negatives" in line
    assert f"seed {SPEC.seed}" in line and "weighted 10 in training and early stopping" in line
    assert f"{len(SAMPLED):,} of {len(TRAIN):,} training rows kept" in line
    assert "The holdout is never sampled: 30,000 rows" in line
    assert "Trained on a sample of the negatives" in md


def test_an_unsampled_run_says_every_row(tracking, tmp_path):
    train = TRAIN.head(8000)
    tv = m.train_and_register(FRAUD, training_set(tmp_path / "set", train, None), FEATURES, PARAMS, "run-2",
                              tmp_path / "ref", "test")
    run = tracking.get_run(tv.run_id)
    assert run.data.tags[tags.SAMPLING_RULE] == "none"
    assert run.data.tags[tags.SAMPLING_ROWS_BEFORE] == run.data.tags[tags.SAMPLING_ROWS_AFTER] == "8000"
    md = card_markdown(FRAUD, card_facts(FRAUD, tv.version, tmp_path / "card"))
    assert ("| sampling | none: every labelled row of the training window. The holdout is never sampled: "
            "30,000 rows") in md
    assert "Trained on a sample" not in md
    assert math.isfinite(tv.metrics["holdout_average_precision"])
