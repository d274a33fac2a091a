"""The generic feature engine against a brute-force oracle, its window boundaries, and declaration checks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from pipelines import feature_engine
from pipelines.feature_engine import FUNCTIONS, AggregationSpec, ViewSpec, check_view, compute_view

pytestmark = pytest.mark.unit

H, D = timedelta(hours=1), timedelta(days=1)
T0 = datetime(2026, 3, 2, tzinfo=UTC)


# ------------------------------------------------------------------------------------------------
# the oracle: for each t and entity, filter the events in [t - W, t) with plain pandas, apply the function


def _apply(function: str, values: np.ndarray, ts: np.ndarray, match: object) -> object:
    """One aggregation over one window's rows: `values` as objects, `ts` their int64 timestamps."""
    ok = ~pd.isna(values)
    vals, at = values[ok], ts[ok]
    if function == "count":
        return len(vals)
    if function == "count_distinct":
        return len(set(vals.tolist()))
    if function == "share":
        return sum(v == match for v in vals) / len(vals) if len(vals) else np.nan
    if function == "last":
        return max(v for v, t in zip(vals, at, strict=True) if t == at.max()) if len(vals) else None
    x = vals.astype(float)
    if function == "sum":
        return float(np.sum(x))
    if function == "std":
        return float(np.std(x, ddof=1)) if len(x) >= 2 else np.nan   # two-pass
    return float({"mean": np.mean, "min": np.min, "max": np.max}[function](x)) if len(x) else np.nan


def oracle(events: pd.DataFrame, view: ViewSpec, start: datetime, end: datetime) -> pd.DataFrame:
    ts = pd.to_datetime(events[view.timestamp], utc=True)
    ev = events.assign(_ts=ts.dt.tz_localize(None).to_numpy(dtype="datetime64[ns]").view("int64"))
    ev = ev[ts.notna() & events[list(view.join_keys)].notna().all(axis=1)]
    per_entity = [(key if isinstance(key, tuple) else (key,), rows) for key, rows in
                  ev.groupby(list(view.join_keys), sort=True)]
    columns = {a.column for a in view.aggregations}
    per_entity = [(key, rows["_ts"].to_numpy(), {c: rows[c].to_numpy(dtype=object) for c in columns})
                  for key, rows in per_entity]
    out = []
    ns = pd.Timedelta(1, "ns")
    g, lookback = pd.Timedelta(view.granularity) // ns, pd.Timedelta(view.lookback) // ns
    t = pd.Timestamp(start).value + g
    while t <= pd.Timestamp(end).value:
        for key, ets, cols in per_entity:
            if not ((ets >= t - lookback) & (ets < t)).any():
                continue
            row: dict[str, object] = dict(zip(view.join_keys, key, strict=True))
            row[view.feature_timestamp] = pd.Timestamp(t, tz="UTC")
            for a in view.aggregations:
                win = (ets >= t - pd.Timedelta(a.window) // ns) & (ets < t)
                with np.errstate(invalid="ignore"):      # inf - inf in a window: NaN, as documented
                    row[a.name] = _apply(a.function, cols[a.column][win], ets[win], a.match)
            row[view.created_timestamp] = pd.Timestamp(end)
            out.append(row)
        t += g
    return pd.DataFrame(out, columns=view.output_columns())


def assert_same(got: pd.DataFrame, want: pd.DataFrame, view: ViewSpec) -> None:
    assert list(got.columns) == view.output_columns()
    assert len(got) == len(want), f"{len(got)} rows, oracle {len(want)}"
    assert not got.duplicated([*view.join_keys, view.feature_timestamp]).any()
    assert str(got[view.feature_timestamp].dtype) == "datetime64[ns, UTC]"
    for c in [*view.join_keys, view.feature_timestamp, view.created_timestamp]:
        assert got[c].tolist() == want[c].tolist(), c
    for a in view.aggregations:
        g, w = got[a.name], want[a.name]
        if a.function in ("count", "count_distinct"):
            assert g.dtype == "int64", a.name
            assert g.tolist() == w.astype("int64").tolist(), a.name
        elif a.function == "last" and g.dtype == object:
            assert [None if pd.isna(x) else x for x in g] == [None if pd.isna(x) else x for x in w], a.name
        else:
            assert g.dtype == "float64", a.name
            # 1e-9 relative; the absolute 1e-10 (values are O(100)) only matters near 0: a std of equal
            # values is 0.0 here and ~1e-15 in the oracle's two-pass arithmetic
            bad = ~np.isclose(g.to_numpy(), w.to_numpy(dtype=float), rtol=1e-9, atol=1e-10, equal_nan=True)
            assert not bad.any(), (a.name, got[bad].head(), w[bad].head())


# ------------------------------------------------------------------------------------------------
# random data: nulls in values and keys, events exactly on bucket boundaries and outside the range


def make_events(rng: np.random.Generator, n: int, start: datetime, end: datetime, view: ViewSpec,
                key_kind: str) -> pd.DataFrame:
    lo, hi = pd.Timestamp(start + view.granularity - view.lookback), pd.Timestamp(end)
    span = (hi - lo) + 2 * view.granularity
    ts = lo - view.granularity + pd.to_timedelta(rng.random(n) * span.total_seconds(), unit="s")
    on_edge = rng.random(n) < 0.25
    ts = ts.where(~on_edge, ts.floor(pd.Timedelta(view.granularity)))
    ts = ts.where(rng.random(n) > 0.02, pd.NaT)
    ids = rng.integers(0, 9, n)
    if key_kind == "int":       # ints with nulls: float64, as pandas holds them
        keys = {"user_id": pd.Series(ids * 7 - 20, dtype="float64").where(rng.random(n) > 0.03)}
    elif key_kind == "int64":   # no nulls, sparse values (hashed, not directly addressed)
        keys = {"user_id": pd.Series(ids * 10**12 - 3, dtype="int64")}
    elif key_kind == "str":
        keys = {"user_id": pd.Series([f"u{i}" for i in ids], dtype=object).where(rng.random(n) > 0.03)}
    else:
        keys = {"shop": pd.Series(ids % 3, dtype="int64"),
                "region": pd.Series([["north", "south", "x"][i % 2 + (i > 6)] for i in ids], dtype=object)
                          .where(rng.random(n) > 0.03)}
    x = rng.normal(60, 25, n)
    x = np.where(rng.random(n) < 0.5, np.round(x), np.round(x, 2))     # repeated values: ties and std ~ 0
    x[rng.random(n) < 0.1] = np.nan
    cat = pd.Series(rng.choice(["card", "wallet", "cash"], n), dtype=object).where(rng.random(n) > 0.1)
    code = pd.Series(rng.integers(0, 6, n)).astype("Int64").where(rng.random(n) > 0.1)
    return pd.DataFrame({**keys, "ts": ts, "x": x, "cat": cat, "code": code,
                         "ignored": rng.random(n)}).sample(frac=1, random_state=int(rng.integers(1 << 30)))


def every_function(windows: list[timedelta]) -> tuple[AggregationSpec, ...]:
    aggs = []
    for i, f in enumerate(FUNCTIONS):
        for w in windows[i % 2::2] if i % 3 else windows:
            column = {"count_distinct": "code", "share": "cat"}.get(f, "x")
            aggs.append(AggregationSpec(f"{f}_{column}_{int(w.total_seconds()) // 3600}h", column, f, w,
                                        match="wallet" if f == "share" else None))
    aggs += [AggregationSpec("last_cat", "cat", "last", windows[-1]),
             AggregationSpec("count_cat", "cat", "count", windows[0]),
             AggregationSpec("distinct_cat", "cat", "count_distinct", windows[-1]),
             AggregationSpec("share_code", "code", "share", windows[1], match=3)]
    return tuple(aggs)


DAILY = [D, 2 * D, 7 * D, 30 * D]
HOURLY = [H, 3 * H, 24 * H, 50 * H]
CASES = [  # (granularity, windows, key kind, interval start offset, snapshots, events)
    (D, DAILY, "int", 0, 12, 700),
    (D, DAILY, "str", 3, 9, 600),
    (D, DAILY, "pair", 1, 8, 600),
    (D, DAILY, "int64", 2, 6, 500),
    (D, [D, 90 * D], "int", 0, 5, 400),
    (H, HOURLY, "int", 5, 30, 700),
    (H, HOURLY, "pair", 0, 26, 700),
    (H, [H, 72 * H], "str", 2, 20, 500),
]


@pytest.mark.parametrize("cells", ["dense", "sorted"])
@pytest.mark.parametrize(("g", "windows", "key_kind", "offset", "snapshots", "n"), CASES)
def test_matches_the_brute_force_oracle(g, windows, key_kind, offset, snapshots, n, cells, monkeypatch):
    if cells == "sorted":
        monkeypatch.setattr(feature_engine, "_DENSE_CELLS_MAX", 0)
    keys = ("shop", "region") if key_kind == "pair" else ("user_id",)
    view = ViewSpec("v", keys, "ts", g, every_function(windows))
    assert check_view(view) == []
    start = T0 + offset * g
    end = start + snapshots * g
    rng = np.random.default_rng(n + offset + snapshots)
    events = make_events(rng, n, start, end, view, key_kind)
    before = events.copy()
    got = compute_view(events, view, start, end)
    pd.testing.assert_frame_equal(events, before)        # the input is left as it was
    assert_same(got, oracle(events, view, start, end), view)
    assert [got[k].dtype for k in keys] == [events[k].dtype for k in keys]
    assert len(got) > snapshots, "the case should produce snapshots"
    pd.testing.assert_frame_equal(got, compute_view(events, view, start, end))   # idempotent


def test_naive_timestamps_and_interval_bounds_are_utc():
    view = ViewSpec("v", ("k",), "ts", D, (AggregationSpec("n", "x", "count", 2 * D),))
    naive = pd.DataFrame({"k": [1, 1], "ts": pd.to_datetime(["2026-03-02 10:00", "2026-03-03 00:00"]), "x": [1, 2]})
    aware = naive.assign(ts=naive["ts"].dt.tz_localize("UTC").dt.tz_convert("Asia/Tokyo"))
    start = datetime(2026, 3, 2)
    a, b = compute_view(naive, view, start, start + 2 * D), compute_view(aware, view, T0, T0 + 2 * D)
    pd.testing.assert_frame_equal(a, b)
    assert a["n"].tolist() == [1, 2]


# ------------------------------------------------------------------------------------------------
# boundaries, activity and fill values


def one_view(*aggs: AggregationSpec, g: timedelta = D) -> ViewSpec:
    return ViewSpec("payments", ("customer_id",), "event_ts", g, aggs)


def frame(rows: list[tuple[int, datetime, float | None]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["customer_id", "event_ts", "amount"]).astype({"amount": "float64"})


def test_an_event_exactly_at_t_belongs_to_the_next_snapshot():
    view = one_view(AggregationSpec("n_1d", "amount", "count", D))
    at = T0 + 2 * D                       # exactly the stamp of the snapshot of day 2
    out = compute_view(frame([(1, at, 5.0)]), view, T0, T0 + 4 * D)
    assert out["feature_ts"].tolist() == [pd.Timestamp(at + D)]
    assert out["n_1d"].tolist() == [1]
    hourly = one_view(AggregationSpec("n_1h", "amount", "count", H), g=H)
    out = compute_view(frame([(1, at - timedelta(microseconds=1), 1.0), (1, at, 2.0)]), hourly, at - H, at + 2 * H)
    assert out["feature_ts"].tolist() == [pd.Timestamp(at), pd.Timestamp(at + H)]
    assert out["n_1h"].tolist() == [1, 1]


def test_no_row_without_an_event_in_the_lookback_and_documented_fills_for_empty_windows():
    aggs = [AggregationSpec(f, "amount", f, D) for f in ("count", "sum", "mean", "min", "max", "std", "last")]
    aggs += [AggregationSpec("count_distinct", "amount", "count_distinct", D),
             AggregationSpec("share", "amount", "share", D, match=5.0),
             AggregationSpec("n_3d", "amount", "count", 3 * D)]
    view = one_view(*aggs)
    out = compute_view(frame([(1, T0 + timedelta(hours=5), 5.0), (2, T0 + timedelta(hours=6), None)]),
                       view, T0, T0 + 5 * D)
    # entity 1: its event counts on day 1 (all windows) and days 2-3 (3d lookback only); then no row
    assert out["customer_id"].tolist() == [1, 2, 1, 2, 1, 2]
    assert out["feature_ts"].tolist() == [pd.Timestamp(T0 + d * D) for d in (1, 1, 2, 2, 3, 3)]
    first, empty = out.iloc[0], out.iloc[2]
    assert (first["count"], first["sum"], first["mean"], first["min"], first["max"]) == (1, 5.0, 5.0, 5.0, 5.0)
    assert np.isnan(first["std"]) and first["last"] == 5.0 and first["share"] == 1.0
    assert (empty["count"], empty["sum"], empty["count_distinct"], empty["n_3d"]) == (0, 0.0, 0, 1)
    assert all(np.isnan(empty[c]) for c in ("mean", "min", "max", "std", "last", "share"))
    # an entity whose only event has a null value is active; its window has no value
    null_row = out.iloc[1]
    assert (null_row["count"], null_row["sum"], null_row["count_distinct"]) == (0, 0.0, 0)
    assert np.isnan(null_row["mean"]) and np.isnan(null_row["share"])
    assert out.dtypes[["count", "count_distinct", "n_3d"]].tolist() == ["int64"] * 3
    assert (out["created_ts"] == pd.Timestamp(T0 + 5 * D)).all()


def test_rows_outside_the_needed_range_and_null_keys_or_times_are_ignored():
    view = one_view(AggregationSpec("total_7d", "amount", "sum", 7 * D))
    start, end = T0 + 10 * D, T0 + 12 * D
    inside = [(1, start - 6 * D, 1.0), (1, end - timedelta(seconds=1), 2.0)]
    outside = [(1, start - 6 * D - timedelta(seconds=1), 100.0), (1, end, 1000.0), (2, start - 20 * D, 7.0)]
    events = frame(inside + outside)
    nulls = pd.DataFrame({"customer_id": [None, 1], "event_ts": [start, pd.NaT], "amount": [10_000.0, 20_000.0]})
    events = pd.concat([events.astype({"customer_id": "float64"}), nulls], ignore_index=True)
    out = compute_view(events, view, start, end)
    assert out["customer_id"].tolist() == [1, 1]
    assert out["total_7d"].tolist() == [1.0, 2.0]   # not 101 (before the range), not 1002 (at end)
    assert out["customer_id"].dtype == "float64"     # the key keeps its input dtype


def test_empty_input_and_no_snapshots_give_an_empty_frame_with_the_columns():
    view = one_view(AggregationSpec("n", "amount", "count", D), AggregationSpec("last", "amount", "last", D))
    for events in (pd.DataFrame(), frame([]), frame([(1, T0 - 30 * D, 1.0)])):
        out = compute_view(events, view, T0, T0 + 2 * D)
        assert out.empty and out.columns.tolist() == view.output_columns()
    assert str(out["feature_ts"].dtype) == "datetime64[ns, UTC]" and out["n"].dtype == "int64"
    assert compute_view(frame([(1, T0, 1.0)]), view, T0, T0).empty


def test_last_breaks_timestamp_ties_by_the_largest_value_and_keeps_strings():
    view = ViewSpec("v", ("k",), "ts", D, (AggregationSpec("last_x", "x", "last", 2 * D),
                                           AggregationSpec("last_s", "s", "last", 2 * D)))
    t = T0 + timedelta(hours=3)
    events = pd.DataFrame({"k": ["a"] * 4, "ts": [t, t, t, t - H], "x": [1.0, 3.0, np.nan, 9.0],
                           "s": ["b", "c", None, "z"]})
    out = compute_view(events, view, T0, T0 + D)
    assert out["last_x"].tolist() == [3.0] and out["last_s"].tolist() == ["c"]


# ------------------------------------------------------------------------------------------------
# declarations and arguments


@pytest.mark.parametrize(("change", "says"), [
    ({"function": "median"}, "unknown function 'median'"),
    ({"function": "share"}, "share needs `match`"),
    ({"match": "wallet"}, "only applies to function share"),
    ({"window": timedelta(hours=36)}, "not a whole multiple of the view's granularity 1d"),
    ({"window": timedelta(days=91)}, "outside [1h, 90d]"),
    ({"window": timedelta(minutes=30)}, "outside [1h, 90d]"),
])
def test_check_view_names_the_view_and_the_feature(change, says):
    agg = AggregationSpec("spend_7d", "amount", "sum", 7 * D)
    view = one_view(AggregationSpec(**{**agg.__dict__, **change}))
    problems = check_view(view)
    assert any(says in p and "'payments'" in p and "'spend_7d'" in p for p in problems), problems
    with pytest.raises(ValueError, match="misdeclared"):
        compute_view(frame([(1, T0, 1.0)]), view, T0, T0 + D)


def test_check_view_catches_view_level_problems():
    agg = AggregationSpec("spend_7d", "amount", "sum", 7 * D)
    assert check_view(one_view(agg)) == []
    assert any("granularity 7d is not supported" in p for p in check_view(one_view(agg, g=7 * D)))
    dup = check_view(one_view(agg, AggregationSpec("spend_7d", "amount", "max", D)))
    assert any("'payments'" in p and "'spend_7d' appears 2 times" in p for p in dup), dup
    clash = check_view(one_view(AggregationSpec("customer_id", "amount", "max", D)))
    assert any("'customer_id' appears 2 times" in p for p in clash), clash
    no_keys = ViewSpec("payments", (), "event_ts", D, (agg,))
    assert any("'payments': no join keys" in p for p in check_view(no_keys))
    assert one_view(agg, AggregationSpec("n", "amount", "count", 30 * D)).lookback == 30 * D


def test_misaligned_interval_says_which_bound():
    view = one_view(AggregationSpec("n", "amount", "count", D))
    events = frame([(1, T0, 1.0)])
    with pytest.raises(ValueError, match=r"start 2026-03-02T01:00:00\+00:00 is not aligned") as err:
        compute_view(events, view, T0 + H, T0 + 2 * D)
    assert "end" not in str(err.value)
    with pytest.raises(ValueError, match=r"'payments': end .* is not aligned.*granularity 1d"):
        compute_view(events, view, T0, T0 + 2 * D + timedelta(minutes=1))
    with pytest.raises(ValueError, match="before start"):
        compute_view(events, view, T0 + D, T0)
    hourly = one_view(AggregationSpec("n", "amount", "count", H), g=H)
    assert len(compute_view(events, hourly, T0 - H, T0 + 3 * H)) == 1


def test_missing_or_non_numeric_columns_are_named():
    view = one_view(AggregationSpec("spend", "amount", "sum", D))
    with pytest.raises(ValueError, match=r"column\(s\) 'amount' not in the events"):
        compute_view(frame([(1, T0, 1.0)]).drop(columns="amount"), view, T0, T0 + D)
    with pytest.raises(ValueError, match=r"feature 'spend': column 'amount' is object, not numeric"):
        compute_view(frame([(1, T0, 1.0)]).astype({"amount": object}).assign(amount="x"), view, T0, T0 + D)


def test_infinite_values_stay_in_their_entity_and_window():
    aggs = [AggregationSpec(f, "amount", f, 2 * D) for f in ("sum", "mean", "std", "max", "min")]
    view = one_view(*aggs)
    rows = [(1, T0, np.inf), (1, T0 + H, 1.0), (2, T0, 2.0), (2, T0 + H, 4.0), (3, T0, -np.inf), (3, T0 + H, np.inf),
            (4, T0 + D, 1.0), (4, T0 + D + H, 3.0)]
    events = frame(rows)
    got = compute_view(events, view, T0, T0 + 3 * D)
    assert_same(got, oracle(events, view, T0, T0 + 3 * D), view)
    assert got.loc[got["customer_id"] == 2, "std"].iloc[0] == pytest.approx(np.sqrt(2))
    assert np.isnan(got.loc[got["customer_id"] == 3, "sum"].iloc[0])
