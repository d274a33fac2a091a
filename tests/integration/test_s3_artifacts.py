"""MLflow's artifact root can be s3://: a real S3-API server on loopback (moto), boto3, the pinned MLflow."""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.integration


def test_model_artifacts_round_trip_through_s3(s3_server, tmp_path, monkeypatch):
    import boto3
    import mlflow
    import numpy as np
    import xgboost as xgb

    from pipelines.model import PIP_REQUIREMENTS

    s3 = boto3.client("s3", endpoint_url=s3_server)
    s3.create_bucket(Bucket="flywheel-mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    exp = mlflow.create_experiment("s3-check", artifact_location="s3://flywheel-mlflow/s3-check")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    booster = xgb.train({"objective": "binary:logistic"}, xgb.DMatrix(x, label=(x[:, 0] > 0).astype(int)), 5)
    with mlflow.start_run(experiment_id=exp):
        mlflow.xgboost.log_model(booster, name="model", pip_requirements=PIP_REQUIREMENTS,
                                 registered_model_name="s3-check-model")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="flywheel-mlflow")["Contents"]]
    assert any(k.endswith("MLmodel") for k in keys), keys
    loaded = mlflow.xgboost.load_model("models:/s3-check-model/1")
    np.testing.assert_allclose(loaded.predict(xgb.DMatrix(x)), booster.predict(xgb.DMatrix(x)))
