"""Row features of any contract column type: high-cardinality strings are categorical with the categories
seen at training, recorded with the version (categories.json) and applied identically when it scores."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines import model as m
from pipelines.spec import REPO_ROOT, ColumnRule, ModelSpec, load_specs
from pipelines.training import LABEL

pytestmark = pytest.mark.unit

BASE = load_specs(REPO_ROOT / "models")["fraud"]
TITLES = np.array([f"title-{i:03d}" for i in range(500)], dtype=object)
RISKY = set(TITLES[::7])                               # 72 of the 500 titles carry the signal
PARAMS = {"num_boost_round": 60, "early_stopping_rounds": 15, "max_depth": 4, "eta": 0.3}


def title_spec(extra: tuple[ColumnRule, ...] = ()) -> ModelSpec:
    """The fraud spec on a contract with a free-text `title` column (no allowed set) as a row feature,
    next to `amount` (float) and `channel` (string with an allowed set)."""
    dataset = dataclasses.replace(BASE.dataset, columns=(*BASE.dataset.columns, ColumnRule("title", "string"),
                                                         *extra))
    return dataclasses.replace(BASE, dataset=dataset, row_features=("amount", "channel", "title",
                                                                    *(c.name for c in extra)))


SPEC = title_spec()
FEATURES = ["amount", "channel", "title"]


def rows(n: int, seed: int, titles: np.ndarray = TITLES) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    title = rng.choice(titles, size=n)
    label = (np.isin(title, list(RISKY)) & (rng.random(n) < 0.7)) | (rng.random(n) < 0.02)
    return pd.DataFrame({"amount": rng.gamma(2.0, 50.0, n), "title": title,
                         "channel": rng.choice(np.array(["pos", "online", "wallet"], dtype=object), size=n),
                         LABEL: label.astype("float64")})


@pytest.fixture(scope="module")
def trained():
    train = rows(20_000, seed=1)
    cats = m.fit_categories(SPEC, train, FEATURES)
    return train, cats, m.fit(SPEC, train, FEATURES, PARAMS, cats)


def test_categories_are_the_training_values_unioned_with_the_allowed_set(trained):
    train, cats, _ = trained
    assert set(cats) == {"channel", "title"}                      # `amount` is numeric
    assert cats["title"] == sorted(TITLES) and len(cats["title"]) == 500
    assert cats["channel"] == ["online", "pos", "wallet"]
    only_pos = m.fit_categories(SPEC, train[train["channel"] == "pos"], FEATURES)
    assert only_pos["channel"] == ["online", "pos", "wallet"]    # the contract's values, even if unseen


def test_a_string_feature_with_500_values_trains_and_predicts(trained):
    from sklearn.metrics import roc_auc_score

    _, cats, booster = trained
    holdout = rows(4000, seed=2)
    x = m.to_matrix_frame(holdout, SPEC, FEATURES, cats)
    assert isinstance(x["title"].dtype, pd.CategoricalDtype) and list(x["title"].cat.categories) == cats["title"]
    pred = m.predict(booster, x)
    assert np.isfinite(pred).all() and len(pred) == len(holdout)
    # the title carries the signal and it is learnt: close to knowing which titles are risky (~0.90)
    oracle = roc_auc_score(holdout[LABEL], holdout["title"].isin(RISKY))
    assert roc_auc_score(holdout[LABEL], pred) > oracle - 0.02 and oracle > 0.85
    assert x.attrs["unseen_categories"] == {"channel": 0, "title": 0}


def test_unseen_categories_score_as_missing_and_are_counted(trained, caplog):
    _, cats, booster = trained
    scoring = rows(200, seed=3)
    scoring.loc[:29, "title"] = [f"brand-new-{i}" for i in range(30)]
    scoring.loc[30:34, "title"] = None                          # missing is not "unseen"
    with caplog.at_level(logging.WARNING, logger="pipelines.model"):
        x = m.to_matrix_frame(scoring, SPEC, FEATURES, cats)
    pred = m.predict(booster, x)
    assert np.isfinite(pred).all()
    assert x.attrs["unseen_categories"] == {"channel": 0, "title": 30}
    assert "30 of 200 value(s) of `title` were not seen at training" in caplog.text
    as_missing = scoring.assign(title=None)
    np.testing.assert_array_equal(pred[:30], m.predict(booster, m.to_matrix_frame(as_missing, SPEC, FEATURES,
                                                                                    cats))[:30])


def test_the_same_value_gets_the_same_prediction_whatever_else_is_scored(trained):
    train, cats, booster = trained
    at_training = m.predict(booster, m.to_matrix_frame(train, SPEC, FEATURES, cats))
    # score a few training rows later, alone and in another order, among values the batch has never seen
    picked = [17, 3, 4000, 12_345]
    batch = pd.concat([rows(50, seed=9, titles=np.array(["other-a", "other-b"], dtype=object)),
                       train.iloc[picked[::-1]]], ignore_index=True)
    scored = m.predict(booster, m.to_matrix_frame(batch, SPEC, FEATURES, cats))
    np.testing.assert_array_equal(scored[-4:], at_training[picked[::-1]])
    one = m.predict(booster, m.to_matrix_frame(train.iloc[[12_345]], SPEC, FEATURES, cats))
    assert one[0] == at_training[12_345]


def test_timestamp_and_int_row_features_are_numeric():
    spec = title_spec((ColumnRule("opened_at", "timestamp"), ColumnRule("customer_id", "int")))
    df = pd.DataFrame({"amount": ["12.5", None], "channel": ["pos", "pos"], "title": ["x", "y"],
                       "opened_at": pd.to_datetime(["1970-01-02T00:00:00Z", None], utc=True),
                       "customer_id": [7, 8]})
    x = m.to_matrix_frame(df, spec, ["amount", "opened_at", "customer_id", "title"], {"title": ["x"]})
    assert x["opened_at"].iloc[0] == 86_400.0 and math.isnan(x["opened_at"].iloc[1])
    assert x["customer_id"].tolist() == [7.0, 8.0] and x["amount"].iloc[0] == 12.5
    assert x.attrs["unseen_categories"] == {"title": 1}


def test_a_version_without_recorded_categories_uses_the_contract_allowed_sets():
    df = rows(5, seed=4)
    x = m.to_matrix_frame(df, SPEC, FEATURES, None)
    assert list(x["channel"].cat.categories) == [str(v) for v in SPEC.dataset.column("channel").allowed]
    assert x["title"].dtype == "float64" and x["title"].isna().all()     # as such a version was trained


# --- recorded with the version in MLflow, and read back where it scores --------------------------------


@pytest.fixture
def tracking(tmp_path, monkeypatch):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.create_experiment(f"flywheel/{SPEC.name}", artifact_location=(tmp_path / "artifacts").as_uri())
    yield mlflow
    # back to the environment's URI (None): a URI set here would outlive the test and override every later
    # MLFLOW_TRACKING_URI of the session (the integration tests' servers)
    mlflow.set_tracking_uri(None)


def _training_set(tmp_path: Path, train: pd.DataFrame, holdout: pd.DataFrame) -> dict:
    train.to_parquet(tmp_path / "train.parquet", index=False)
    holdout.to_parquet(tmp_path / "holdout.parquet", index=False)
    return {"train_path": str(tmp_path / "train.parquet"), "holdout_path": str(tmp_path / "holdout.parquet"),
            "train_rows": len(train), "holdout_rows": len(holdout), "train_sha256": "t", "holdout_sha256": "h",
            "window": {"train_start": "2024-01-01T00:00:00+00:00", "holdout_start": "2024-02-01T00:00:00+00:00",
                       "labelled_until": "2024-02-08T00:00:00+00:00"}}


def test_categories_round_trip_through_the_registered_version(tracking, tmp_path):
    train, holdout = rows(6000, seed=5), rows(1500, seed=6)
    holdout.loc[:9, "title"] = "never-seen"
    tv = m.train_and_register(SPEC, _training_set(tmp_path, train, holdout), FEATURES, PARAMS, "run-1",
                              tmp_path / "ref", "test")
    assert math.isfinite(tv.metrics["holdout_average_precision"]) and "holdout_roc_auc" in tv.metrics
    recorded = m.load_categories(SPEC.registered_model_name, tv.version)
    assert recorded == m.fit_categories(SPEC, train, FEATURES)
    client = tracking.MlflowClient()
    meta = json.loads(Path(client.download_artifacts(tv.run_id, "features.json", str(tmp_path / "d"))).read_text())
    assert meta == {"features": FEATURES, "categorical": ["channel", "title"]}
    # scored as the gate and the scorer do (registry booster + recorded categories) = scored at training
    ref = pd.read_parquet(client.download_artifacts(tv.run_id, "reference/reference.parquet", str(tmp_path / "d")))
    booster = m.load_version(SPEC.registered_model_name, tv.version)
    rescored = m.predict(booster, m.to_matrix_frame(ref, SPEC, FEATURES, recorded))
    np.testing.assert_allclose(rescored, ref["prediction"].to_numpy(), rtol=0, atol=1e-7)
    held = m.to_matrix_frame(holdout, SPEC, FEATURES, recorded)
    assert held.attrs["unseen_categories"]["title"] == 10 and np.isfinite(m.predict(booster, held)).all()


def test_a_version_trained_before_categories_json_falls_back_to_the_contract(tracking, tmp_path):
    import mlflow.xgboost

    train = rows(3000, seed=7)
    old = m.fit(SPEC, train, FEATURES, PARAMS, m.contract_categories(SPEC, FEATURES))   # how it was trained
    with tracking.start_run() as run:
        tracking.log_dict({"features": FEATURES, "categorical": {"channel": ["pos", "online", "wallet"]}},
                          "features.json")
        info = mlflow.xgboost.log_model(old, name="model", pip_requirements=m.PIP_REQUIREMENTS,
                                        registered_model_name=SPEC.registered_model_name)
    assert m.run_categories(tracking.MlflowClient(), run.info.run_id) is None
    version = str(info.registered_model_version)
    assert m.load_categories(SPEC.registered_model_name, version) is None
    scoring = rows(300, seed=8)
    loaded = m.load_version(SPEC.registered_model_name, version)
    got = m.predict(loaded, m.to_matrix_frame(scoring, SPEC, FEATURES, m.load_categories(SPEC.registered_model_name,
                                                                                           version)))
    want = m.predict(old, m.to_matrix_frame(scoring, SPEC, FEATURES, m.contract_categories(SPEC, FEATURES)))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-7)


@pytest.mark.parametrize(("metric", "centre"), [("rmse", "mean"), ("mae", "median")])
def test_a_regression_learns_what_its_primary_metric_rewards(metric, centre):
    """Judged on RMSE, a model must learn the conditional mean (squared error); on MAE, the median. With labels
    skewed like star ratings and no signal in the features, the prediction sits on the mean or the median: a
    model trained for the median and judged on RMSE failed its own gate (it used to be absolute error always)."""
    spend = load_specs(REPO_ROOT / "models")["spend"]
    spec = dataclasses.replace(spend, primary_metric=metric, row_features=("amount",))
    rng = np.random.default_rng(5)
    y = rng.choice([1.0, 4.0, 4.5, 5.0], p=[0.3, 0.3, 0.2, 0.2], size=4000)   # mean 3.55, median 4.0
    train = pd.DataFrame({"amount": rng.gamma(2.0, 50.0, len(y)), LABEL: y})
    booster = m.fit(spec, train, ["amount"], {"num_boost_round": 50, "early_stopping_rounds": 10, "max_depth": 2})
    pred = m.predict(booster, m.to_matrix_frame(train, spec, ["amount"], {}))
    want = float(np.mean(y)) if centre == "mean" else float(np.median(y))
    assert abs(float(np.median(pred)) - want) < 0.15, (metric, float(np.median(pred)), want)
