"""Training windows and label rows for both label kinds, against brute force on tiny validated batches."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.spec import REPO_ROOT, LabelSpec, load_specs
from pipelines.training import LABEL, TrainingWindow, categorical_columns, label_rows

pytestmark = pytest.mark.unit

SPECS = load_specs(REPO_ROOT / "models")
FRAUD, SPEND = SPECS["fraud"], SPECS["spend"]
CONTRACT = FRAUD.dataset
T0 = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday: batches are named by their week start
WEEKS = 8


def make_transactions() -> pd.DataFrame:
    """A few customers over 8 weeks, with contract columns; customer 4 only shows up in week 5."""
    rng = np.random.default_rng(11)
    rows = []
    for day in range(WEEKS * 7):
        for cust, p in ((1, 0.8), (2, 0.4), (3, 0.15 if day < 20 else 0.0), (4, 0.6 if day >= 35 else 0.0)):
            for _ in range(int(rng.random() < p) + int(rng.random() < p / 3)):
                rows.append(
                    {
                        "customer_id": cust,
                        "merchant_id": int(rng.integers(1, 6)),
                        "category": str(rng.choice(list(CONTRACT.column("category").allowed))),
                        "amount": round(float(rng.lognormal(3.5, 0.8)), 2),
                        "channel": str(rng.choice(list(CONTRACT.column("channel").allowed))),
                        "country": str(rng.choice(["US", "GB", "DE"])),
                        "event_ts": T0 + timedelta(days=day, seconds=int(rng.integers(0, 86400))),
                        "is_fraud": int(rng.random() < 0.1),
                    }
                )
    # exactly on a day boundary: belongs to [T, T+7d) of the day it starts
    rows.append(
        {
            "customer_id": 1,
            "merchant_id": 1,
            "category": "grocery",
            "amount": 777.0,
            "channel": "pos",
            "country": "US",
            "event_ts": T0 + timedelta(days=40),
            "is_fraud": 0,
        }
    )
    df = pd.DataFrame(rows).sort_values("event_ts", kind="stable").reset_index(drop=True)
    df.insert(0, "transaction_id", [f"t{i:05d}" for i in range(len(df))])
    df["event_ts"] = pd.to_datetime(df["event_ts"], utc=True)
    return df[CONTRACT.column_names]


TX = make_transactions()


@pytest.fixture(scope="module")
def validated(tmp_path_factory) -> Path:
    """Validated batches as the validation stage writes them: <week start>.parquet, contract columns."""
    d = tmp_path_factory.mktemp("validated")
    week = (TX["event_ts"] - pd.Timestamp(T0)).dt.days // 7
    for w, part in TX.groupby(week):
        part.reset_index(drop=True).to_parquet(d / f"{(T0 + timedelta(weeks=int(w))):%Y-%m-%d}.parquet", index=False)
    return d


@pytest.mark.parametrize("spec,delay,holdout,window", [(FRAUD, 2, 2, 35), (SPEND, 7, 7, 42)])
def test_training_window_arithmetic(spec, delay, holdout, window):
    as_of = datetime(2026, 3, 2, tzinfo=UTC)
    w = TrainingWindow.for_spec(spec, as_of)
    assert w.labelled_until == as_of - timedelta(days=delay)
    assert w.holdout_start == w.labelled_until - timedelta(days=holdout)
    assert w.train_start == w.holdout_start - timedelta(days=window)
    assert w.train_start < w.holdout_start < w.labelled_until <= as_of
    assert w.to_dict()["labelled_until"] == (as_of - timedelta(days=delay)).isoformat()


def test_fraud_training_window_concrete_dates():
    w = TrainingWindow.for_spec(FRAUD, datetime(2026, 3, 2, tzinfo=UTC))
    assert (w.train_start, w.holdout_start, w.labelled_until) == (
        datetime(2026, 1, 22, tzinfo=UTC),
        datetime(2026, 2, 26, tzinfo=UTC),
        datetime(2026, 2, 28, tzinfo=UTC),
    )


def test_column_labels_keep_row_features_and_the_label_within_the_window(validated):
    start, end = T0 + timedelta(days=10, hours=12), T0 + timedelta(days=24)
    out = label_rows(FRAUD, validated, start, end)
    want = TX[(TX["event_ts"] >= pd.Timestamp(start)) & (TX["event_ts"] < pd.Timestamp(end))]
    assert len(out) == len(want) > 0
    expected_cols = ["transaction_id", "customer_id", "merchant_id", "event_ts", *FRAUD.row_features, LABEL]
    assert list(out.columns) == expected_cols
    assert "is_fraud" not in out.columns  # the raw label column is not a feature
    merged = out.merge(want, on="transaction_id", suffixes=("", "_src"))
    assert len(merged) == len(want)
    assert (merged[LABEL] == merged["is_fraud"].astype(float)).all()
    for c in ("customer_id", "merchant_id", "amount", "channel", "category", "country", "event_ts"):
        assert (merged[c] == merged[f"{c}_src"]).all(), c
    assert out["event_ts"].min() >= pd.Timestamp(start) and out["event_ts"].max() < pd.Timestamp(end)
    assert str(out["event_ts"].dt.tz) == "UTC" and out["customer_id"].dtype == "int64"


def test_column_rows_for_scoring_have_no_label(validated):
    out = label_rows(FRAUD, validated, T0 + timedelta(days=7), T0 + timedelta(days=14), with_label=False)
    assert len(out) > 0 and LABEL not in out.columns and "is_fraud" not in out.columns


def test_no_validated_batches_gives_an_empty_frame(tmp_path):
    assert label_rows(FRAUD, tmp_path, T0, T0 + timedelta(days=7)).empty
    assert label_rows(SPEND, tmp_path, T0, T0 + timedelta(days=7)).empty


@pytest.fixture(scope="module")
def spend_rows(validated) -> tuple[pd.DataFrame, datetime, datetime]:
    start, end = T0 + timedelta(days=33), T0 + timedelta(days=42)
    return label_rows(SPEND, validated, start, end), start, end


def test_future_sum_label_equals_brute_force_spend_over_the_next_week(spend_rows):
    out, start, end = spend_rows
    horizon = pd.Timedelta(days=SPEND.label.horizon_days)
    assert set(out["event_ts"]) == set(
        pd.date_range(pd.Timestamp(start), pd.Timestamp(end), freq="D", inclusive="left")
    )
    for row in out.itertuples(index=False):
        t = row.event_ts
        h = TX[TX["customer_id"] == row.customer_id]
        want = h[(h["event_ts"] >= t) & (h["event_ts"] < t + horizon)]["amount"].sum()
        assert row.label == pytest.approx(want), (row.customer_id, t)
        assert row.row_id == f"{row.customer_id}@{t:%Y-%m-%d}"
    assert out["row_id"].is_unique
    # the boundary transaction at exactly day 40, 00:00 counts from T = day 40 and not for T = day 33
    t40 = pd.Timestamp(T0 + timedelta(days=40))
    c1 = out[(out["customer_id"] == 1) & (out["event_ts"] == t40)]["label"].iloc[0]
    assert c1 >= 777.0


def test_future_sum_rows_only_for_customers_active_in_the_previous_30_days(spend_rows):
    out, _, _ = spend_rows
    for t, group in out.groupby("event_ts"):
        past = TX[(TX["event_ts"] >= t - pd.Timedelta(days=30)) & (TX["event_ts"] < t)]
        assert set(group["customer_id"]) == set(past["customer_id"]), t
    # customer 3 went quiet on day 20: gone once 30 days passed; customer 4 appears the day after its first visit
    first_4 = TX.loc[TX["customer_id"] == 4, "event_ts"].min()
    assert out.loc[out["customer_id"] == 4, "event_ts"].min() == first_4.floor("D") + pd.Timedelta(days=1)
    assert out.loc[out["customer_id"] == 3, "event_ts"].max() <= pd.Timestamp(T0 + timedelta(days=20 + 30))


def test_future_sum_label_is_zero_for_an_active_customer_who_spends_nothing(validated):
    """Customer 3 is in the 30-day look-back but spends nothing next week: a real zero, not a missing row."""
    out = label_rows(SPEND, validated, T0 + timedelta(days=28), T0 + timedelta(days=30))
    c3 = out[out["customer_id"] == 3]
    assert len(c3) == 2 and (c3["label"] == 0.0).all()


def test_label_horizon_comes_from_the_spec(validated):
    three_days = dataclasses.replace(
        SPEND, label=LabelSpec(kind="future_sum", column="amount", delay_days=3, horizon_days=3)
    )
    out = label_rows(three_days, validated, T0 + timedelta(days=35), T0 + timedelta(days=36))
    t = pd.Timestamp(T0 + timedelta(days=35))
    for row in out.itertuples(index=False):
        h = TX[TX["customer_id"] == row.customer_id]
        assert row.label == pytest.approx(
            h[(h["event_ts"] >= t) & (h["event_ts"] < t + pd.Timedelta(days=3))]["amount"].sum()
        )


def test_categorical_columns_come_from_the_contract():
    cats = categorical_columns(FRAUD)
    assert list(cats) == ["channel", "category", "country"]  # amount is numeric
    assert cats["channel"] == ["pos", "online", "wallet"]
    assert categorical_columns(SPEND) == {}
