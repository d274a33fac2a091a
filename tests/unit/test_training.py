"""Training windows and label rows for both label kinds, against brute force on tiny validated batches."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines import training
from pipelines.spec import REPO_ROOT, LabelSpec, load_specs
from pipelines.training import (
    LABEL,
    ModelViews,
    TrainingWindow,
    build_training_set,
    categorical_columns,
    label_problems,
    label_rows,
)

pytestmark = pytest.mark.unit

SPECS = load_specs(REPO_ROOT / "models")
FRAUD, SPEND = SPECS["fraud"], SPECS["spend"]
CONTRACT = FRAUD.dataset
T0 = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday: batches are named by their week start
WEEKS = 8
FEATURE_REPO = REPO_ROOT / "feature_repo"


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


def write_weeks(d: Path, tx: pd.DataFrame) -> Path:
    """Validated batches as the validation stage writes them: <week start>.parquet, contract columns."""
    d.mkdir(parents=True, exist_ok=True)
    week = (tx["event_ts"] - pd.Timestamp(T0)).dt.days // 7
    for w, part in tx.groupby(week):
        part.reset_index(drop=True).to_parquet(d / f"{(T0 + timedelta(weeks=int(w))):%Y-%m-%d}.parquet", index=False)
    return d


@pytest.fixture(scope="module")
def validated(tmp_path_factory) -> Path:
    return write_weeks(tmp_path_factory.mktemp("validated"), TX)


@pytest.fixture(scope="module")
def fraud_views() -> ModelViews:
    return ModelViews.of(FRAUD, FEATURE_REPO)


@pytest.fixture(scope="module")
def spend_views() -> ModelViews:
    return ModelViews.of(SPEND, FEATURE_REPO)


def test_model_views_come_from_the_feature_service_declarations(fraud_views, spend_views):
    from pipelines.features import load_repo

    repo = load_repo(FEATURE_REPO)
    for spec, mv in ((FRAUD, fraud_views), (SPEND, spend_views)):
        declared = [repo.views[v] for v in repo.service_views(spec.feature_service)]
        assert mv.views == tuple(v.name for v in declared)
        assert mv.join_keys == tuple(dict.fromkeys(k for v in declared for k in v.join_keys))
        assert mv.lookback == max(v.lookback for v in declared)
    # what the shipped definitions declare: fraud reads customers and merchants, spend only customers
    assert fraud_views.join_keys == ("customer_id", "merchant_id") and spend_views.join_keys == ("customer_id",)
    assert fraud_views.lookback == spend_views.lookback == timedelta(days=30)


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


def test_column_labels_keep_row_features_and_the_label_within_the_window(validated, fraud_views):
    start, end = T0 + timedelta(days=10, hours=12), T0 + timedelta(days=24)
    out = label_rows(FRAUD, validated, start, end, views=fraud_views)
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


def test_column_rows_carry_the_join_keys_of_the_views_only(validated, fraud_views):
    """merchant_id is not a row feature of fraud: it is there because merchant_stats joins on it."""
    start, end = T0 + timedelta(days=7), T0 + timedelta(days=14)
    bare = label_rows(FRAUD, validated, start, end)
    assert "merchant_id" not in bare.columns and "customer_id" in bare.columns
    joined = label_rows(FRAUD, validated, start, end, views=fraud_views)
    assert list(joined.columns) == ["transaction_id", "customer_id", "merchant_id", *list(bare.columns)[2:]]
    pd.testing.assert_frame_equal(joined.drop(columns="merchant_id"), bare)


def test_column_rows_for_scoring_have_no_label(validated, fraud_views):
    out = label_rows(FRAUD, validated, T0 + timedelta(days=7), T0 + timedelta(days=14), with_label=False,
                     views=fraud_views)
    assert len(out) > 0 and LABEL not in out.columns and "is_fraud" not in out.columns
    assert "merchant_id" in out.columns


@pytest.fixture
def bad_labels(tmp_path) -> tuple[Path, pd.DataFrame]:
    """Week 2 with labels the model cannot learn from: missing, 2, -1 (the contract may be looser than the model)."""
    week = TX[(TX["event_ts"] >= pd.Timestamp(T0 + timedelta(days=7)))
              & (TX["event_ts"] < pd.Timestamp(T0 + timedelta(days=14)))].copy()
    week["is_fraud"] = week["is_fraud"].astype("float64")
    bad = week.index[[0, 3, 5, 8]]
    week.loc[bad, "is_fraud"] = [np.nan, 2.0, -1.0, np.nan]
    return write_weeks(tmp_path / "validated", week), week


def test_rows_with_a_missing_or_non_binary_label_are_left_out_of_training_not_scoring(bad_labels, fraud_views):
    d, week = bad_labels
    start, end = T0 + timedelta(days=7), T0 + timedelta(days=14)
    broken = set(week.loc[~week["is_fraud"].isin([0.0, 1.0]), "transaction_id"])
    assert len(broken) == 4
    trained = label_rows(FRAUD, d, start, end, views=fraud_views)
    assert set(trained["transaction_id"]) == set(week["transaction_id"]) - broken
    assert set(trained[LABEL]) <= {0.0, 1.0}
    # the labels stay on their own rows after the bad ones are dropped
    merged = trained.merge(week[["transaction_id", "is_fraud"]], on="transaction_id")
    assert (merged[LABEL] == merged["is_fraud"]).all() and len(merged) == len(trained)
    scored = label_rows(FRAUD, d, start, end, with_label=False, views=fraud_views)
    assert set(scored["transaction_id"]) == set(week["transaction_id"])


def test_label_problems_follow_the_task():
    labels = pd.Series([0, 1, 2, -1.5, None, "x", "1"], dtype=object)
    assert label_problems(FRAUD, labels).tolist() == [False, False, True, True, True, True, False]
    # a regression label only has to be present and numeric
    assert label_problems(SPEND, labels).tolist() == [False, False, False, False, True, True, False]


def test_no_validated_batches_gives_an_empty_frame(tmp_path):
    assert label_rows(FRAUD, tmp_path, T0, T0 + timedelta(days=7)).empty
    assert label_rows(SPEND, tmp_path, T0, T0 + timedelta(days=7)).empty


@pytest.fixture(scope="module")
def spend_rows(validated, spend_views) -> tuple[pd.DataFrame, datetime, datetime]:
    start, end = T0 + timedelta(days=33), T0 + timedelta(days=42)
    return label_rows(SPEND, validated, start, end, views=spend_views), start, end


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


def test_future_sum_rows_only_for_customers_active_in_the_views_lookback(spend_rows, spend_views):
    out, _, _ = spend_rows
    assert spend_views.lookback == timedelta(days=30)
    for t, group in out.groupby("event_ts"):
        past = TX[(TX["event_ts"] >= t - pd.Timedelta(spend_views.lookback)) & (TX["event_ts"] < t)]
        assert set(group["customer_id"]) == set(past["customer_id"]), t
    # customer 3 went quiet on day 20: gone once 30 days passed; customer 4 appears the day after its first visit
    first_4 = TX.loc[TX["customer_id"] == 4, "event_ts"].min()
    assert out.loc[out["customer_id"] == 4, "event_ts"].min() == first_4.floor("D") + pd.Timedelta(days=1)
    assert out.loc[out["customer_id"] == 3, "event_ts"].max() <= pd.Timestamp(T0 + timedelta(days=20 + 30))


def test_future_sum_activity_without_views_is_the_horizon(validated):
    """No views to feed (e.g. scoring rows built for a service-less check): active = seen in the last horizon."""
    start, end = T0 + timedelta(days=21), T0 + timedelta(days=30)
    out = label_rows(SPEND, validated, start, end)
    horizon = pd.Timedelta(days=SPEND.label.horizon_days)
    for t, group in out.groupby("event_ts"):
        past = TX[(TX["event_ts"] >= t - horizon) & (TX["event_ts"] < t)]
        assert set(group["customer_id"]) == set(past["customer_id"]), t
    # customer 3 went quiet on day 20: a week later it is no longer active without views (it is with them, below)
    t28 = pd.Timestamp(T0 + timedelta(days=28))
    assert 3 not in set(out.loc[out["event_ts"] == t28, "customer_id"])


def test_future_sum_label_is_zero_for_an_active_customer_who_spends_nothing(validated, spend_views):
    """Customer 3 is in the 30-day look-back but spends nothing next week: a real zero, not a missing row."""
    out = label_rows(SPEND, validated, T0 + timedelta(days=28), T0 + timedelta(days=30), views=spend_views)
    c3 = out[out["customer_id"] == 3]
    assert len(c3) == 2 and (c3["label"] == 0.0).all()


def test_label_horizon_comes_from_the_spec(validated):
    three_days = dataclasses.replace(
        SPEND, label=LabelSpec(kind="future_sum", column="amount", delay_days=3, horizon_days=3)
    )
    out = label_rows(three_days, validated, T0 + timedelta(days=35), T0 + timedelta(days=36))
    t = pd.Timestamp(T0 + timedelta(days=35))
    assert len(out) > 0
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


@pytest.mark.parametrize("warmup_days,first_row_day", [(7, 7), (None, 30), (0, 6)])
def test_training_skips_rows_within_the_warm_up_after_history_starts(validated, tmp_path, monkeypatch, warmup_days,
                                                                      first_row_day):
    """Rows right after the first batch have half-filled window features: training starts `warmup_days` (default:
    the views' lookback, 30 days) after it. Features are stubbed out: only the row window is under test."""
    monkeypatch.setattr(training, "with_features", lambda spec, repo, rows, tables=None: rows)
    spec = dataclasses.replace(FRAUD, warmup_days=warmup_days)
    as_of = datetime(2026, 2, 19, tzinfo=UTC)  # unclamped train_start: T0 + 6 days
    ts = build_training_set(spec, validated, FEATURE_REPO, as_of, tmp_path / "set")
    assert ts.window["train_start"] == (T0 + timedelta(days=first_row_day)).isoformat()
    rows = pd.concat([pd.read_parquet(ts.train_path), pd.read_parquet(ts.holdout_path)])
    want = TX[(TX["event_ts"] >= pd.Timestamp(T0 + timedelta(days=first_row_day)))
              & (TX["event_ts"] < pd.Timestamp(as_of - timedelta(days=2)))]
    assert sorted(rows["transaction_id"]) == sorted(want["transaction_id"])
    assert ts.train_rows + ts.holdout_rows == len(want)


# ---- `training.sampling`: the training rows are sampled as they are read; the holdout never is

def many_transactions(rows: int = 24_000, positive_rate: float = 0.05) -> pd.DataFrame:
    """Enough rows over the 8 weeks for sample shares to be measured: contract columns, ~5% positives."""
    rng = np.random.default_rng(5)
    df = pd.DataFrame({
        "transaction_id": [f"s{i:06d}" for i in range(rows)],
        "customer_id": rng.integers(1, 400, rows),
        "merchant_id": rng.integers(1, 30, rows),
        "category": rng.choice(list(CONTRACT.column("category").allowed), rows),
        "amount": rng.lognormal(3.5, 0.8, rows).round(2),
        "channel": rng.choice(list(CONTRACT.column("channel").allowed), rows),
        "country": rng.choice(["US", "GB", "DE"], rows),
        "event_ts": pd.to_datetime(T0, utc=True) + pd.to_timedelta(rng.integers(0, WEEKS * 7 * 86400, rows), "s"),
        "is_fraud": (rng.random(rows) < positive_rate).astype(int),
    })
    return df.sort_values("event_ts", kind="stable").reset_index(drop=True)[CONTRACT.column_names]


@pytest.fixture(scope="module")
def many(tmp_path_factory) -> Path:
    return write_weeks(tmp_path_factory.mktemp("many"), many_transactions())


AS_OF = datetime(2026, 2, 26, tzinfo=UTC)


def sampled_set(spec, validated_dir: Path, out: Path, monkeypatch, joined: list[int] | None = None,
                as_of: datetime = AS_OF):
    """build_training_set with the feature join stubbed out (it records how many rows it was given)."""
    def join(spec, repo, rows, tables=None):
        if joined is not None:
            joined.append(len(rows))
        return rows

    monkeypatch.setattr(training, "with_features", join)
    ts = build_training_set(spec, validated_dir, FEATURE_REPO, as_of, out)
    return ts, pd.read_parquet(ts.train_path), pd.read_parquet(ts.holdout_path)


def with_sampling(spec, rule: str, fraction: float, seed: int | None = None):
    from pipelines.spec import SamplingSpec

    return dataclasses.replace(spec, warmup_days=0,
                               sampling=SamplingSpec(rule, fraction, spec.seed if seed is None else seed))


def test_negatives_sampling_keeps_every_positive_a_fraction_of_negatives_and_the_whole_holdout(many, tmp_path,
                                                                                                monkeypatch):
    joined: list[int] = []
    full, full_train, full_hold = sampled_set(dataclasses.replace(FRAUD, warmup_days=0), many, tmp_path / "all",
                                              monkeypatch, joined)
    ts, train, hold = sampled_set(with_sampling(FRAUD, "negatives", 0.2), many, tmp_path / "sampled", monkeypatch,
                                  joined)
    # the holdout is the same file, row for row: the gate judges every row of it
    assert ts.holdout_sha256 == full.holdout_sha256 and ts.holdout_rows == full.holdout_rows > 500
    pd.testing.assert_frame_equal(hold, full_hold)
    assert training.WEIGHT not in hold.columns and training.WEIGHT not in full_train.columns
    # every positive of the window, about a fifth of its negatives (binomial: 4 standard deviations)
    pos, neg = full_train[full_train[LABEL] == 1], full_train[full_train[LABEL] == 0]
    assert set(train.loc[train[LABEL] == 1, "transaction_id"]) == set(pos["transaction_id"])
    kept = set(train.loc[train[LABEL] == 0, "transaction_id"])
    assert kept < set(neg["transaction_id"])
    assert abs(len(kept) - 0.2 * len(neg)) < 4 * (len(neg) * 0.2 * 0.8) ** 0.5
    # each sampled negative stands for 5 rows; the weighted set counts the window's rows
    assert set(train.loc[train[LABEL] == 0, training.WEIGHT]) == {5.0}
    assert set(train.loc[train[LABEL] == 1, training.WEIGHT]) == {1.0}
    assert abs(train[training.WEIGHT].sum() - len(full_train)) < 4 * 5 * (len(neg) * 0.2 * 0.8) ** 0.5
    assert ts.sampling == {"rule": "negatives", "fraction": 0.2, "seed": FRAUD.seed, "weight": 5.0,
                           "train_rows_before": full.train_rows, "train_rows_after": ts.train_rows}
    assert full.sampling is None
    # sampled before the feature join: the join saw the kept rows, not the window's
    assert joined == [full.train_rows + full.holdout_rows, ts.train_rows + ts.holdout_rows]
    assert ts.train_rows < 0.3 * full.train_rows


def test_sampling_keeps_the_same_rows_on_a_re_run_and_depends_on_the_seed(many, tmp_path, monkeypatch):
    spec = with_sampling(FRAUD, "negatives", 0.2)
    first, train, _ = sampled_set(spec, many, tmp_path / "1", monkeypatch)
    again, _, _ = sampled_set(spec, many, tmp_path / "2", monkeypatch)
    assert again.train_sha256 == first.train_sha256 and again.sampling == first.sampling
    wider, wide_train, _ = sampled_set(with_sampling(FRAUD, "negatives", 0.4), many, tmp_path / "3", monkeypatch)
    assert set(train["transaction_id"]) < set(wide_train["transaction_id"])    # a larger fraction: a superset
    other, other_train, _ = sampled_set(with_sampling(FRAUD, "negatives", 0.2, seed=7), many, tmp_path / "4",
                                        monkeypatch)
    assert set(other_train["transaction_id"]) != set(train["transaction_id"])
    assert other.holdout_sha256 == first.holdout_sha256


def test_rows_sampling_of_a_future_sum_model_is_uniform_and_leaves_the_holdout_alone(many, tmp_path, monkeypatch):
    full, full_train, full_hold = sampled_set(dataclasses.replace(SPEND, warmup_days=0), many, tmp_path / "all",
                                              monkeypatch)
    ts, train, hold = sampled_set(with_sampling(SPEND, "rows", 0.5), many, tmp_path / "half", monkeypatch)
    pd.testing.assert_frame_equal(hold, full_hold)
    assert set(train["row_id"]) < set(full_train["row_id"])       # one row per customer and day, by its id
    assert abs(len(train) - 0.5 * len(full_train)) < 4 * (len(full_train) * 0.25) ** 0.5
    assert set(train[training.WEIGHT]) == {2.0}
    merged = train.merge(full_train, on="row_id", suffixes=("", "_all"))
    assert len(merged) == len(train) and (merged[LABEL] == merged[f"{LABEL}_all"]).all()   # labels untouched
    assert (ts.sampling["train_rows_before"], ts.sampling["train_rows_after"]) == (full.train_rows, ts.train_rows)


def test_rows_with_a_broken_label_are_not_counted_as_sampled(bad_labels, tmp_path, monkeypatch):
    """A missing or non-0/1 label is left out by label_problems whatever the sample: the counts say what was
    trained on."""
    d, week = bad_labels
    spec = with_sampling(FRAUD, "negatives", 0.5)
    ts, train, _ = sampled_set(spec, d, tmp_path / "set", monkeypatch, as_of=T0 + timedelta(days=30))
    assert ts.window["train_start"] == (T0 + timedelta(days=7)).isoformat() and ts.holdout_rows == 0
    usable = week[week["is_fraud"].isin([0.0, 1.0])]        # the whole week is training rows
    assert ts.sampling["train_rows_before"] == len(usable)
    assert ts.sampling["train_rows_after"] == len(train) == ts.train_rows
    assert set(train[LABEL]) <= {0.0, 1.0}


@pytest.mark.parametrize("ids", ["text", "int", "mixed", "categorical"])
def test_rows_are_ordered_exactly_as_pandas_stable_sort_orders_them(ids):
    """with_features orders rows by (timestamp, row id) through Arrow (util.sorted_by): the same rows in the same
    order as pandas' stable sort, with tied timestamps, repeated ids, missing timestamps and ids, non-ASCII ids,
    and the columns Arrow cannot sort (mixed types, categoricals) sent to pandas."""
    from pipelines.util import sorted_by

    rng = np.random.default_rng(7)
    n = 5_000
    ts = pd.Series(pd.Timestamp("2026-02-08", tz="UTC") + pd.to_timedelta(rng.integers(0, 50, n), unit="s"))
    ts[rng.random(n) < 0.02] = pd.NaT
    row = {"text": pd.Series([f"tx-{i}" for i in rng.integers(0, 900, n)], dtype=object),
           "int": pd.Series(rng.integers(0, 900, n).astype("float64")),
           "mixed": pd.Series([f"tx-{i}" if i % 2 else int(i) for i in rng.integers(0, 900, n)], dtype=object),
           "categorical": pd.Series(pd.Categorical(rng.choice(["b", "a", "c"], n), categories=["c", "b", "a"]))}[ids]
    if ids == "text":
        row[rng.random(n) < 0.02] = None
        row[:40] = ["é-" + str(i) for i in range(40)]   # UTF-8 bytes order as code points do
    if ids == "int":
        row[rng.random(n) < 0.02] = np.nan
    frame = pd.DataFrame({"ts": ts, "row_id": row, "value": np.arange(n)}, index=rng.permutation(n) + 100)
    got = sorted_by(frame, ["ts", "row_id"])
    want = frame.sort_values(["ts", "row_id"], kind="stable").reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want)
