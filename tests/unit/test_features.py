"""Daily feature snapshots against a brute-force oracle, the no-leakage stamp, and idempotent tables."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.features import VIEW_ENTITY, build_feature_tables, compute_snapshots, read_validated
from pipelines.spec import REPO_ROOT

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday; history covers T0 .. T0 + 56 days
DAYS = 56


def declared_features(view: str) -> list[str]:
    """The view's feature names as declared in the Feast repo (the schema Feast will read)."""
    text = (REPO_ROOT / "feature_repo" / "definitions.py").read_text()
    block = re.search(rf"^{view} = FeatureView\((.*?)^\)", text, re.S | re.M)
    assert block, f"{view} not declared in feature_repo/definitions.py"
    names = re.findall(r'Field\(name="([^"]+)"', block.group(1))
    return [n for n in names if n != VIEW_ENTITY[view]]


def make_history() -> pd.DataFrame:
    """3 customers, 3 merchants, irregular activity (gaps of > 7 and > 30 days), midnight edge cases."""
    rng = np.random.default_rng(3)
    rows = []
    for day in range(DAYS):
        for cust, p in ((1, 0.9), (2, 0.3), (3, 0.08)):
            if cust == 2 and 20 <= day < 29:  # a 9-day pause: the 7-day window empties
                continue
            if cust == 3 and day >= 12:  # customer 3 leaves: drops out 30 days later
                continue
            for _ in range(int(rng.random() < p) + int(rng.random() < p / 2)):
                ts = T0 + timedelta(days=day, seconds=int(rng.integers(0, 86400)))
                rows.append(
                    (
                        cust,
                        int(rng.integers(10, 13)),
                        round(float(rng.lognormal(4, 1)), 2),
                        str(rng.choice(["pos", "online", "wallet"])),
                        ts,
                    )
                )
    # exact day boundaries: at midnight the transaction belongs to the new day, never to the snapshot
    # stamped at that same instant
    rows += [
        (1, 10, 999.0, "wallet", T0 + timedelta(days=33)),
        (2, 11, 5.5, "pos", T0 + timedelta(days=36) - timedelta(microseconds=1)),
    ]
    df = pd.DataFrame(rows, columns=["customer_id", "merchant_id", "amount", "channel", "event_ts"])
    df["event_ts"] = pd.to_datetime(df["event_ts"], utc=True)
    df["transaction_id"] = [f"t{i:05d}" for i in range(len(df))]
    return df.sort_values("event_ts", kind="stable").reset_index(drop=True)


HISTORY = make_history()


def oracle(history: pd.DataFrame, key: str, entity: int, at: pd.Timestamp, days: int) -> pd.DataFrame:
    """The transactions a snapshot stamped `at` may summarise over the last `days` days."""
    h = history[history[key] == entity]
    return h[(h["event_ts"] < at) & (h["event_ts"] >= at - pd.Timedelta(days=days))]


FEATURE_NAME = re.compile(r"^(cust|merch)_(txn|amount|wallet)_(count|sum|mean|max|share)_(\d+)d$")


def expected(history: pd.DataFrame, key: str, entity: int, at: pd.Timestamp, feature: str) -> float:
    """Brute force, read off the feature's name: <entity>_<what>_<stat>_<N>d over [at - N days, at)."""
    m = FEATURE_NAME.match(feature)
    assert m, f"no oracle for feature {feature!r}"
    _, what, stat, days = m.groups()
    rows = oracle(history, key, entity, at, int(days))
    if stat == "count":
        return len(rows)
    if stat == "share":  # wallet share
        return (rows["channel"] == what).mean() if len(rows) else np.nan
    if stat in ("sum", "max"):  # no spend in the window: 0 (amounts are positive)
        return getattr(rows["amount"], stat)() if len(rows) else 0.0
    return rows["amount"].mean() if len(rows) else np.nan  # a mean of nothing is undefined


def check_against_oracle(snap: pd.DataFrame, history: pd.DataFrame, view: str, start: datetime, end: datetime):
    key = VIEW_ENTITY[view]
    features = declared_features(view)
    assert list(snap.columns) == [key, "event_ts", *features, "created_ts"]
    # a row exists for an entity on a day iff it had activity within the view's longest window
    window = max(int(FEATURE_NAME.match(f).group(4)) for f in features)
    stamps = pd.date_range(pd.Timestamp(start) + pd.Timedelta(days=1), pd.Timestamp(end), freq="D")
    want = {(e, t) for t in stamps for e in history[key].unique() if len(oracle(history, key, e, t, window)) > 0}
    got = set(zip(snap[key].tolist(), snap["event_ts"].tolist(), strict=True))
    assert got == want
    for row in snap.itertuples(index=False):
        entity = getattr(row, key)
        for f in features:
            want_value = expected(history, key, entity, row.event_ts, f)
            assert getattr(row, f) == pytest.approx(want_value, nan_ok=True), (view, entity, row.event_ts, f)


@pytest.mark.parametrize("view", ["customer_stats", "merchant_stats"])
def test_snapshots_equal_a_brute_force_oracle(view):
    start, end = T0 + timedelta(days=30), T0 + timedelta(days=40)
    history = HISTORY[
        (HISTORY["event_ts"] >= pd.Timestamp(start - timedelta(days=30))) & (HISTORY["event_ts"] < pd.Timestamp(end))
    ]
    snap = compute_snapshots(history, view, start, end)
    assert len(snap) > 20
    check_against_oracle(snap, history, view, start, end)


def test_snapshots_cover_pauses_and_departures():
    """Customer 2 pauses for 9 days (7-day count hits 0 but stays a snapshot row); customer 3 left on day 12."""
    start, end = T0 + timedelta(days=25), T0 + timedelta(days=45)
    history = HISTORY[
        (HISTORY["event_ts"] >= pd.Timestamp(start - timedelta(days=30))) & (HISTORY["event_ts"] < pd.Timestamp(end))
    ]
    snap = compute_snapshots(history, "customer_stats", start, end)
    c2 = snap[snap["customer_id"] == 2]
    assert (c2["cust_txn_count_7d"] == 0).any() and (c2["cust_txn_count_7d"] > 0).any()
    c3 = snap[snap["customer_id"] == 3]
    assert c3["event_ts"].max() <= pd.Timestamp(T0 + timedelta(days=12 + 30))
    check_against_oracle(snap, history, "customer_stats", start, end)


def test_snapshot_is_stamped_at_the_end_of_the_day_it_summarises():
    start, end = T0 + timedelta(days=33), T0 + timedelta(days=34)
    history = HISTORY[
        (HISTORY["event_ts"] >= pd.Timestamp(start - timedelta(days=30))) & (HISTORY["event_ts"] < pd.Timestamp(end))
    ]
    snap = compute_snapshots(history, "customer_stats", start, end)
    # one day summarised -> one stamp, midnight after that day
    assert set(snap["event_ts"]) == {pd.Timestamp(end)}
    # the 999.0 wallet payment at exactly 00:00 of day 33 belongs to day 33, which this snapshot covers
    c1 = snap[snap["customer_id"] == 1].iloc[0]
    assert c1["cust_txn_count_1d"] >= 1
    assert c1["cust_amount_sum_7d"] >= 999.0
    assert (snap["created_ts"] == pd.Timestamp(end)).all()


@pytest.mark.parametrize("extra", ["after_end", "before_lookback"])
def test_transactions_outside_the_window_never_leak_into_snapshots(extra):
    """compute_snapshots is documented to take `history (>= 30 days before)`: handing it more history
    (older rows, or rows after `end` such as the next batch) must not change any snapshot. In particular
    a transaction after a snapshot's time must never contribute to it."""
    start, end = T0 + timedelta(days=35), T0 + timedelta(days=42)
    inside = HISTORY[
        (HISTORY["event_ts"] >= pd.Timestamp(start - timedelta(days=30))) & (HISTORY["event_ts"] < pd.Timestamp(end))
    ]
    if extra == "after_end":
        more = HISTORY[HISTORY["event_ts"] >= pd.Timestamp(end)]
    else:
        more = HISTORY[HISTORY["event_ts"] < pd.Timestamp(start - timedelta(days=30))]
    assert len(more) > 0
    clean = compute_snapshots(inside, "customer_stats", start, end)
    widened = compute_snapshots(pd.concat([inside, more]), "customer_stats", start, end)
    pd.testing.assert_frame_equal(widened, clean)


def write_validated(validated: Path, history: pd.DataFrame) -> None:
    """One validated file per week, named by the week start as the validation stage does."""
    validated.mkdir(parents=True, exist_ok=True)
    week = (history["event_ts"] - pd.Timestamp(T0)).dt.days // 7
    for w, part in history.groupby(week):
        key = (T0 + timedelta(weeks=int(w))).strftime("%Y-%m-%d")
        part.reset_index(drop=True).to_parquet(validated / f"{key}.parquet", index=False)


def test_read_validated_returns_exactly_the_window(tmp_path):
    write_validated(tmp_path / "validated", HISTORY)
    (tmp_path / "validated" / "notes.parquet").write_bytes(b"not a batch")  # ignored: not a date
    start, end = T0 + timedelta(days=10, hours=6), T0 + timedelta(days=24)
    got = read_validated(tmp_path / "validated", start, end)
    want = HISTORY[(HISTORY["event_ts"] >= pd.Timestamp(start)) & (HISTORY["event_ts"] < pd.Timestamp(end))]
    assert sorted(got["transaction_id"]) == sorted(want["transaction_id"])
    assert read_validated(tmp_path / "validated", T0 + timedelta(days=400), T0 + timedelta(days=407)).empty


def test_build_feature_tables_matches_oracle_and_ignores_later_batches(tmp_path):
    validated, root = tmp_path / "validated", tmp_path / "features"
    write_validated(validated, HISTORY)  # includes the week after the interval
    start, end = T0 + timedelta(days=35), T0 + timedelta(days=42)
    ft = build_feature_tables(validated, root, ["customer_stats", "merchant_stats"], start, end, "2026-02-09")
    assert ft.interval_key == "2026-02-09"
    assert set(ft.paths) == {"customer_stats", "merchant_stats"}
    for view in ("customer_stats", "merchant_stats"):
        snap = pd.read_parquet(ft.paths[view])
        assert len(snap) == ft.rows[view] > 0
        # no snapshot summarises a transaction at or after its own timestamp; the oracle enforces it
        check_against_oracle(snap, HISTORY, view, start, end)
    merch = pd.read_parquet(ft.paths["merchant_stats"])
    assert merch["merch_wallet_share_7d"].between(0.0, 1.0).all()
    assert merch["merch_wallet_share_7d"].nunique() > 1


def test_build_feature_tables_is_idempotent_one_file_per_view_per_interval(tmp_path):
    validated, root = tmp_path / "validated", tmp_path / "features"
    write_validated(validated, HISTORY)
    views = ["customer_stats", "merchant_stats"]
    w5 = (T0 + timedelta(days=35), T0 + timedelta(days=42), "2026-02-09")
    w6 = (T0 + timedelta(days=42), T0 + timedelta(days=49), "2026-02-16")
    first = build_feature_tables(validated, root, views, *w5)
    before = {v: Path(p).read_bytes() for v, p in first.paths.items()}
    second = build_feature_tables(validated, root, views, *w5)
    assert second.to_dict() == first.to_dict()
    assert {v: Path(p).read_bytes() for v, p in second.paths.items()} == before
    build_feature_tables(validated, root, views, *w6)
    for view in views:
        assert sorted(p.name for p in (root / view).iterdir()) == ["2026-02-09.parquet", "2026-02-16.parquet"]
    assert {v: Path(p).read_bytes() for v, p in first.paths.items()} == before


def test_empty_interval_writes_no_table_and_removes_a_stale_one(tmp_path):
    validated, root = tmp_path / "validated", tmp_path / "features"
    write_validated(validated, HISTORY)
    start, end = T0 + timedelta(days=35), T0 + timedelta(days=42)
    build_feature_tables(validated, root, ["customer_stats"], start, end, "2026-02-09")
    assert (root / "customer_stats" / "2026-02-09.parquet").exists()
    for p in validated.iterdir():  # the batches were withdrawn; a re-run must not keep stale features
        p.unlink()
    ft = build_feature_tables(validated, root, ["customer_stats"], start, end, "2026-02-09")
    assert ft.rows == {"customer_stats": 0} and ft.paths == {}
    assert not (root / "customer_stats" / "2026-02-09.parquet").exists()


def test_unknown_view_is_rejected():
    with pytest.raises(ValueError, match="unknown feature view"):
        compute_snapshots(HISTORY, "device_stats", T0 + timedelta(days=35), T0 + timedelta(days=42))


def test_build_feature_tables_refuses_two_rows_for_one_entity_and_timestamp(tmp_path, monkeypatch):
    """Feast would silently settle such a pair by created_ts: the writer must never produce one."""
    from pipelines import features

    validated, root = tmp_path / "validated", tmp_path / "features"
    write_validated(validated, HISTORY)
    start, end = T0 + timedelta(days=35), T0 + timedelta(days=42)
    real = features.compute_snapshots

    def with_a_duplicate(history, view, s, e):
        snap = real(history, view, s, e)
        return pd.concat([snap, snap.iloc[[3]]], ignore_index=True)

    monkeypatch.setattr(features, "compute_snapshots", with_a_duplicate)
    row = real(read_validated(validated, start - timedelta(days=30), end), "customer_stats", start, end).iloc[3]
    with pytest.raises(ValueError, match=rf"customer_stats: 2 rows share \(customer_id, event_ts\), "
                                         rf"e\.g\. \({row.customer_id}, {re.escape(row.event_ts.isoformat())}\)"):
        build_feature_tables(validated, root, ["customer_stats"], start, end, "2026-02-09")
    assert not list((root / "customer_stats").glob("*.parquet"))


@pytest.mark.parametrize("other", [("2026-02-09-rerun", 35, 42), ("2026-02-11", 37, 38)])
def test_build_feature_tables_refuses_snapshots_already_in_another_interval_file(tmp_path, other):
    """The same interval (or a day inside it) under another key would put each snapshot in two files."""
    validated, root = tmp_path / "validated", tmp_path / "features"
    write_validated(validated, HISTORY)
    build_feature_tables(validated, root, ["customer_stats"], T0 + timedelta(days=35), T0 + timedelta(days=42),
                         "2026-02-09")
    key, a, b = other
    with pytest.raises(ValueError, match=r"customer_stats: \d+ snapshots for .* are already in .*2026-02-09\.parquet"):
        build_feature_tables(validated, root, ["customer_stats"], T0 + timedelta(days=a), T0 + timedelta(days=b), key)
    assert sorted(p.name for p in (root / "customer_stats").iterdir()) == ["2026-02-09.parquet"]
    # the neighbouring interval shares no snapshot: accepted
    build_feature_tables(validated, root, ["customer_stats"], T0 + timedelta(days=42), T0 + timedelta(days=49),
                         "2026-02-16")
