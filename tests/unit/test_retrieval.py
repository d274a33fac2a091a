"""The point-in-time join reads only the snapshots that can be live for its rows, and gives the same frame.

A day's scoring joins one day of rows onto views that keep a snapshot per entity per granule for all of
history; each view's TTL means only the snapshots stamped in [earliest row - TTL, latest row] can be picked.
The join pushes that span into the parquet scan: the frame is the one the unbounded join gives (the
unbounded join is held to Feast's get_historical_features and to a brute-force oracle in
tests/integration/test_feature_store.py), and the scan hands on only the span's snapshots, so the work and
the memory of the join follow the TTL, not the length of history.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import duckdb
import numpy as np
import pandas as pd
import pytest

from pipelines.features import ViewRetrieval, asof_sql, historical_features_asof

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 1, tzinfo=UTC)
DAYS = 40
ENTITIES = 60


def write_view(folder, name: str, features: tuple[str, ...], ttl: timedelta | None, tz_aware: bool,
               seed: int) -> tuple[ViewRetrieval, pd.DataFrame]:
    """A view with a snapshot per active entity per day, one parquet file per day, and every snapshot written;
    some entities pause, and some (entity, day) pairs are written twice, the later created stamp holding -1."""
    rng = np.random.default_rng(seed)
    out = folder / name
    out.mkdir()
    written = []
    for day in range(DAYS):
        at = T0 + timedelta(days=day + 1)
        ids = np.flatnonzero(rng.random(ENTITIES) < 0.6)
        frame = pd.DataFrame({"entity": ids.astype("int64"), "stamp": at, "created": at,
                              **{f: rng.normal(size=len(ids)) for f in features}})
        again = frame.sample(frac=0.1, random_state=day).assign(created=at + timedelta(hours=1), **{features[0]: -1.0})
        frame = pd.concat([frame, again], ignore_index=True)
        if not tz_aware:
            frame["stamp"] = frame["stamp"].dt.tz_localize(None)
            frame["created"] = frame["created"].dt.tz_localize(None)
        frame.to_parquet(out / f"{day:03d}.parquet", index=False)
        written.append(frame)
    view = ViewRetrieval(name, str(out / "*.parquet"), "stamp", "created", ttl, ("entity",), features)
    snapshots = pd.concat(written, ignore_index=True)
    snapshots["stamp"] = pd.to_datetime(snapshots["stamp"], utc=True)
    return view, snapshots


def rows_of_day(day: int, n: int = 400) -> pd.DataFrame:
    """`n` rows in one day: random instants (with nanoseconds), rows exactly on the snapshot stamps, and
    entities that have no snapshot at all."""
    rng = np.random.default_rng(day)
    start = pd.Timestamp(T0 + timedelta(days=day))
    offsets = pd.to_timedelta(rng.integers(0, 86_400 * 10**9, n), unit="ns")
    stamps = (start + offsets).to_numpy()
    stamps[:5] = np.datetime64(start.tz_localize(None), "ns")               # on a snapshot stamp
    stamps[5:10] = np.datetime64((start + pd.Timedelta(days=1)).tz_localize(None), "ns")   # on the next one
    return pd.DataFrame({"row": np.arange(n), "entity": rng.integers(0, ENTITIES + 5, n),
                         "at": pd.to_datetime(stamps, utc=True)})


def scanned(con: duckdb.DuckDBPyConnection, sql: str, tmp_path) -> tuple[int, int]:
    """(rows, row groups) the query's parquet scans read, from DuckDB's own profile (each day's file here is one
    row group: a file outside the span is skipped by its statistics, never decoded)."""
    out = tmp_path / "profile.json"
    con.execute("PRAGMA enable_profiling = 'json'")
    con.execute(f"PRAGMA profiling_output = '{out}'")
    con.sql(sql).fetchall()
    con.execute("PRAGMA disable_profiling")

    def walk(node) -> tuple[int, int]:
        own = ((int(node["rows_scanned"]), int(node["row_groups_scanned"])) if node.get("name") == "READ_PARQUET"
               else (0, 0))
        below = [walk(c) for c in node.get("children", [])]
        return own[0] + sum(b[0] for b in below), own[1] + sum(b[1] for b in below)

    return tuple(map(sum, zip(*(walk(op) for op in json.loads(out.read_text())["operator"]), strict=True)))


def unbounded(plan: list[ViewRetrieval], rows: pd.DataFrame) -> tuple[duckdb.DuckDBPyConnection, pd.DataFrame]:
    """The join over every snapshot of history (no span), and the connection it ran on."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("entity_rows", rows.assign(_row=np.arange(len(rows))))
    return con, con.sql(asof_sql(plan, "at")).df()


@pytest.mark.parametrize("tz_aware", [True, False], ids=["timestamptz", "naive-utc"])
def test_a_days_join_reads_only_the_snapshots_within_the_ttl_and_gives_the_same_frame(tmp_path, tz_aware):
    (first, first_snaps), (second, second_snaps) = (
        write_view(tmp_path, "first", ("amount", "count"), timedelta(days=3), tz_aware, seed=1),
        write_view(tmp_path, "second", ("level",), timedelta(hours=30), tz_aware, seed=2))
    rows = rows_of_day(35)

    got = historical_features_asof([first, second], rows)

    con, whole = unbounded([first, second], rows)
    for name in ("amount", "count", "level"):
        assert got[name].to_numpy() == pytest.approx(whole[name].to_numpy(), nan_ok=True), name
    assert got[["amount", "level"]].notna().any().all()       # snapshots were found...
    assert got[["amount", "level"]].isna().any().all()        # ...and some rows have none within the TTL
    assert (got["amount"] == -1.0).any()                      # the later created stamp won a tie

    lo, hi = rows["at"].min(), rows["at"].max()
    spans = [(s["stamp"] >= lo - v.ttl) & (s["stamp"] <= hi) for v, s in ((first, first_snaps), (second, second_snaps))]
    live = (sum(int(m.sum()) for m in spans), sum(int(s[m]["stamp"].nunique()) for m, s in
                                                   zip(spans, (first_snaps, second_snaps), strict=True)))
    assert scanned(con, asof_sql([first, second], "at", (lo, hi)), tmp_path) == live   # (rows, files) in the span
    assert scanned(con, asof_sql([first, second], "at"), tmp_path) == (len(first_snaps) + len(second_snaps), 2 * DAYS)
    assert live[1] == 5 + 3   # of 2 x 40 files: stamps T0+32..36 d (first, 3-day TTL), T0+34..36 d (second, 30 h)


def test_a_view_without_ttl_reads_every_snapshot_up_to_the_last_row_and_no_later(tmp_path):
    """No TTL (Feast: a snapshot of any age is live): only the snapshots after the last row are left out."""
    view, snapshots = write_view(tmp_path, "first", ("amount",), None, True, seed=3)
    rows = rows_of_day(20)
    got = historical_features_asof([view], rows)
    con, whole = unbounded([view], rows)
    assert got["amount"].to_numpy() == pytest.approx(whole["amount"].to_numpy(), nan_ok=True)
    assert got["amount"].notna().mean() > 0.5
    span = (rows["at"].min(), rows["at"].max())
    upto = snapshots["stamp"] <= span[1]
    assert scanned(con, asof_sql([view], "at", span), tmp_path) == (int(upto.sum()), snapshots[upto]["stamp"].nunique())
