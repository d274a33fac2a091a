"""The data areas on S3: the real pipelines functions against a real S3-API server on loopback (moto).

A data root `s3://<bucket>/flywheel` (what FLYWHEEL_DATA_URI gives the scale-out topology): batches
land there, the validation gate reads them and writes its clean rows, quarantine, reports and registry
there, a blocked batch is kept there byte for byte, the champion (MLflow, artifacts in the same bucket)
scores the interval into it and the drift monitor writes and indexes its report there. Every claim is
checked with boto3 on the bucket itself, not through Flywheel's own code.
"""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pandas as pd
import pytest

from pipelines import storage
from pipelines.layout import Layout, interval_key
from pipelines.spec import REPO_ROOT, load_specs
from pipelines.validate import REASONS, preserve_blocked, validate_batch
from scenarios.cards import BatchPlan, Scenario, land_batch

pytestmark = pytest.mark.integration

SC = Scenario().short(8)


@pytest.fixture
def world(s3_bucket, tmp_path, monkeypatch):
    bucket, client = s3_bucket
    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FLYWHEEL_DATA_URI", f"s3://{bucket}/flywheel/")
    lay = Layout.from_env()
    spec = load_specs()["fraud"]

    def keys(prefix: str) -> list[str]:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"flywheel/{prefix}")
        return sorted(o["Key"].removeprefix("flywheel/") for p in pages for o in p.get("Contents", []))

    def body(key: str) -> bytes:
        return client.get_object(Bucket=bucket, Key=f"flywheel/{key}")["Body"].read()

    return {"lay": lay, "spec": spec, "bucket": bucket, "keys": keys, "body": body, "tmp": tmp_path}


def _land(w, week: int, kind: str) -> tuple[str, object, object]:
    plan = BatchPlan(week, kind, "test")  # type: ignore[arg-type]
    start, end = plan.interval(SC.start)
    uri = land_batch(SC, plan, w["lay"].landing(w["spec"].dataset.name), w["spec"].dataset.file_pattern)
    return uri, start, end


def _validate(w, uri: str, start, end):
    lay, spec = w["lay"], w["spec"]
    ds = spec.dataset.name
    return validate_batch(uri, spec.dataset, start, end, lay.validated(ds), lay.quarantine(ds),
                          lay.validation_reports(ds), docs_dir=w["tmp"] / "docs", readers=[spec])


def test_validation_gate_reads_and_writes_the_bucket(world):
    w, spec = world, world["spec"]
    uri, start, end = _land(w, 6, "bad_rows")
    key = interval_key(start)
    name = spec.dataset.file_name(start)
    assert uri == f"s3://{w['bucket']}/flywheel/data/landing/transactions/{name}"
    landed = w["body"](f"data/landing/transactions/{name}")

    result = _validate(w, uri, start, end)
    assert result.verdict == "accepted", result.summary
    assert result.rows_quarantined == 12 and result.rows_clean == result.rows_landed - 12
    assert result.clean_path == f"s3://{w['bucket']}/flywheel/data/validated/transactions/{key}.parquet"
    assert result.quarantine_path == f"s3://{w['bucket']}/flywheel/data/quarantine/transactions/{key}.parquet"
    assert w["keys"]("data/") == sorted([
        f"data/landing/transactions/{name}",
        f"data/validated/transactions/{key}.parquet",
        f"data/quarantine/transactions/{key}.parquet",
        f"data/validation_reports/transactions/{key}.json",
        "data/validation_reports/transactions/accepted_batches.json",
        f"data/validation_reports/transactions/profiles/{key}.json",
        f"data/validation_reports/transactions/row_ids/{key}.parquet",   # the accepted-ids index
    ])
    clean = pd.read_parquet(io.BytesIO(w["body"](f"data/validated/transactions/{key}.parquet")))
    assert len(clean) == result.rows_clean and list(clean.columns) == spec.dataset.column_names
    bad = pd.read_parquet(io.BytesIO(w["body"](f"data/quarantine/transactions/{key}.parquet")))
    reasons = set("; ".join(bad[REASONS]).split("; "))
    assert {"expect_column_values_to_be_between(amount)", "expect_column_values_to_be_in_set(channel)",
            "expect_column_values_to_not_be_null(customer_id)"} <= reasons, reasons
    report = json.loads(w["body"](f"data/validation_reports/transactions/{key}.json"))
    assert report["verdict"] == "accepted" and report["batch_file"] == uri
    assert result.data_docs_path and (w["tmp"] / "docs" / "site" / "index.html").exists()  # the site stays local

    # a rerun of the interval (another process: no cached client) overwrites the same objects, no duplicates
    storage.clear_cache()
    again = _validate(w, uri, start, end)
    assert again.to_dict() == result.to_dict()
    clean = pd.read_parquet(io.BytesIO(w["body"](f"data/validated/transactions/{key}.parquet")))
    assert len(clean) == result.rows_clean
    assert w["body"](f"data/landing/transactions/{name}") == landed  # raw data never modified

    # the same bytes re-sent for the next week: the registry in the bucket says it was accepted before
    dup_name = spec.dataset.file_name(start + timedelta(weeks=1))
    dup_uri = storage.join(w["lay"].landing("transactions"), dup_name)
    storage.copy(uri, dup_uri)
    dup = _validate(w, dup_uri, start + timedelta(weeks=1), end + timedelta(weeks=1))
    assert dup.verdict == "blocked"
    (failure,) = [f for f in dup.failures if f.rule == "duplicate_batch"]
    assert dup_uri in failure.message and key in failure.message and name in failure.message


def test_blocked_batch_is_kept_byte_for_byte_and_nothing_is_published(world):
    w, spec = world, world["spec"]
    uri, start, end = _land(w, 5, "corrupted")
    key = interval_key(start)
    result = _validate(w, uri, start, end)
    assert result.verdict == "blocked" and result.clean_path is None
    (renamed,) = [f for f in result.failures if f.rule == "expect_table_columns_to_match_set" and f.column == "amount"]
    assert uri in renamed.message and "found `amt`" in renamed.message  # file, column, rule, what to do
    assert not [k for k in w["keys"]("data/validated/")]

    kept = preserve_blocked(uri, w["lay"].blocked(spec.dataset.name), key)
    assert kept.startswith(f"s3://{w['bucket']}/flywheel/data/blocked/transactions/{key}/")
    name = storage.name(uri)
    blocked_keys = w["keys"]("data/blocked/")
    assert blocked_keys == [f"data/blocked/transactions/{key}/{storage.name(kept)}"] and kept.endswith(f"-{name}")
    assert w["body"](blocked_keys[0]) == w["body"](f"data/landing/transactions/{name}")
    assert preserve_blocked(uri, w["lay"].blocked(spec.dataset.name), key) == kept  # the same bytes are kept once
    assert len(w["keys"]("data/blocked/")) == 1


def test_scoring_and_drift_report_live_in_the_bucket(world, monkeypatch):
    """The champion (artifacts in the bucket) scores the validated batch into the bucket; the monitor reads
    the scores back and writes, indexes and emails its report from there."""
    import mlflow

    from pipelines import training
    from pipelines.model import train_and_register
    from pipelines.monitor import check_drift, list_reports, send_drift_report
    from pipelines.score import read_scores, score_interval

    w, spec, tmp = world, world["spec"], world["tmp"]
    lay = w["lay"]
    tracking = f"sqlite:///{tmp / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking)
    mlflow.set_tracking_uri(tracking)
    mlflow.create_experiment(f"flywheel/{spec.name}", artifact_location=f"s3://{w['bucket']}/mlflow")
    # Feast (local by design) is not under test here: the model uses the row features only
    monkeypatch.setattr(training, "with_features", lambda spec, repo, rows, tables=None: rows)
    features = list(spec.row_features)

    # two accepted weeks: one to train on, one to score
    for week in (3, 4):
        uri, start, end = _land(w, week, "normal")
        assert _validate(w, uri, start, end).verdict == "accepted"
    t_start, t_end = BatchPlan(3, "normal", "").interval(SC.start)
    rows = training.label_rows(spec, lay.validated(spec.dataset.name), t_start, t_end,  # read from the bucket
                               views=training.ModelViews.of(spec, REPO_ROOT / "feature_repo"))
    assert len(rows) > 1000
    train_file, hold_file = tmp / "train.parquet", tmp / "holdout.parquet"
    rows.iloc[: len(rows) * 3 // 4].to_parquet(train_file, index=False)
    rows.iloc[len(rows) * 3 // 4 :].to_parquet(hold_file, index=False)
    tset = {"train_path": str(train_file), "holdout_path": str(hold_file), "train_rows": 1, "holdout_rows": 1,
            "train_sha256": "x", "holdout_sha256": "y",
            "window": {"train_start": t_start.isoformat(), "holdout_start": t_start.isoformat(),
                       "labelled_until": t_end.isoformat()}, "as_of": t_end.isoformat()}
    tv = train_and_register(spec, tset, features, {"num_boost_round": 5, "early_stopping_rounds": 2}, "s3-test",
                            tmp / "ref", "test")
    mlflow.MlflowClient().set_registered_model_alias(spec.registered_model_name, "champion", tv.version)

    start, end = BatchPlan(4, "normal", "").interval(SC.start)
    key = interval_key(start)
    scored = score_interval(spec, lay.validated(spec.dataset.name), REPO_ROOT / "feature_repo", start, end, key,
                            lay.scores(spec.name))
    assert scored is not None and scored.path == f"s3://{w['bucket']}/flywheel/scores/fraud/{key}.parquet"
    assert w["keys"]("scores/") == [f"scores/fraud/{key}.parquet"]  # MLflow's downloads stay off the bucket
    in_bucket = pd.read_parquet(io.BytesIO(w["body"](f"scores/fraud/{key}.parquet")))
    clean = pd.read_parquet(io.BytesIO(w["body"](f"data/validated/transactions/{key}.parquet")))
    assert len(in_bucket) == scored.rows == len(clean)
    assert set(in_bucket["model_version"]) == {tv.version} and in_bucket["prediction"].between(0, 1).all()
    assert len(read_scores(lay.scores(spec.name), start, end)) == len(in_bucket)
    # scoring the interval again overwrites its partition
    score_interval(spec, lay.validated(spec.dataset.name), REPO_ROOT / "feature_repo", start, end, key,
                   lay.scores(spec.name))
    assert len(read_scores(lay.scores(spec.name), start - timedelta(weeks=4), end)) == len(in_bucket)

    result, decision, plan = check_drift(spec, lay.scores(spec.name), lay.reports(spec.name), end, key,
                                         validated_dir=lay.validated(spec.dataset.name))
    assert result.report_html == f"s3://{w['bucket']}/flywheel/reports/fraud/{key}.html"
    assert w["keys"]("reports/") == [f"reports/fraud/{key}.html", f"reports/fraud/{key}.json",
                                     "reports/fraud/index.jsonl"]
    assert b"<html" in w["body"](f"reports/fraud/{key}.html").lower()
    verdict = json.loads(w["body"](f"reports/fraud/{key}.json"))
    assert verdict["decision"]["reason"] == decision.reason and verdict["rows_current"] == result.rows_current
    (entry,) = list_reports(lay.reports(spec.name))
    assert entry["key"] == key and entry["verdict_json"] == result.verdict_json

    sent: list[tuple[str, bytes]] = []

    def send(mail):  # what flywheel.dagkit.send_email does: build the message, reading remote parts from the store
        from pipelines.mail import build_message

        build_message(mail, "flywheel@localhost")
        sent.extend((f, storage.read_bytes(f)) for f in mail.attachments)

    status = send_drift_report(spec, result.verdict_json, {}, send)
    assert status["status"] == "sent"   # sent on demand: whether this window alerts (`plan`) is not the point here
    ((attached, data),) = sent
    assert attached == result.report_html                      # attached as it is, read from the bucket
    assert data == w["body"](f"reports/fraud/{key}.html")
    assert w["body"](f"reports/fraud/{key}.png").startswith(b"\x89PNG")   # the picture is kept in the bucket
    assert json.loads(w["body"](f"reports/fraud/{key}.json"))["email"]["status"] == "sent"
    assert list_reports(lay.reports(spec.name))[0]["email"] == "sent"


def test_feature_tables_live_in_the_bucket_and_readers_sync_a_local_cache(world):
    """Feature tables are written to the bucket (no local copy); a reader's sync makes Feast's local
    cache equal to the bucket, rewrites of an interval replace the cached file, and a table deleted
    from the bucket disappears from the cache."""
    from pipelines import features

    lay, spec = world["lay"], world["spec"]
    declared = features.load_repo(REPO_ROOT / "feature_repo")
    views = list(declared.service_views(spec.feature_service))
    keys = []
    for week in range(3):
        uri, start, end = _land(world, week, "normal")
        assert _validate(world, uri, start, end).verdict == "accepted"
        for v in views:
            table = features.build_view_table(declared.views[v], lay.validated(spec.dataset.name), lay.features(),
                                              start, end, interval_key(start))
            assert table.path is not None and table.path.startswith("s3://")
        keys.append(interval_key(start))
    in_bucket = world["keys"]("features/")
    assert in_bucket == sorted(f"features/{v}/{k}.parquet" for v in views for k in keys)
    cache = lay.feature_cache()
    assert not cache.exists()                       # nothing was written locally
    assert features.sync_feature_tables(lay.features(), cache, views) == len(in_bucket)
    for v in views:
        assert sorted(p.name for p in (cache / v).glob("*.parquet")) == [f"{k}.parquet" for k in keys]
        for k in keys:
            assert (cache / v / f"{k}.parquet").read_bytes() == world["body"](f"features/{v}/{k}.parquet")
    # a second sync copies nothing; a table rewritten in the bucket is copied again, alone
    assert features.sync_feature_tables(lay.features(), cache, views) == 0
    rewritten = storage.join(lay.feature_table(views[1]), f"{keys[1]}.parquet")
    storage.write_parquet(storage.read_parquet(rewritten).head(5), rewritten)
    assert features.sync_feature_tables(lay.features(), cache, views) == 1
    assert len(pd.read_parquet(cache / views[1] / f"{keys[1]}.parquet")) == 5
    # the bucket is the truth: a table removed there is removed from the cache on the next sync
    storage.delete(storage.join(lay.feature_table(views[0]), f"{keys[0]}.parquet"))
    features.sync_feature_tables(lay.features(), cache, views)
    assert not (cache / views[0] / f"{keys[0]}.parquet").exists()
    assert (cache / views[1] / f"{keys[0]}.parquet").exists()
    # the embedded default (store == cache) copies nothing
    assert features.sync_feature_tables(cache, cache, views) == 0
