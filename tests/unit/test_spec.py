"""Model specs and the dataset contract: the shipped files load, and a bad file is named in the error."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.spec import REPO_ROOT, SpecError, load_dataset, load_spec, load_specs

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
    assert set(specs) == {"fraud", "spend"}
    fraud, spend = specs["fraud"], specs["spend"]
    assert fraud.task == "binary" and spend.task == "regression"
    assert fraud.label.kind == "column" and fraud.label.column == "is_fraud" and fraud.label.delay_days == 2
    assert spend.label.kind == "future_sum" and spend.label.horizon_days == 7 and spend.label.delay_days == 7
    assert fraud.feature_views == ("customer_stats", "merchant_stats")
    assert fraud.row_features == ("amount", "channel", "category", "country")
    assert fraud.gate["min_primary"] == pytest.approx(0.20)
    assert spend.gate["max_primary"] == pytest.approx(1500.0)
    assert fraud.registered_model_name == "flywheel-fraud"
    # both specs read the same landing contract
    assert fraud.dataset.name == spend.dataset.name == "transactions"
    assert fraud.dataset.row_id == "transaction_id"


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
        "event_timestamp",
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
