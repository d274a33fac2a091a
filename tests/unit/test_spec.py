"""Model specs and dataset contracts: the shipped files load, and a bad file is named in the error."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.metrics import METRIC_TASKS
from pipelines.spec import (
    REPO_ROOT,
    SpecError,
    load_contract,
    load_dataset,
    load_datasets,
    load_spec,
    load_specs,
    readers,
)

pytestmark = pytest.mark.unit

MODELS = REPO_ROOT / "models"
DATASETS = REPO_ROOT / "datasets"


def fraud_raw() -> dict[str, Any]:
    return copy.deepcopy(yaml.safe_load((MODELS / "fraud.yaml").read_text()))


def write(path: Path, raw: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_shipped_specs_load_with_their_declared_settings():
    specs = load_specs(MODELS)
    assert set(specs) == {"fraud", "spend", "movie_rating"}
    rating = specs["movie_rating"]   # the second example: real MovieLens ratings, another shape on every axis
    assert (rating.task, rating.primary_metric, rating.label.kind, rating.label.column) == (
        "regression", "rmse", "column", "rating")
    assert (rating.dataset.name, rating.dataset.cadence, rating.event_timestamp) == ("ratings", "0 0 1 * *", "rated_at")
    assert rating.entity_key == "userId" and rating.row_features == ("year", "genres")
    fraud, spend = specs["fraud"], specs["spend"]
    assert fraud.task == "binary" and spend.task == "regression"
    assert fraud.label.kind == "column" and fraud.label.column == "is_fraud" and fraud.label.delay_days == 2
    assert spend.label.kind == "future_sum" and spend.label.horizon_days == 7 and spend.label.delay_days == 7
    assert fraud.feature_service == "fraud_features" and spend.feature_service == "spend_features"
    assert not hasattr(fraud, "feature_views")  # the views are the service's, declared in feature_repo/
    assert fraud.warmup_days == 7 and spend.warmup_days == 7
    assert fraud.row_features == ("amount", "channel", "category", "country")
    assert fraud.gate["min_primary"] == pytest.approx(0.20)
    assert spend.gate["max_primary"] == pytest.approx(1500.0)
    assert fraud.registered_model_name == "flywheel-fraud"
    # both specs read the same landing contract
    assert fraud.dataset.name == spend.dataset.name == "transactions"
    assert fraud.dataset.row_id == "transaction_id"
    # schedule and event time are the dataset's, declared once in its contract
    assert fraud.schedule == spend.schedule == fraud.dataset.cadence == "0 0 * * 1"
    assert fraud.event_timestamp == spend.event_timestamp == fraud.dataset.timestamp == "event_ts"


def test_metric_direction_follows_the_primary_metric():
    specs = load_specs(MODELS)
    assert specs["fraud"].primary_metric == "average_precision"
    assert specs["fraud"].higher_is_better is True
    assert specs["spend"].primary_metric == "mae"
    assert specs["spend"].higher_is_better is False


@pytest.mark.parametrize(
    "key",
    [
        "name",
        "task",
        "owners",
        "dataset",
        "label",
        "features",
        "training",
        "metric",
        "gate",
        "entity_key",
    ],
)
def test_missing_required_key_names_file_and_key(tmp_path, key):
    raw = fraud_raw()
    del raw[key]
    path = write(tmp_path / "broken.yaml", raw)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert str(path) in str(err.value)
    assert f"`{key}`" in str(err.value)


@pytest.mark.parametrize("section,key", [("metric", "primary"), ("label", "column"), ("features", "service")])
def test_missing_nested_required_key_is_a_spec_error_naming_file_and_key(tmp_path, section, key):
    """A spec without `metric.primary` (or `label.column`, `features.service`) is as broken as one
    without `metric`: the user should get a SpecError naming the file and the key, not a bare KeyError."""
    raw = fraud_raw()
    del raw[section][key]
    path = write(tmp_path / "nested.yaml", raw)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert str(path) in str(err.value)
    assert key in str(err.value)


def test_bad_task_is_rejected_naming_file_and_key(tmp_path):
    raw = fraud_raw()
    raw["task"] = "ranking"
    path = write(tmp_path / "badtask.yaml", raw)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert str(path) in str(err.value)
    assert "task" in str(err.value) and "ranking" in str(err.value)


def test_owner_without_at_sign_is_rejected(tmp_path):
    raw = fraud_raw()
    raw["owners"] = ["fraud-ml@example.com", "risk-oncall"]
    path = write(tmp_path / "owners.yaml", raw)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert str(path) in str(err.value)
    assert "owners" in str(err.value) and "risk-oncall" in str(err.value)


def test_unknown_metric_is_rejected_naming_the_metric(tmp_path):
    raw = fraud_raw()
    raw["metric"]["primary"] = "f1"
    path = write(tmp_path / "metric.yaml", raw)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert str(path) in str(err.value)
    assert "metric.primary" in str(err.value) and "'f1'" in str(err.value)


def test_unknown_label_kind_is_rejected_at_load_time(tmp_path):
    """training.label_rows relies on the loader to guard the label kind (`pragma: no cover - guarded by
    the spec loader`); a typo must be caught when the spec is read, not deep inside a training run."""
    raw = fraud_raw()
    raw["label"]["kind"] = "colum"
    path = write(tmp_path / "labelkind.yaml", raw)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert str(path) in str(err.value)
    assert "kind" in str(err.value)


def test_duplicate_model_name_in_a_directory_names_both_files(tmp_path):
    write(tmp_path / "a_fraud.yaml", fraud_raw())
    write(tmp_path / "b_fraud_copy.yaml", fraud_raw())
    with pytest.raises(SpecError) as err:
        load_specs(tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "b_fraud_copy.yaml") in msg and str(tmp_path / "a_fraud.yaml") in msg
    assert "name" in msg and "'fraud'" in msg


def test_load_specs_reads_only_the_given_directory(tmp_path):
    raw = fraud_raw()
    raw["name"] = "fraud_v2"
    write(tmp_path / "fraud_v2.yaml", raw)
    assert list(load_specs(tmp_path)) == ["fraud_v2"]


def test_shipped_contract_columns_and_rules():
    contract = load_dataset("transactions", DATASETS)
    assert contract.column_names == [
        "transaction_id",
        "customer_id",
        "merchant_id",
        "category",
        "amount",
        "channel",
        "country",
        "event_ts",
        "is_fraud",
    ]
    assert contract.column("transaction_id").unique is True
    assert contract.column("amount").type == "float" and contract.column("amount").min == pytest.approx(0.01)
    assert contract.column("channel").allowed == ("pos", "online", "wallet")
    assert contract.column("event_ts").type == "timestamp"
    with pytest.raises(KeyError):
        contract.column("amt")


def contract_raw() -> dict[str, Any]:
    return copy.deepcopy(yaml.safe_load((DATASETS / "transactions.yaml").read_text()))


def test_contract_bad_column_type_names_file_and_column(tmp_path):
    raw = contract_raw()
    raw["columns"]["amount"]["type"] = "decimal"
    path = write(tmp_path / "transactions.yaml", raw)
    with pytest.raises(SpecError) as err:
        load_dataset("transactions", tmp_path)
    assert str(path) in str(err.value)
    assert "amount" in str(err.value) and "decimal" in str(err.value)


def test_contract_missing_file_is_a_spec_error(tmp_path):
    with pytest.raises(SpecError) as err:
        load_dataset("payments", tmp_path)
    assert str(tmp_path / "payments.yaml") in str(err.value)


def test_contract_missing_required_key_names_file_and_key(tmp_path):
    raw = contract_raw()
    del raw["row_id"]
    path = write(tmp_path / "transactions.yaml", raw)
    with pytest.raises(SpecError) as err:
        load_dataset("transactions", tmp_path)
    assert str(path) in str(err.value) and "`row_id`" in str(err.value)


def test_contract_unknown_rule_is_a_spec_error_naming_file_and_column(tmp_path):
    """A typo in a column rule (`minimum:` for `min:`) should be a readable SpecError, not a TypeError
    from a dataclass constructor."""
    raw = contract_raw()
    raw["columns"]["amount"]["minimum"] = 0.01
    path = write(tmp_path / "transactions.yaml", raw)
    with pytest.raises(SpecError) as err:
        load_dataset("transactions", tmp_path)
    assert str(path) in str(err.value)
    assert "amount" in str(err.value) and "minimum" in str(err.value)


def test_shipped_contract_carries_owners_cadence_and_the_batch_gate():
    contract = load_dataset("transactions", DATASETS)
    assert contract.owners == ("payments-data@example.com",)
    assert contract.timestamp == "event_ts" and contract.cadence == "0 0 * * 1"
    assert contract.description.startswith("Card transactions")
    assert contract.max_quarantine_share == pytest.approx(0.05)
    assert (contract.min_rows, contract.max_rows) == (100, 150000)
    assert contract.distribution.severity == "warn"
    assert contract.distribution.columns == ("amount", "is_fraud")
    assert contract.distribution.reference_batches == 4 and contract.distribution.max_ratio == pytest.approx(3.0)
    assert contract.file_name(datetime(2026, 1, 5, tzinfo=UTC)) == "transactions_2026-01-05.parquet"
    assert all(c.max_null_share is None for c in contract.columns)
    shipped = load_datasets(DATASETS)
    assert shipped["transactions"] == contract and set(shipped) == {"transactions", "ratings"}


def test_contract_defaults_when_validation_is_left_out(tmp_path):
    raw = contract_raw()
    del raw["validation"]
    contract = load_contract(write(tmp_path / "transactions.yaml", raw))
    assert contract.max_quarantine_share == pytest.approx(0.05)
    assert (contract.min_rows, contract.max_rows) == (1, None)
    # the distribution check watches the float columns unless told otherwise
    assert contract.distribution.columns == ("amount",) and contract.distribution.severity == "warn"


def test_readers_are_the_models_of_a_dataset():
    specs = load_specs(MODELS)
    assert [s.name for s in readers("transactions", specs)] == ["fraud", "spend"]
    assert readers("payments", specs) == []


# ---- model keys that moved to the dataset contract, unknown keys, columns and metrics


@pytest.mark.parametrize("key,contract_key,value", [
    ("validation", "validation", {"max_quarantine_share": 0.05}),
    ("schedule", "cadence", "0 0 * * 1"),
    ("event_timestamp", "timestamp", "event_ts"),
])
def test_a_key_moved_to_the_contract_is_rejected_naming_the_contract_key(tmp_path, key, contract_key, value):
    raw = fraud_raw()
    raw[key] = value
    path = write(tmp_path / "moved.yaml", raw)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    msg = str(err.value)
    assert str(path) in msg
    assert f"`{key}`" in msg and f"`{contract_key}`" in msg
    assert "datasets/transactions.yaml" in msg


def test_unknown_top_level_key_is_rejected(tmp_path):
    raw = fraud_raw()
    raw["featurs"] = {"service": "fraud_features"}
    path = write(tmp_path / "typo.yaml", raw)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert str(path) in str(err.value) and "featurs" in str(err.value)


def test_features_views_is_rejected_the_service_declares_the_views(tmp_path):
    raw = fraud_raw()
    raw["features"]["views"] = ["customer_stats", "merchant_stats"]
    path = write(tmp_path / "views.yaml", raw)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    msg = str(err.value)
    assert str(path) in msg and "'views'" in msg and "FeatureService" in msg


@pytest.mark.parametrize("what,edit", [
    ("entity_key", lambda raw: raw.__setitem__("entity_key", "card_id")),
    ("label.column", lambda raw: raw["label"].__setitem__("column", "card_id")),
    ("features.row", lambda raw: raw["features"].__setitem__("row", ["amount", "card_id"])),
])
def test_spec_columns_must_be_contract_columns(tmp_path, what, edit):
    raw = fraud_raw()
    edit(raw)
    path = write(tmp_path / "columns.yaml", raw)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    msg = str(err.value)
    assert str(path) in msg and what in msg and "`card_id`" in msg and "transactions.yaml" in msg


def test_the_label_cannot_be_a_row_feature(tmp_path):
    raw = fraud_raw()
    raw["features"]["row"] = ["amount", "is_fraud"]
    path = write(tmp_path / "leak.yaml", raw)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert str(path) in str(err.value) and "is_fraud" in str(err.value)


def _with_metric(raw: dict[str, Any], metric: str) -> dict[str, Any]:
    """`raw` with `metric` as primary and only the gate keys that fit its direction."""
    raw["metric"]["primary"] = metric
    raw["gate"].pop("min_primary", None)
    raw["gate"].pop("max_primary", None)
    return raw


def spend_raw() -> dict[str, Any]:
    return copy.deepcopy(yaml.safe_load((MODELS / "spend.yaml").read_text()))


@pytest.mark.parametrize("metric", sorted(METRIC_TASKS))
def test_every_metric_loads_for_its_task_and_is_rejected_for_the_other(tmp_path, metric):
    assert set(METRIC_TASKS) == {"average_precision", "roc_auc", "log_loss", "mae", "rmse"}
    fits, misfit = (fraud_raw(), spend_raw()) if METRIC_TASKS[metric] == ("binary",) else (spend_raw(), fraud_raw())
    fits, misfit = _with_metric(fits, metric), _with_metric(misfit, metric)
    if misfit["task"] == "binary":  # keep the gate valid for a regression metric on a binary model
        misfit["gate"].pop("max_brier", None)
    assert load_spec(write(tmp_path / "fits.yaml", fits)).primary_metric == metric
    path = write(tmp_path / "misfit.yaml", misfit)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    msg = str(err.value)
    assert str(path) in msg and "metric.primary" in msg and repr(metric) in msg
    assert f"a {misfit['task']} model" in msg


# ---- contract errors: each names the file and the key


@pytest.mark.parametrize("key,edit,needles", [
    ("timestamp", lambda raw: raw.__setitem__("timestamp", "amount"), ["timestamp", "`amount`", "type timestamp"]),
    ("timestamp", lambda raw: raw.__setitem__("timestamp", "booked_at"), ["timestamp", "`booked_at`"]),
    ("row_id", lambda raw: raw.__setitem__("row_id", "txn"), ["row_id", "`txn`"]),
    ("cadence", lambda raw: raw.__setitem__("cadence", "weekly"), ["`cadence`", "'weekly'"]),
    ("cadence", lambda raw: raw.__setitem__("cadence", "0 0 * * 9"), ["`cadence`", "'0 0 * * 9'"]),
    ("max_null_share", lambda raw: raw["columns"]["amount"].__setitem__("max_null_share", 0.1),
     ["`amount`", "max_null_share", "not nullable"]),
    ("max_null_share", lambda raw: raw["columns"]["country"].update(nullable=True, max_null_share=1.5),
     ["`country`", "max_null_share", "1.5"]),
    ("owners", lambda raw: raw.__setitem__("owners", ["payments-data"]), ["owners", "payments-data"]),
    ("validation", lambda raw: raw["validation"].__setitem__("max_rows", 10),
     ["validation.max_rows", "validation.min_rows"]),
    ("validation", lambda raw: raw["validation"]["distribution"].__setitem__("columns", ["channel"]),
     ["validation.distribution.columns", "`channel`"]),
    ("name", lambda raw: raw.__setitem__("name", "payments"), ["named after the dataset", "payments.yaml"]),
])
def test_contract_error_names_file_and_key(tmp_path, key, edit, needles):
    raw = contract_raw()
    edit(raw)
    path = write(tmp_path / "transactions.yaml", raw)
    with pytest.raises(SpecError) as err:
        load_contract(path)
    msg = str(err.value)
    assert str(path) in msg
    for needle in needles:
        assert needle in msg, (key, needle, msg)


def test_max_null_share_applies_to_nullable_columns(tmp_path):
    raw = contract_raw()
    raw["columns"]["country"].update(nullable=True, max_null_share=0.2)
    contract = load_contract(write(tmp_path / "transactions.yaml", raw))
    assert contract.column("country").max_null_share == pytest.approx(0.2)
    assert contract.column("amount").max_null_share is None


def test_a_spec_reads_its_contract_from_the_datasets_dir(tmp_path, monkeypatch):
    """The model follows whatever the contract declares: change the cadence there, the model's schedule follows."""
    raw = contract_raw()
    raw["cadence"] = "@daily"
    raw["timestamp"] = "booked_at"
    raw["columns"]["booked_at"] = {"type": "timestamp", "nullable": False}
    write(tmp_path / "datasets" / "transactions.yaml", raw)
    monkeypatch.setenv("FLYWHEEL_DATASETS_DIR", str(tmp_path / "datasets"))
    spec = load_spec(MODELS / "fraud.yaml")
    assert spec.schedule == "@daily" and spec.event_timestamp == "booked_at"


def test_guardrail_section_is_read_and_optional(tmp_path):
    raw = fraud_raw()
    raw["guardrail"] = {"guard_days": 10, "tolerance": 0.02, "action": "alert"}
    g = load_spec(write(tmp_path / "g.yaml", raw)).guardrail
    assert (g.guard_days, g.tolerance, g.action, g.seed) == (10, 0.02, "alert", raw["training"]["seed"])
    assert g.shadow_rows == 200_000                  # the default sample cap of the shadows
    del raw["guardrail"]
    assert load_spec(write(tmp_path / "none.yaml", raw)).guardrail is None   # not declared: no guardrail


@pytest.mark.parametrize("section,named", [({"action": "delete"}, "guardrail.action"),
                                           ({"guard_days": 0}, "guardrail.guard_days"),
                                           ({"confidence": 1.5}, "guardrail.confidence"),
                                           ({"tolerence": 0.1}, "guardrail.tolerence"),
                                           ({"shadow_rows": 500}, "guardrail.shadow_rows"),
                                           ({"shadow_rows": 5000, "min_rows": 8000}, "guardrail.shadow_rows")])
def test_a_bad_guardrail_key_names_file_and_key(tmp_path, section, named):
    raw = fraud_raw()
    raw["guardrail"] = section
    path = write(tmp_path / "bad.yaml", raw)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert str(path) in str(err.value) and named in str(err.value)


def test_training_sampling_is_read_and_optional(tmp_path):
    """`training.sampling`: one rule and its fraction, seeded with `training.seed`; absent (the shipped specs): every
    training row is kept."""
    from pipelines.spec import SamplingSpec

    assert all(s.sampling is None for s in load_specs(MODELS).values())
    raw = fraud_raw()
    raw["training"]["sampling"] = {"negatives": 0.1}
    sampling = load_spec(write(tmp_path / "fraud.yaml", raw)).sampling
    assert sampling == SamplingSpec(rule="negatives", fraction=0.1, seed=raw["training"]["seed"])
    assert sampling.weight == pytest.approx(10.0)
    spend = spend_raw()
    spend["training"]["sampling"] = {"rows": 1}     # every row, recorded as a sample of 1
    sampling = load_spec(write(tmp_path / "spend.yaml", spend)).sampling
    assert (sampling.rule, sampling.fraction, sampling.weight) == ("rows", 1.0, 1.0)


@pytest.mark.parametrize("spec,sampling,key,needles", [
    ("fraud", {"negatives": 0}, "training.sampling.negatives", ["(0, 1]", "0"]),
    ("fraud", {"negatives": 1.5}, "training.sampling.negatives", ["(0, 1]", "1.5"]),
    ("fraud", {"rows": "a tenth"}, "training.sampling.rows", ["(0, 1]", "a tenth"]),
    ("fraud", {"negatives": True}, "training.sampling.negatives", ["(0, 1]", "True"]),
    ("fraud", {"negatives": 0.1, "rows": 0.5}, "training.sampling", ["negatives and rows", "keep one rule"]),
    ("fraud", {"fraction": 0.1}, "training.sampling.fraction", ["unknown", "negatives", "rows"]),
    ("fraud", 0.1, "training.sampling", ["mapping", "{negatives: 0.1}", "Remove the key"]),
    ("fraud", {}, "training.sampling", ["mapping", "{rows: 0.2}"]),
    ("spend", {"negatives": 0.1}, "training.sampling.negatives", ["binary models only", "regression",
                                                                 "training.sampling.rows"]),
])
def test_a_bad_sampling_rule_names_file_key_value_and_the_fix(tmp_path, spec, sampling, key, needles):
    raw = fraud_raw() if spec == "fraud" else spend_raw()
    raw["training"]["sampling"] = sampling
    path = write(tmp_path / f"{spec}.yaml", raw)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and key in message
    for needle in needles:
        assert needle in message, (needle, message)


def test_a_misspelt_training_key_is_an_error_not_a_silent_default(tmp_path):
    """`sample:` instead of `sampling:` would otherwise train on every row without a word."""
    raw = fraud_raw()
    raw["training"]["sample"] = {"negatives": 0.1}
    path = write(tmp_path / "fraud.yaml", raw)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert str(path) in str(err.value) and "training.sample" in str(err.value) and "sampling" in str(err.value)
