"""The declared feature views against a brute-force oracle, the no-leakage stamp, and idempotent tables.

Nothing here names a feature: every view of feature_repo/definitions.py is built from a small validated
history with `build_view_table`, and every declared aggregation (function, column, window, match) is
recomputed by brute force from the declaration itself.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines import storage
from pipelines.features import (
    build_view_table,
    build_view_tables,
    catch_up,
    dependent_keys,
    load_repo,
    read_validated,
    stale_keys,
    sync_feature_tables,
    table_keys,
)
from pipelines.spec import REPO_ROOT, load_datasets

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday; history covers T0 .. T0 + 56 days
DAYS = 56
REPO = load_repo(REPO_ROOT / "feature_repo")
VIEWS = sorted(REPO.views)
DATASETS = load_datasets()


def join_keys_of(dataset: str) -> list[str]:
    """The entity keys the views over `dataset` are keyed by (first the first view's), each once."""
    return list(dict.fromkeys(k for v in VIEWS if REPO.views[v].dataset == dataset for k in REPO.views[v].join_keys))


def make_history(contract) -> pd.DataFrame:
    """Every column of the contract; on the views' entity keys, 3 entities of the first key and 3 of the second
    (when the views have two), irregular activity (a 9-day pause, an entity of each key who leaves), unique
    event times and events exactly on day boundaries."""
    rng = np.random.default_rng(3)
    ts = contract.timestamp
    keys = join_keys_of(contract.name) or [contract.row_id]
    first, second = keys[0], (keys[1] if len(keys) > 1 else None)
    rows = []
    for day in range(DAYS):
        for one, p in ((1, 0.9), (2, 0.3), (3, 0.3)):
            if one == 2 and 20 <= day < 29:  # a 9-day pause: the 7-day windows empty
                continue
            if one == 3 and day >= 12:  # entity 3 leaves: drops out once the lookback passes
                continue
            others = [10, 11, 12] if day < 15 else [10, 11]  # entity 12 of the second key leaves on day 15
            for _ in range(int(rng.random() < p) + int(rng.random() < p / 2)):
                at = T0 + timedelta(days=day, seconds=int(rng.integers(1, 86400)), microseconds=len(rows))
                rows.append({first: one, ts: at, **({second: int(rng.choice(others))} if second else {})})
    # exact day boundaries: at midnight an event belongs to the new day, never to the snapshot stamped
    # at that same instant
    rows += [{first: 1, ts: T0 + timedelta(days=33), **({second: 10} if second else {})},
             {first: 2, ts: T0 + timedelta(days=36) - timedelta(microseconds=1), **({second: 11} if second else {})}]
    df = pd.DataFrame(rows)
    for c in contract.columns:  # any other contract column: a value it allows
        if c.name in df.columns and not df[c.name].isna().any():
            continue
        if c.allowed:
            fill = pd.Series(rng.choice(np.array(c.allowed, dtype=object), len(df)), index=df.index)
        elif c.type == "float":
            fill = pd.Series(np.round(rng.lognormal(3, 1, len(df)), 2), index=df.index)
        elif c.type == "int":
            fill = pd.Series(rng.integers(0, 5, len(df)), index=df.index)
        else:
            fill = pd.Series([f"v{i % 7}" for i in range(len(df))], index=df.index)
        df[c.name] = df[c.name].fillna(fill) if c.name in df.columns else fill
    df[ts] = pd.to_datetime(df[ts], utc=True)
    df = df.sort_values(ts, kind="stable").reset_index(drop=True)
    df[contract.row_id] = [f"t{i:05d}" for i in range(len(df))]
    return df[contract.column_names]


HISTORIES = {name: make_history(c) for name, c in DATASETS.items()}


def history_of(view_name: str) -> pd.DataFrame:
    return HISTORIES[REPO.views[view_name].dataset]


def write_validated(validated: Path, history: pd.DataFrame, ts: str | None = None) -> Path:
    """One validated file per week, named by the week start as the validation stage does (`ts`: the event time,
    by default the history's timestamp column)."""
    validated.mkdir(parents=True, exist_ok=True)
    ts = ts or next(c for c in history.columns if isinstance(history[c].dtype, pd.DatetimeTZDtype))
    week = (history[ts] - pd.Timestamp(T0)).dt.days // 7
    for w, part in history.groupby(week):
        part.reset_index(drop=True).to_parquet(validated / f"{T0 + timedelta(weeks=int(w)):%Y-%m-%d}.parquet",
                                               index=False)
    return validated


@pytest.fixture(scope="module")
def validated(tmp_path_factory) -> dict[str, Path]:
    """Each dataset's validated batches, all eight weeks (so later batches are there to leak, and must not)."""
    root = tmp_path_factory.mktemp("validated")
    return {name: write_validated(root / name, h, DATASETS[name].timestamp) for name, h in HISTORIES.items()}


# ---- the oracle: straight from the declaration


def window_rows(history: pd.DataFrame, ts: str, keys: list[str], entity: tuple, at: pd.Timestamp,
                window: timedelta) -> pd.DataFrame:
    """The events of `entity` a snapshot stamped `at` may summarise: [at - window, at)."""
    h = history
    for k, v in zip(keys, entity, strict=True):
        h = h[h[k] == v]
    return h[(h[ts] >= at - pd.Timedelta(window)) & (h[ts] < at)]


def brute_force(agg, rows: pd.DataFrame, ts: str) -> float:
    """One aggregation over its window's rows, nulls of the column ignored (as SQL does); an empty window:
    count, sum and count_distinct 0, anything else NaN."""
    rows = rows[rows[agg.column].notna()]
    col = rows[agg.column]
    if agg.function == "count":
        return float(len(rows))
    if agg.function == "sum":
        return float(col.sum()) if len(rows) else 0.0
    if agg.function == "count_distinct":
        return float(col.nunique())
    if len(rows) == 0:
        return np.nan
    if agg.function in ("mean", "min", "max"):
        return float(getattr(col, agg.function)())
    if agg.function == "std":
        return float(col.std(ddof=1))
    if agg.function == "last":  # the latest event's value; at one time, the largest
        latest = rows[rows[ts] == rows[ts].max()]
        return latest[agg.column].max()
    if agg.function == "share":
        assert agg.match is not None, agg
        return float((col == agg.match).mean())
    raise AssertionError(f"no oracle for function {agg.function!r} ({agg.name})")


def check_against_oracle(snap: pd.DataFrame, history: pd.DataFrame, view, start: datetime, end: datetime) -> None:
    spec = view.engine
    keys, ts = list(view.join_keys), spec.timestamp
    assert list(snap.columns) == [*keys, spec.feature_timestamp, *view.features, spec.created_timestamp]
    assert list(view.features) == [a.name for a in spec.aggregations]
    assert view.lookback == max(a.window for a in spec.aggregations)
    # a row exists for an entity at t iff it had an event within the lookback before t
    stamps = pd.date_range(pd.Timestamp(start) + spec.granularity, pd.Timestamp(end), freq=spec.granularity)
    entities = list(history[keys].drop_duplicates().itertuples(index=False, name=None))
    want = {(*e, t) for t in stamps for e in entities
            if len(window_rows(history, ts, keys, e, t, view.lookback)) > 0}
    got = list(snap[[*keys, spec.feature_timestamp]].itertuples(index=False, name=None))
    assert len(got) == len(set(got)), "one row per (entity, snapshot time)"
    assert set(got) == want
    assert (snap[spec.created_timestamp] == pd.Timestamp(end)).all()
    for row in snap.to_dict("records"):
        entity, at = tuple(row[k] for k in keys), row[spec.feature_timestamp]
        for agg in spec.aggregations:
            want_value = brute_force(agg, window_rows(history, ts, keys, entity, at, agg.window), ts)
            if pd.isna(want_value):  # missing: NaN, or None in a string column
                assert pd.isna(row[agg.name]), (view.name, entity, at, agg.name, row[agg.name])
            else:
                assert row[agg.name] == pytest.approx(want_value), (view.name, entity, at, agg.name)


def build(view_name: str, validated: dict[str, Path], root: Path, start: datetime, end: datetime, key: str):
    view = REPO.views[view_name]
    return build_view_table(view, validated[view.dataset], root, start, end, key)


INTERVALS = {
    "week": (T0 + timedelta(days=35), T0 + timedelta(days=42)),                 # a weekly batch
    "pauses_and_departures": (T0 + timedelta(days=21), T0 + timedelta(days=49)),  # windows empty, entities leave
}


@pytest.mark.parametrize("interval", sorted(INTERVALS))
@pytest.mark.parametrize("view_name", VIEWS)
def test_every_declared_aggregation_equals_a_brute_force_oracle(view_name, interval, validated, tmp_path):
    start, end = INTERVALS[interval]
    table = build(view_name, validated, tmp_path, start, end, f"{start:%Y-%m-%d}")
    assert table.path == str(tmp_path / view_name / f"{start:%Y-%m-%d}.parquet")
    snap = pd.read_parquet(table.path)
    assert table.rows == len(snap) > 10
    check_against_oracle(snap, history_of(view_name), REPO.views[view_name], start, end)
    # the history is rich enough for every feature to vary (a constant column would pass trivially)
    for f in REPO.views[view_name].features:
        assert snap[f].nunique(dropna=True) > 1, f


def test_the_oracle_sees_pauses_and_departures():
    """The history really has what the oracle test relies on: entities that go quiet, then leave."""
    start, end = INTERVALS["pauses_and_departures"]
    for view_name in VIEWS:
        view, history = REPO.views[view_name], history_of(view_name)
        keys = list(view.join_keys)
        last_seen = history.groupby(keys)[view.engine.timestamp].max()
        # at least one entity leaves: its last snapshot is within the interval, lookback after its last event
        # (a view whose lookback outlasts the 8-week history, e.g. 90 days, cannot see it; its functions and
        # windows are checked by the oracle all the same, and the engine's departure path by the other views)
        if pd.Timestamp(T0 + timedelta(days=12)) + pd.Timedelta(view.lookback) < pd.Timestamp(end):
            assert (last_seen + pd.Timedelta(view.lookback) < pd.Timestamp(end)).any(), view_name
    assert any(pd.Timestamp(T0 + timedelta(days=12)) + pd.Timedelta(REPO.views[v].lookback) < pd.Timestamp(end)
               for v in VIEWS)
    t0 = T0 + timedelta(days=29)
    assert len(window_rows(HISTORIES["transactions"], "event_ts", ["customer_id"], (2,), pd.Timestamp(t0),
                           timedelta(days=7))) == 0


@pytest.mark.parametrize("view_name", VIEWS)
def test_a_snapshot_is_stamped_at_the_end_of_what_it_summarises(view_name, validated, tmp_path):
    """The event at exactly T0 + 33 days 00:00 is not in the snapshot stamped at that instant, only in the next,
    even when both snapshots are computed from the same events (one two-day interval)."""
    view = REPO.views[view_name]
    spec = view.engine
    day = spec.granularity
    boundary = pd.Timestamp(T0 + timedelta(days=33))
    history = history_of(view_name)
    keys, ts = list(view.join_keys), spec.timestamp
    event = history[history[ts] == boundary].iloc[0]
    entity = tuple(event[k] for k in keys)
    # a one-granule interval: one stamp, its end
    one = pd.read_parquet(build(view_name, validated, tmp_path / "one", boundary.to_pydatetime(),
                                (boundary + day).to_pydatetime(), "one").path)
    assert set(one[spec.feature_timestamp]) == set(one[spec.created_timestamp]) == {boundary + day}
    # a two-granule interval that reads the boundary event: stamps at the boundary and one granule later
    two = pd.read_parquet(build(view_name, validated, tmp_path / "two", (boundary - day).to_pydatetime(),
                                (boundary + day).to_pydatetime(), "two").path)
    assert set(two[spec.feature_timestamp]) == {boundary, boundary + day}
    assert set(two[spec.created_timestamp]) == {boundary + day}
    mine = two[np.logical_and.reduce([two[k] == v for k, v in zip(keys, entity, strict=True)])]
    rows = {r[spec.feature_timestamp]: r for r in mine.to_dict("records")}
    assert set(rows) == {boundary, boundary + day}
    telling = []
    for agg in spec.aggregations:
        half_open = window_rows(history, ts, keys, entity, boundary, agg.window)
        row_id = DATASETS[view.dataset].row_id
        closed = pd.concat([half_open, history[history[row_id] == event[row_id]]])
        at_boundary = brute_force(agg, half_open, ts)
        assert rows[boundary][agg.name] == pytest.approx(at_boundary, nan_ok=True), agg.name
        if brute_force(agg, closed, ts) != pytest.approx(at_boundary, nan_ok=True):
            telling.append(agg.name)
        after = brute_force(agg, window_rows(history, ts, keys, entity, boundary + day, agg.window), ts)
        assert rows[boundary + day][agg.name] == pytest.approx(after, nan_ok=True), agg.name
    assert telling, "no aggregation of the view would notice the boundary event: the test proves nothing"


@pytest.mark.parametrize("view_name", VIEWS)
def test_events_at_or_after_a_snapshot_never_change_it(view_name, validated, tmp_path):
    """Extreme events exactly at a snapshot time inside the interval and at its end, and the later batches,
    change no snapshot at or before their time; a snapshot is the same whether computed in a one-day or a
    one-week interval."""
    view = REPO.views[view_name]
    spec = view.engine
    g, ts, keys = spec.granularity, spec.timestamp, list(view.join_keys)
    start, end = INTERVALS["week"]
    inner = pd.Timestamp(start + 3 * g)
    clean = pd.read_parquet(build(view_name, validated, tmp_path / "clean", start, end, "w").path)

    history = history_of(view_name)
    contract = DATASETS[view.dataset]
    poison = []
    for at in (inner, pd.Timestamp(end)):  # every entity active then gets an outlandish event exactly then
        p = history[history[ts] < at].groupby(keys).tail(1).copy()
        p[ts] = at
        for c in contract.columns:
            if c.type == "float":
                p[c.name] = 1e6
        poison.append(p)
    poison = pd.concat(poison, ignore_index=True)
    poison[contract.row_id] = [f"p{i}" for i in range(len(poison))]
    poisoned_history = pd.concat([history, poison], ignore_index=True)
    poisoned = {**validated, view.dataset: tmp_path / "poisoned"}
    write_validated(poisoned[view.dataset], history)
    poison.to_parquet(poisoned[view.dataset] / "late.parquet", index=False)

    week = pd.read_parquet(build(view_name, poisoned, tmp_path / "poisoned_week", start, end, "w").path)
    upto = week[spec.feature_timestamp] <= inner
    assert upto.any() and (~upto).any()
    pd.testing.assert_frame_equal(week[upto].reset_index(drop=True),
                                  clean[clean[spec.feature_timestamp] <= inner].reset_index(drop=True))
    check_against_oracle(week, poisoned_history, view, start, end)  # and they do count in the later snapshots

    daily = []
    for i in range((end - start) // g):
        s = start + i * g
        t = build(view_name, poisoned, tmp_path / "daily", s, s + g, f"{s:%Y-%m-%dT%H}")
        daily.append(pd.read_parquet(t.path))
    order = [spec.feature_timestamp, *keys]

    def norm(df: pd.DataFrame) -> pd.DataFrame:
        return df.drop(columns=spec.created_timestamp).sort_values(order).reset_index(drop=True)

    pd.testing.assert_frame_equal(norm(pd.concat(daily, ignore_index=True)), norm(week), check_dtype=False)


# ---- tables: idempotent, one file per interval, stale ones removed, no (entity, time) twice


@pytest.mark.parametrize("view_name", VIEWS)
def test_tables_are_idempotent_one_file_per_interval(view_name, validated, tmp_path):
    w5 = (T0 + timedelta(days=35), T0 + timedelta(days=42), "2026-02-09")
    w6 = (T0 + timedelta(days=42), T0 + timedelta(days=49), "2026-02-16")
    first = build(view_name, validated, tmp_path, *w5)
    before = Path(first.path).read_bytes()
    second = build(view_name, validated, tmp_path, *w5)
    assert second.to_dict() == first.to_dict()
    assert Path(second.path).read_bytes() == before
    build(view_name, validated, tmp_path, *w6)
    assert sorted(p.name for p in (tmp_path / view_name).iterdir()) == ["2026-02-09.parquet", "2026-02-16.parquet"]
    assert table_keys(tmp_path, view_name) == ["2026-02-09", "2026-02-16"]
    assert Path(first.path).read_bytes() == before


@pytest.mark.parametrize("view_name", VIEWS)
def test_intervals_built_together_equal_each_built_alone(view_name, validated, tmp_path, caplog):
    """A backfill's contiguous days are computed in passes (at most a lookback long), one file per interval: the
    same files as building each day alone (values to rounding), in the order asked, gaps and strays included."""
    view = REPO.views[view_name]
    days = [(T0 + timedelta(days=d), T0 + timedelta(days=d + 1), f"{T0 + timedelta(days=d):%Y-%m-%d}")
            for d in [*range(3, 40), 45, 47]]           # 37 contiguous days (more than one pass), then two strays
    asked = days[::-1]                                  # answered in the order asked
    with caplog.at_level("INFO", logger="pipelines.features.tables"):
        together = build_view_tables(view, validated[view.dataset], tmp_path / "together", asked)
    assert [t.interval_key for t in together] == [k for _, _, k in asked]
    passes = [r.getMessage() for r in caplog.records if "built in one pass" in r.getMessage()]
    # a pass spans at most the view's lookback: 37 contiguous days take ceil(37 / lookback days) passes
    assert len(passes) == -(-37 // max(1, view.engine.lookback.days)), passes
    alone = [build_view_table(view, validated[view.dataset], tmp_path / "alone", s, e, k) for s, e, k in asked]
    assert [t.rows for t in together] == [t.rows for t in alone]
    assert sum(t.rows for t in together) > 2 * len(asked)   # not a trivially empty comparison
    for a, b in zip(together, alone, strict=True):
        if a.path is None:
            assert b.path is None
            continue
        pd.testing.assert_frame_equal(pd.read_parquet(a.path), pd.read_parquet(b.path), check_exact=False,
                                      rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("view_name", VIEWS)
def test_an_empty_interval_writes_no_table_and_removes_a_stale_one(view_name, tmp_path):
    view = REPO.views[view_name]
    validated = {view.dataset: write_validated(tmp_path / "validated", history_of(view_name))}
    start, end = T0 + timedelta(days=35), T0 + timedelta(days=42)
    build(view_name, validated, tmp_path / "features", start, end, "2026-02-09")
    stale = tmp_path / "features" / view_name / "2026-02-09.parquet"
    assert stale.exists()
    for p in validated[view.dataset].iterdir():  # the batches were withdrawn; a re-run must not keep stale features
        p.unlink()
    table = build(view_name, validated, tmp_path / "features", start, end, "2026-02-09")
    assert (table.path, table.rows, table.interval_key, table.view) == (None, 0, "2026-02-09", view_name)
    assert not stale.exists()


@pytest.mark.parametrize("view_name", VIEWS)
def test_a_table_with_two_rows_for_one_entity_and_time_is_refused(view_name, validated, tmp_path, monkeypatch):
    """Feast would silently settle such a pair by created_ts: the writer must never produce one."""
    from pipelines import feature_engine

    view = REPO.views[view_name]
    start, end = T0 + timedelta(days=35), T0 + timedelta(days=42)
    real = feature_engine.compute_view
    dup_row = {}

    def with_a_duplicate(events, spec, s, e):
        snap = real(events, spec, s, e)
        dup_row["row"] = snap.iloc[3]
        return pd.concat([snap, snap.iloc[[3]]], ignore_index=True)

    monkeypatch.setattr(feature_engine, "compute_view", with_a_duplicate)
    keys, ts = ", ".join(view.join_keys), view.engine.feature_timestamp
    with pytest.raises(ValueError) as err:
        build(view_name, validated, tmp_path, start, end, "2026-02-09")
    row = dup_row["row"]
    entity = ", ".join(str(row[k]) for k in view.join_keys)
    # the message names the view, the key columns and the offending pair (entity, then the snapshot's date)
    assert re.search(rf"{view_name}: 2 rows share \({re.escape(keys)}, {ts}\), e\.g\. \({re.escape(entity)}, "
                     rf"[^)]*{row[ts]:%Y-%m-%d}", str(err.value)), str(err.value)
    assert not list((tmp_path / view_name).glob("*.parquet"))


@pytest.mark.parametrize("other", [("2026-02-09-rerun", 35, 42), ("2026-02-11", 37, 38)])
@pytest.mark.parametrize("view_name", VIEWS)
def test_snapshots_already_in_another_interval_file_are_refused(view_name, validated, tmp_path, other):
    """The same interval (or a day inside it) under another key would put each snapshot in two files."""
    build(view_name, validated, tmp_path, T0 + timedelta(days=35), T0 + timedelta(days=42), "2026-02-09")
    key, a, b = other
    with pytest.raises(ValueError, match=rf"{view_name}: \d+ snapshots for .* are already in .*2026-02-09\.parquet"):
        build(view_name, validated, tmp_path, T0 + timedelta(days=a), T0 + timedelta(days=b), key)
    assert sorted(p.name for p in (tmp_path / view_name).iterdir()) == ["2026-02-09.parquet"]
    # the neighbouring interval shares no snapshot: accepted
    build(view_name, validated, tmp_path, T0 + timedelta(days=42), T0 + timedelta(days=49), "2026-02-16")
    assert table_keys(tmp_path, view_name) == ["2026-02-09", "2026-02-16"]


# ---- which later tables a re-validated batch invalidates


def _sees(view, key: datetime, next_key: datetime, start: datetime, end: datetime) -> bool:
    """Does some snapshot of the table [key, next_key) summarise an event of [start, end)?"""
    g = view.engine.granularity
    t = key + g
    while t <= next_key:
        if any(t - a.window < end and t > start for a in view.engine.aggregations):
            return True
        t += g
    return False


@pytest.mark.parametrize("view_name", VIEWS)
def test_dependent_keys_are_the_later_tables_within_the_lookback(view_name):
    view = REPO.views[view_name]
    weeks = [T0 + timedelta(weeks=i) for i in range(12)]
    keys = [f"{w:%Y-%m-%d}" for w in weeks] + ["notes"]  # a key that is no date is never a dependant
    start, end = weeks[2], weeks[3]
    got = dependent_keys(view, keys, start, end)
    horizon = end + view.lookback
    assert got == [f"{w:%Y-%m-%d}" for w in weeks if end <= w < horizon]
    assert got and got[0] == f"{end:%Y-%m-%d}"  # the next table always depends on this one
    assert f"{start:%Y-%m-%d}" not in got  # the interval itself is rebuilt anyway, not a dependant
    # every table whose snapshots see the interval's events is listed; none that cannot is
    for w, nxt in zip(weeks, weeks[1:], strict=False):
        if w >= end:
            assert (f"{w:%Y-%m-%d}" in got) == _sees(view, w, nxt, start, end), w
    # the boundary itself, at the keys' own resolution: a table starting exactly lookback later is out
    daily = [f"{horizon - timedelta(days=2):%Y-%m-%d}", f"{horizon:%Y-%m-%d}", f"{end - timedelta(days=1):%Y-%m-%d}"]
    assert dependent_keys(view, daily, start, end) == [daily[0]]
    assert dependent_keys(view, [], start, end) == []


# ---- stale tables: whatever events Airflow delivered, no reader sees a table older than its inputs

WEEKLY = "0 0 * * 1"  # the fixture's batches are weekly (Mondays), whatever the dataset's own cadence


def _revalidate(path: Path) -> None:
    """A re-validation of the batch: its file rewritten (after the tables were built)."""
    path.write_bytes(path.read_bytes())


@pytest.mark.parametrize("view_name", VIEWS)
def test_stale_tables_are_found_and_caught_up_in_any_order(view_name, validated, tmp_path):
    import shutil

    view = REPO.views[view_name]
    batches = Path(shutil.copytree(validated[view.dataset], tmp_path / "validated"))
    for f in batches.glob("*.parquet"):  # validated an hour ago
        os.utime(f, (f.stat().st_mtime - 3600, f.stat().st_mtime - 3600))
    root = tmp_path / "features"
    keys = sorted(p.stem for p in batches.glob("*.parquet"))
    assert stale_keys(view, batches, root, WEEKLY) == keys  # nothing built yet: every interval is behind

    built = catch_up(view, batches, root, WEEKLY, skip=(keys[0],))
    assert [t.interval_key for t in built] == keys[1:]
    assert stale_keys(view, batches, root, WEEKLY) == [keys[0]]
    catch_up(view, batches, root, WEEKLY)
    assert stale_keys(view, batches, root, WEEKLY) == []
    # what catch_up wrote is what the features run writes for that interval
    start = datetime.fromisoformat(keys[5]).replace(tzinfo=UTC)
    direct = build(view_name, {view.dataset: batches}, tmp_path / "direct", start, start + timedelta(days=7), keys[5])
    pd.testing.assert_frame_equal(pd.read_parquet(root / view_name / f"{keys[5]}.parquet"),
                                  pd.read_parquet(direct.path))

    # an interval whose features run never happened (its asset event was lost in a burst)
    (root / view_name / f"{keys[5]}.parquet").unlink()
    assert stale_keys(view, batches, root, WEEKLY) == [keys[5]]
    catch_up(view, batches, root, WEEKLY)

    # a past batch re-validated after the later tables were built: it and every table that reads it
    _revalidate(batches / f"{keys[3]}.parquet")
    w3 = datetime.fromisoformat(keys[3]).replace(tzinfo=UTC)
    assert stale_keys(view, batches, root, WEEKLY) == [keys[3], *dependent_keys(view, keys, w3, w3 + timedelta(days=7))]
    assert len(stale_keys(view, batches, root, WEEKLY)) >= 2
    catch_up(view, batches, root, WEEKLY)
    assert stale_keys(view, batches, root, WEEKLY) == []

    # a batch with no snapshot to take (no events in any lookback) is built once, found empty, and stays current
    far = f"{T0 + timedelta(days=400):%Y-%m-%d}"
    pd.read_parquet(batches / f"{keys[0]}.parquet").head(0).to_parquet(batches / f"{far}.parquet", index=False)
    assert stale_keys(view, batches, root, WEEKLY) == [far]
    [empty] = catch_up(view, batches, root, WEEKLY)
    assert (empty.path, empty.rows) == (None, 0)
    assert not (root / view_name / f"{far}.parquet").exists()
    assert stale_keys(view, batches, root, WEEKLY) == []


# ---- reading validated batches


def test_read_validated_returns_exactly_the_window_and_skips_files_by_statistics(validated, monkeypatch):
    history = HISTORIES["transactions"]
    d = validated["transactions"]
    read: list[str] = []
    real = storage.read_parquet

    def spy(uri, columns=None):
        read.append(storage.name(uri))
        return real(uri, columns=columns)

    monkeypatch.setattr(storage, "read_parquet", spy)
    start, end = T0 + timedelta(days=10, hours=6), T0 + timedelta(days=24)
    got = read_validated(d, "event_ts", start, end)
    want = history[(history["event_ts"] >= pd.Timestamp(start)) & (history["event_ts"] < pd.Timestamp(end))]
    assert sorted(got["transaction_id"]) == sorted(want["transaction_id"])
    assert list(got.columns) == list(history.columns)
    assert read == ["2026-01-12.parquet", "2026-01-19.parquet", "2026-01-26.parquet"]  # weeks 1-3 of 8

    # exact boundaries: an event at `start` is in, one at `end` is out
    read.clear()
    start, end = T0 + timedelta(days=33), T0 + timedelta(days=36) - timedelta(microseconds=1)
    got = read_validated(d, "event_ts", start, end, columns=["transaction_id", "event_ts"])
    want = history[(history["event_ts"] >= pd.Timestamp(start)) & (history["event_ts"] < pd.Timestamp(end))]
    assert sorted(got["transaction_id"]) == sorted(want["transaction_id"])
    assert pd.Timestamp(start) in set(got["event_ts"]) and pd.Timestamp(end) not in set(got["event_ts"])
    assert list(got.columns) == ["transaction_id", "event_ts"]
    assert read == ["2026-02-02.parquet", "2026-02-09.parquet"]

    read.clear()
    nothing = read_validated(d, "event_ts", T0 + timedelta(days=400), T0 + timedelta(days=407), columns=["amount"])
    assert nothing.empty and list(nothing.columns) == ["amount"] and read == []


def test_read_validated_ignores_the_batch_cadence_and_reads_files_without_statistics(tmp_path):
    """Batches of any length and name; a file whose statistics say nothing is read and filtered, not skipped."""
    history = HISTORIES["transactions"]
    d = tmp_path / "validated"
    d.mkdir()
    cuts = [T0, T0 + timedelta(days=3), T0 + timedelta(days=17, hours=5), T0 + timedelta(days=DAYS + 1)]
    for i, (lo, hi) in enumerate(zip(cuts, cuts[1:], strict=False)):
        part = history[(history["event_ts"] >= pd.Timestamp(lo)) & (history["event_ts"] < pd.Timestamp(hi))]
        part.to_parquet(d / f"batch-{i}.parquet", index=False, write_statistics=(i != 2))
    start, end = T0 + timedelta(days=2), T0 + timedelta(days=20)
    got = read_validated(d, "event_ts", start, end)
    want = history[(history["event_ts"] >= pd.Timestamp(start)) & (history["event_ts"] < pd.Timestamp(end))]
    assert sorted(got["transaction_id"]) == sorted(want["transaction_id"])
    late = read_validated(d, "event_ts", T0 + timedelta(days=50), T0 + timedelta(days=52))
    assert len(late) > 0  # only in batch-2, which has no statistics
    assert sorted(late["transaction_id"]) == sorted(
        history.loc[history["event_ts"].between(pd.Timestamp(T0 + timedelta(days=50)),
                                                pd.Timestamp(T0 + timedelta(days=52)), inclusive="left"),
                    "transaction_id"])


def test_a_column_only_counted_is_read_as_presence_and_counts_the_same(tmp_path):
    """A column the view only counts is read as 1.0 / NaN (float32), not as its values: nulls stay nulls, and a
    view counting it builds the same table as from the values."""
    history = HISTORIES["transactions"].copy()
    history.loc[history.index[::7], "transaction_id"] = None       # some nulls: count skips them
    d = tmp_path / "validated"
    write_validated(d, history)
    start, end = T0 + timedelta(days=10), T0 + timedelta(days=20)
    flags = read_validated(d, "event_ts", start, end, columns=["transaction_id", "event_ts"],
                           presence=("transaction_id",))
    values = read_validated(d, "event_ts", start, end, columns=["transaction_id", "event_ts"])
    assert str(flags["transaction_id"].dtype) == "float32"
    assert flags["transaction_id"].isna().tolist() == values["transaction_id"].isna().tolist()
    assert set(flags["transaction_id"].dropna()) == {1.0} and values["transaction_id"].isna().sum() > 0
    counted = [v for v in VIEWS if any(a.function == "count" for a in REPO.views[v].engine.aggregations)
               and REPO.views[v].dataset == "transactions"]
    assert counted
    for name in counted:
        view = REPO.views[name]
        snap = pd.read_parquet(build_view_table(view, d, tmp_path / "f", start, end, "k").path)
        check_against_oracle(snap, history, view, start, end)


# ---- syncing the tables into the local cache Feast reads


def test_sync_copies_new_and_rewritten_tables_and_drops_withdrawn_ones(validated, tmp_path):
    view_name = VIEWS[0]
    store, cache = tmp_path / "store", tmp_path / "cache"
    w5 = (T0 + timedelta(days=35), T0 + timedelta(days=42), "2026-02-09")
    w6 = (T0 + timedelta(days=42), T0 + timedelta(days=49), "2026-02-16")
    build(view_name, validated, store, *w5)
    build(view_name, validated, store, *w6)
    assert sync_feature_tables(store, cache, [view_name]) == 2
    assert sorted(p.name for p in (cache / view_name).iterdir()) == ["2026-02-09.parquet", "2026-02-16.parquet"]
    assert sync_feature_tables(store, cache, [view_name]) == 0  # unchanged: nothing copied
    (store / view_name / "2026-02-16.parquet").unlink()
    assert sync_feature_tables(store, cache, [view_name]) == 0
    assert sorted(p.name for p in (cache / view_name).iterdir()) == ["2026-02-09.parquet"]
    rewritten = store / view_name / "2026-02-09.parquet"
    build(view_name, validated, store, *w5)  # the interval rebuilt: the cache must take the new file
    mtime = rewritten.stat().st_mtime_ns + 10**9
    os.utime(rewritten, ns=(mtime, mtime))
    assert sync_feature_tables(store, cache, [view_name]) == 1
    assert (cache / view_name / "2026-02-09.parquet").read_bytes() == rewritten.read_bytes()
    assert sync_feature_tables(cache, cache, [view_name]) == 0  # the store is the cache: nothing to do


# ---- the declarations loader


HEADER = '''
from datetime import timedelta
from feast import BatchFeatureView, Entity, FeatureService, Field, FileSource
from feast.aggregation import Aggregation
from feast.types import Float64, Int64
from feast.value_type import ValueType

customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.INT64)


def view(name, aggregations, fields, tags=None, **kw):
    tags = {"flywheel.dataset": "transactions", "flywheel.granularity": "daily"} if tags is None else tags
    return BatchFeatureView(
        name=name, entities=[customer],
        source=FileSource(name=f"{name}_table", path=f"/nowhere/{name}/*.parquet", timestamp_field="feature_ts",
                          created_timestamp_column="created_ts"),
        aggregations=aggregations, schema=[Field(name="customer_id", dtype=Int64), *fields], tags=tags, **kw)
'''
GOOD = '''
good = view("good", [Aggregation(column="amount", function="sum", time_window=timedelta(days=7), name="spent_7d"),
                     Aggregation(column="channel", function="share", time_window=timedelta(days=2), name="pos_2d")],
            [Field(name="spent_7d", dtype=Float64),
             Field(name="pos_2d", dtype=Float64, tags={"flywheel.match": "pos"})])
'''


def repo_with(tmp_path: Path, body: str) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir(exist_ok=True)
    (repo / "definitions.py").write_text(HEADER + body)
    return repo


def test_a_small_declaration_loads_with_its_defaults(tmp_path):
    repo = load_repo(repo_with(tmp_path, GOOD + '''
hourly = view("hourly", [Aggregation(column="amount", function="max", time_window=timedelta(hours=6), name="mx")],
              [Field(name="mx", dtype=Float64)],
              tags={"flywheel.dataset": "transactions", "flywheel.granularity": "hourly"})
kept = view("kept", [Aggregation(column="amount", function="mean", time_window=timedelta(days=1), name="m")],
            [Field(name="m", dtype=Float64)], ttl=timedelta(days=5))
svc = FeatureService(name="svc", features=[good, kept])
'''), datasets=DATASETS)
    good = repo.views["good"]
    assert (good.dataset, good.join_keys, good.features) == ("transactions", ("customer_id",), ("spent_7d", "pos_2d"))
    assert good.lookback == timedelta(days=7)
    assert good.engine.timestamp == DATASETS["transactions"].timestamp
    assert good.engine.feature_timestamp == "feature_ts" and good.engine.created_timestamp == "created_ts"
    assert [a.match for a in good.engine.aggregations] == [None, "pos"]
    # TTL: 3 granularities unless declared
    assert good.ttl == timedelta(days=3) and good.engine.granularity == timedelta(days=1)
    hourly = repo.views["hourly"]
    assert hourly.ttl == timedelta(hours=3) and hourly.engine.granularity == timedelta(hours=1)
    assert repo.views["kept"].ttl == timedelta(days=5)
    assert repo.services == {"svc": ("good", "kept")}


ALL_FUNCTIONS = '''
def agg(column, function, window, name):
    return Aggregation(column=column, function=function, time_window=window, name=name)


DAY, HOUR = timedelta(days=1), timedelta(hours=1)
every = view("every", [
    agg("transaction_id", "count", 2 * DAY, "n_2d"), agg("amount", "sum", 3 * DAY, "sum_3d"),
    agg("amount", "mean", 7 * DAY, "mean_7d"), agg("amount", "min", 3 * DAY, "min_3d"),
    agg("amount", "max", DAY, "max_1d"), agg("amount", "std", 7 * DAY, "std_7d"),
    agg("merchant_id", "count_distinct", 7 * DAY, "merchants_7d"), agg("channel", "last", 2 * DAY, "last_channel_2d"),
    agg("amount", "last", 7 * DAY, "last_amount_7d"), agg("is_fraud", "share", 7 * DAY, "fraud_share_7d"),
    agg("channel", "share", 3 * DAY, "wallet_share_3d")],
    [Field(name=n, dtype=Float64) for n in ("n_2d", "sum_3d", "mean_7d", "min_3d", "max_1d", "std_7d", "merchants_7d",
                                             "last_channel_2d", "last_amount_7d")]
    + [Field(name="fraud_share_7d", dtype=Float64, tags={"flywheel.match": "1"}),
       Field(name="wallet_share_3d", dtype=Float64, tags={"flywheel.match": "wallet"})])
hourly = view("hourly", [agg("amount", "sum", 6 * HOUR, "sum_6h"), agg("transaction_id", "count", 30 * HOUR, "n_30h"),
                         agg("amount", "std", 48 * HOUR, "std_48h")],
              [Field(name=n, dtype=Float64) for n in ("sum_6h", "n_30h", "std_48h")],
              tags={"flywheel.dataset": "transactions", "flywheel.granularity": "hourly"})
'''


@pytest.mark.parametrize("view_name,days", [("every", 7), ("hourly", 2)])
def test_every_function_a_declaration_may_use_is_computed_as_declared(view_name, days, validated, tmp_path):
    """Beyond the shipped views: each function, an int `flywheel.match` ("1" matches the int column's 1) and an
    hourly granularity, through the same loader, table builder and oracle."""
    repo = load_repo(repo_with(tmp_path, ALL_FUNCTIONS), datasets=DATASETS)
    view = repo.views[view_name]
    assert {a.function for a in repo.views["every"].engine.aggregations} == {
        "count", "sum", "mean", "min", "max", "std", "count_distinct", "last", "share"}
    assert [a.match for a in repo.views["every"].engine.aggregations][-2:] == [1, "wallet"]
    start, end = T0 + timedelta(days=30), T0 + timedelta(days=30 + days)
    table = build_view_table(view, validated[view.dataset], tmp_path / "features", start, end, "k")
    snap = pd.read_parquet(table.path)
    assert len(snap) > 10
    check_against_oracle(snap, HISTORIES[view.dataset], view, start, end)
    for f in view.features:
        assert snap[f].nunique(dropna=True) > 1, f


@pytest.mark.parametrize("body,needles", [
    ('''
bad = view("bad", [Aggregation(column="amount", function="sum", time_window=timedelta(days=7), name="s")],
           [Field(name="s", dtype=Float64)], tags={"flywheel.dataset": "payments"})
''', ["view bad", "flywheel.dataset", "'payments'"]),
    ('''
bad = view("bad", [Aggregation(column="amt", function="sum", time_window=timedelta(days=7), name="s")],
           [Field(name="s", dtype=Float64)])
''', ["view bad", "feature s", "`amt`", "transactions.yaml"]),
    ('''
bad = view("bad", [Aggregation(column="channel", function="share", time_window=timedelta(days=7), name="s")],
           [Field(name="s", dtype=Float64)])
''', ["view bad", "share", "flywheel.match"]),
    ('''
bad = view("bad", [Aggregation(column="amount", function="sum", time_window=timedelta(days=7), name="s")],
           [Field(name="other", dtype=Float64)])
''', ["view bad", "feature s", "no Field"]),
    ('''
bad = view("bad", [Aggregation(column="amount", function="sum", time_window=timedelta(days=7), name="s")],
           [Field(name="s", dtype=Float64)],
           tags={"flywheel.dataset": "transactions", "flywheel.granularity": "weekly"})
''', ["view bad", "flywheel.granularity", "'weekly'"]),
])
def test_a_bad_declaration_is_a_spec_error_naming_the_view(tmp_path, body, needles):
    from pipelines.spec import SpecError

    repo = repo_with(tmp_path, GOOD + body)
    with pytest.raises(SpecError) as err:
        load_repo(repo, datasets=DATASETS)
    msg = str(err.value)
    assert str(repo / "definitions.py") in msg
    for needle in needles:
        assert needle in msg, (needle, msg)
    assert "view good" not in msg  # only the broken view is blamed


def test_every_bad_view_is_reported_at_once(tmp_path):
    from pipelines.spec import SpecError

    repo = repo_with(tmp_path, '''
one = view("one", [Aggregation(column="amt", function="sum", time_window=timedelta(days=7), name="s")],
           [Field(name="s", dtype=Float64)])
two = view("two", [Aggregation(column="amount", function="sum", time_window=timedelta(days=7), name="s")],
           [Field(name="s", dtype=Float64)], tags={"flywheel.dataset": "payments"})
svc = FeatureService(name="svc", features=[one, two])
''')
    with pytest.raises(SpecError) as err:
        load_repo(repo, datasets=DATASETS)
    assert "view one" in str(err.value) and "view two" in str(err.value)


def test_the_shipped_declarations_read_their_datasets():
    for view in REPO.views.values():
        contract = DATASETS[view.dataset]
        assert set(view.join_keys) <= set(contract.column_names)
        assert {a.column for a in view.engine.aggregations} <= set(contract.column_names)
        assert view.engine.timestamp == contract.timestamp
        assert view.ttl >= view.engine.granularity
    for service, names in REPO.services.items():
        assert names and set(names) <= set(REPO.views), service


# ---- the parse-time index


def test_view_index_equals_load_repo_and_is_served_from_its_cache(tmp_path, monkeypatch):
    from pipelines.features import declarations, view_index

    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path / "home"))
    repo_path = REPO_ROOT / "feature_repo"
    index = view_index(repo_path)
    assert index["services"] == {k: list(v) for k, v in REPO.services.items()}
    assert index["views"] == {
        v.name: {"dataset": v.dataset, "join_keys": list(v.join_keys), "features": list(v.features),
                 "lookback_s": v.lookback.total_seconds()} for v in REPO.views.values()}
    assert (tmp_path / "home" / "feast" / "declarations.json").exists()

    calls = []

    def counting(path, datasets=None):
        calls.append(path)
        return load_repo(path, datasets)

    monkeypatch.setattr(declarations, "load_repo", counting)
    assert view_index(repo_path) == index
    assert calls == []  # served from the cache: Feast not imported, definitions not executed

    # a changed definitions file is read again
    copy = tmp_path / "repo"
    copy.mkdir()
    (copy / "definitions.py").write_text((repo_path / "definitions.py").read_text())
    assert view_index(copy) == index and calls == []  # the same definitions: the same cache entry
    (copy / "definitions.py").write_text((repo_path / "definitions.py").read_text() + "\n# edited\n")
    edited = view_index(copy)
    assert calls == [copy]
    assert edited["views"] == index["views"] and edited["sha256"] != index["sha256"]
    assert view_index(copy) == edited and calls == [copy]
