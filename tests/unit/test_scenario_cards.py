"""The seeded batch generator: deterministic, on contract when normal, broken exactly as the story says."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from pipelines.spec import REPO_ROOT, load_dataset
from scenarios.cards import BatchPlan, Scenario, batch_file_name, generate_day, generate_week, land_batch

pytestmark = pytest.mark.unit

CONTRACT = load_dataset("transactions", REPO_ROOT / "datasets")
# a small world: a few thousand rows per week keeps every test well under a second
SC = Scenario(customers=400, merchants=80, tx_per_week=3000)
DTYPE_KIND = {"string": "O", "int": "i", "float": "f", "timestamp": "M"}


@pytest.fixture(scope="module")
def normal() -> pd.DataFrame:
    return generate_week(SC, 1, "normal")


@pytest.fixture(scope="module")
def shifted() -> pd.DataFrame:
    return generate_week(SC, 8, "shifted")


def test_generate_week_is_deterministic(normal):
    again = generate_week(SC, 1, "normal")
    pd.testing.assert_frame_equal(normal, again)
    # and the week index matters: another week is a different batch
    other = generate_week(SC, 2, "normal")
    assert not other["transaction_id"].equals(normal["transaction_id"])
    assert not other["amount"].reset_index(drop=True).equals(normal["amount"].reset_index(drop=True))


def test_a_day_of_a_daily_feed_is_one_day_of_the_same_world_and_deterministic(normal):
    day = generate_day(SC, 9, "normal", 2000)
    pd.testing.assert_frame_equal(day, generate_day(SC, 9, "normal", 2000))
    first = SC.start + timedelta(days=9)
    assert len(day) == 2000
    assert day["event_ts"].min() >= pd.Timestamp(first)
    assert day["event_ts"].max() < pd.Timestamp(first + timedelta(days=1))
    assert day["event_ts"].is_monotonic_increasing
    # its row ids meet neither another day's nor a week's, and it is on contract
    assert not set(day["transaction_id"]) & set(generate_day(SC, 10, "normal", 2000)["transaction_id"])
    assert not set(day["transaction_id"]) & set(normal["transaction_id"])
    for rule in CONTRACT.columns:
        if rule.allowed:
            assert set(day[rule.name]) <= set(rule.allowed), rule.name
    # the same world: the customers' habits carry over (the day's spend per category is the week's, within noise)
    week_mean, day_mean = normal.groupby("category")["amount"].median(), day.groupby("category")["amount"].median()
    common = week_mean.index.intersection(day_mean.index)
    assert ((day_mean[common] / week_mean[common]).between(0.5, 2.0)).mean() > 0.8


def test_a_different_seed_gives_a_different_world():
    a = generate_week(SC, 0, "normal")
    b = generate_week(Scenario(customers=400, merchants=80, tx_per_week=3000, seed=8), 0, "normal")
    assert not a["amount"].equals(b["amount"])


@pytest.mark.parametrize("kind,week", [("normal", 1), ("shifted", 8), ("holiday", 6)])
def test_normal_and_shifted_batches_match_the_contract(kind, week):
    df = generate_week(SC, week, kind)
    assert list(df.columns) == CONTRACT.column_names
    for rule in CONTRACT.columns:
        col = df[rule.name]
        assert col.dtype.kind == DTYPE_KIND[rule.type], (rule.name, col.dtype)
        if not rule.nullable:
            assert col.notna().all(), rule.name
        if rule.unique:
            assert col.is_unique, rule.name
        if rule.allowed:
            assert set(col.unique()) <= set(rule.allowed), rule.name
        if rule.min is not None:
            assert col.min() >= rule.min, rule.name
        if rule.max is not None:
            assert col.max() <= rule.max, rule.name
    start = SC.start + timedelta(weeks=week)
    assert str(df["event_ts"].dt.tz) == "UTC"
    assert df["event_ts"].min() >= pd.Timestamp(start)
    assert df["event_ts"].max() < pd.Timestamp(start + timedelta(weeks=1))
    assert df["event_ts"].is_monotonic_increasing


def test_corrupted_batch_renames_amount_to_amt():
    df = generate_week(SC, 5, "corrupted")
    assert "amt" in df.columns and "amount" not in df.columns
    # "absurd amounts": a fifth of the rows were multiplied by 1000
    assert (df["amt"] > CONTRACT.column("amount").max).sum() > 0


def test_bad_rows_batch_has_a_dozen_countable_bad_rows():
    df = generate_week(SC, 6, "bad_rows")
    allowed_channels = set(CONTRACT.column("channel").allowed)
    negative = df["amount"] < 0
    unknown_channel = ~df["channel"].isin(allowed_channels)
    null_customer = df["customer_id"].isna()
    assert negative.sum() == 4
    assert unknown_channel.sum() == 4 and set(df.loc[unknown_channel, "channel"]) == {"telepathy"}
    assert null_customer.sum() == 4
    # twelve distinct rows; everything else is clean
    assert (negative | unknown_channel | null_customer).sum() == 12
    assert len(df) == SC.tx_per_week
    assert list(df.columns) == CONTRACT.column_names


def test_shift_changes_the_mix(normal, shifted):
    def wallet(df):
        return (df["channel"] == "wallet").mean()

    def risky(df):
        return df["category"].isin(["gaming", "crypto"]).mean()

    assert wallet(normal) < 0.15
    assert wallet(shifted) > 3 * wallet(normal)
    assert risky(shifted) > 2.5 * risky(normal)
    assert shifted["amount"].mean() > 1.4 * normal["amount"].mean()
    # new merchants open after the shift (ids beyond the base merchant range)
    assert normal["merchant_id"].max() < SC.merchants
    assert (shifted["merchant_id"] >= SC.merchants).mean() > 0.3


@pytest.mark.parametrize("kind,week", [("normal", 0), ("normal", 3), ("shifted", 9), ("holiday", 6)])
def test_fraud_rate_is_plausible(kind, week):
    rate = generate_week(SC, week, kind)["is_fraud"].mean()
    assert 0.005 <= rate <= 0.08


def test_shifted_fraud_comes_from_the_new_wallet_pattern(normal, shifted):
    def pattern(df):
        return (df["channel"] == "wallet") & df["category"].isin(["gaming", "crypto"])

    assert shifted["is_fraud"].mean() > normal["is_fraud"].mean()
    assert shifted.loc[pattern(shifted), "is_fraud"].mean() > 3 * shifted.loc[~pattern(shifted), "is_fraud"].mean()


def test_a_holiday_week_misleads_the_usual_signs_of_fraud(normal):
    """Busier, bigger baskets; fraud is the wallet gift-card scam, while big and foreign payments, fraud's usual
    signs, are not riskier than the rest that week (what a model retrained on it learns wrongly for later)."""
    holiday = generate_week(SC, 6, "holiday")
    scam = (holiday["channel"] == "wallet") & holiday["category"].isin(["gaming", "crypto"])
    assert len(holiday) == 5 * len(normal)
    assert holiday["amount"].median() > 1.5 * normal["amount"].median()
    assert holiday.loc[scam, "is_fraud"].mean() > 10 * holiday.loc[~scam, "is_fraud"].mean()

    def top_amount_lift(df):   # fraud rate among each customer's biggest decile vs the rest
        big = df["amount"] > df.groupby("customer_id")["amount"].transform(lambda a: a.quantile(0.9))
        return df.loc[big, "is_fraud"].mean() / max(df.loc[~big, "is_fraud"].mean(), 1e-9)

    assert top_amount_lift(normal) > 3 * top_amount_lift(holiday.loc[~scam])


def test_the_short_story_has_a_holiday_then_the_world_reverts():
    from scenarios.cards import short_scenario

    sc = short_scenario()
    kinds = [b.kind for b in sc.batches]
    h = kinds.index("holiday")
    assert kinds[h + 1] == "normal" and sc.drill_after == h and sc.experiment_after == h + 1
    assert kinds[:sc.train_after + 1] == ["normal"] * (sc.train_after + 1)   # landed at once as history


def test_land_batch_writes_the_pattern_name_and_relanding_is_byte_identical(tmp_path):
    plan = BatchPlan(2, "normal", "stable")
    landing = tmp_path / "landing" / "transactions"
    path = Path(land_batch(SC, plan, landing, CONTRACT.file_pattern))  # a local landing folder: a local path
    assert path == landing / "transactions_2026-01-19.parquet"
    assert path.name == batch_file_name(CONTRACT.file_pattern, plan.interval(SC.start)[0])
    assert sorted(p.name for p in landing.iterdir()) == [path.name]  # no temp file left behind
    first = path.read_bytes()
    pd.testing.assert_frame_equal(pd.read_parquet(path), generate_week(SC, 2, "normal"))
    land_batch(SC, plan, landing, CONTRACT.file_pattern)
    assert path.read_bytes() == first
    assert sorted(p.name for p in landing.iterdir()) == [path.name]


def test_land_batch_never_exposes_a_half_written_file(tmp_path, monkeypatch):
    """A writer that dies mid-file must leave the previously landed batch untouched (readers poll the folder)."""
    plan = BatchPlan(2, "normal", "stable")
    landing = tmp_path / "landing"
    path = Path(land_batch(SC, plan, landing, CONTRACT.file_pattern))
    before = path.read_bytes()

    def crash(self, target, *args, **kwargs):
        with open(target, "wb") as f:
            f.write(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", crash)
    with pytest.raises(OSError, match="disk full"):
        land_batch(SC, plan, landing, CONTRACT.file_pattern)
    assert path.read_bytes() == before
    # a fresh landing that crashes leaves no file under the batch name at all
    with pytest.raises(OSError):
        land_batch(SC, BatchPlan(3, "normal", "stable"), landing, CONTRACT.file_pattern)
    assert not (landing / "transactions_2026-01-26.parquet").exists()
