"""The feature layer against real Feast stores: no leakage, online/offline parity, backfills, duplicates.

Six weeks of generated transactions are validated (written as the validation stage names them), turned
into feature tables by pipelines.features, applied to a Feast SQL registry in a temporary FLYWHEEL_HOME
and materialized into SQLite, and into Redis on 127.0.0.1:6379 when one answers (under a project name
of its own, whose keys are deleted afterwards). Some customers stop transacting in the first week, so
their snapshots end (30 days later) inside the last two intervals: the TTL and the online store's stale
values are exercised, not just the happy path.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines import features, training
from pipelines.spec import REPO_ROOT, load_specs
from scenarios import cards as datagen

pytestmark = pytest.mark.integration

REPO = REPO_ROOT / "feature_repo"
DECLARED = features.load_repo(REPO)
# every view over the transactions this test's world generates goes through the oracle and the parity checks (the
# MovieLens views run on the same engine and stores: tests/unit/test_features.py holds them to the oracle, and
# tests/integration/test_loop.py serves them through the real loop)
WORLD_DATASET = "transactions"
VIEWS = sorted(v for v in DECLARED.views if DECLARED.views[v].dataset == WORLD_DATASET)
KEY = {v: DECLARED.views[v].join_keys[0] for v in VIEWS}
STAMP = {v: DECLARED.views[v].engine.feature_timestamp for v in VIEWS}
FRAUD = load_specs(REPO_ROOT / "models")["fraud"]
WEEKS = 6
SC = datagen.Scenario().short(WEEKS)
ENGINES = ["asof", "feast"]
REDIS = os.environ.get("FLYWHEEL_FEAST_REDIS") or "127.0.0.1:6379"


def week(w: int) -> tuple[datetime, datetime]:
    start = SC.start + timedelta(weeks=w)
    return start, start + timedelta(weeks=1)


def make_transactions() -> tuple[pd.DataFrame, list[int], list[int]]:
    """Six normal weeks; group A transacts only on days 0-3 and group B last on days 5-7, then both leave.
    A transaction on day L shows in the snapshots stamped L+1 .. L+30: A's last snapshot is in week 4
    (days 28-35), B's in week 5 (days 35-37), more than a TTL (3 days) before week 5's end."""
    tx = pd.concat([datagen.generate_week(SC, w, "normal") for w in range(WEEKS)], ignore_index=True)
    day = (tx["event_ts"] - pd.Timestamp(SC.start)).dt.days
    early = sorted(set(tx.loc[day < 4, "customer_id"]))
    late = sorted(set(tx.loc[(day >= 5) & (day < 8), "customer_id"]) - set(early))
    group_a, group_b = early[:6], late[:6]
    gone = (tx["customer_id"].isin(group_a) & (day >= 4)) | (tx["customer_id"].isin(group_b) & (day >= 8))
    return tx[~gone].reset_index(drop=True), group_a, group_b


@dataclass
class World:
    home: Path
    tx: pd.DataFrame
    group_a: list[int]
    group_b: list[int]
    snapshots: dict[str, pd.DataFrame]   # view -> every snapshot row written
    ttl: dict[str, timedelta]            # view -> TTL, as registered in Feast
    names: dict[str, list[str]]          # view -> feature names, as registered in Feast

    @property
    def validated(self) -> Path:
        return self.home / "validated"


def feast_env(mp: pytest.MonkeyPatch, home: Path, state: Path) -> None:
    """Point Flywheel's Feast at a registry and a SQLite online store under `state`."""
    state.mkdir(parents=True, exist_ok=True)
    mp.setenv("FLYWHEEL_HOME", str(home))
    mp.setenv("FLYWHEEL_FEAST_REGISTRY", f"sqlite:///{state / 'registry.db'}")
    mp.setenv("FLYWHEEL_FEAST_ONLINE", str(state / "online.db"))
    for var in (features.ONLINE_STORE_ENV, features.REDIS_ENV, features.RETRIEVAL_ENV):
        mp.delenv(var, raising=False)


def add_leakage_probe(world: World) -> None:
    """A test-only view per real view: the same snapshot rows, with their own event_ts as a feature, so a
    join that returns a snapshot also says which one (Feast's join returns no feature timestamps)."""
    from feast import FeatureService, FeatureView, Field, FileSource
    from feast.types import Int64

    store = features.feature_store(REPO)
    objects: list = []
    for view in VIEWS:
        fv = store.get_feature_view(view)
        key = KEY[view]
        snap = world.snapshots[view][[key, "event_ts", "created_ts"]].copy()
        snap[f"{view}_snapshot_us"] = snap["event_ts"].astype("datetime64[us, UTC]").astype("int64")
        out = world.home / "features" / f"{view}_probe" / "all.parquet"
        out.parent.mkdir(parents=True)
        snap.to_parquet(out, index=False)
        source = FileSource(name=f"{view}_probe_source", path=str(out), timestamp_field="event_ts",
                            created_timestamp_column="created_ts")
        schema = [Field(name=key, dtype=Int64), Field(name=f"{view}_snapshot_us", dtype=Int64)]
        objects.append(FeatureView(name=f"{view}_probe", entities=[store.get_entity(e) for e in fv.entities],
                                   ttl=fv.ttl, source=source, schema=schema))
    objects.append(FeatureService(name="leakage_probe", features=objects[:2]))
    store.apply(objects)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[World]:
    home = tmp_path_factory.mktemp("flywheel-home")
    with pytest.MonkeyPatch.context() as mp:
        feast_env(mp, home, home / "feast")
        tx, group_a, group_b = make_transactions()
        w = World(home, tx, group_a, group_b, {}, {}, {})
        w.validated.mkdir()
        for i in range(WEEKS):   # named by week start, as the validation stage writes them
            start, end = week(i)
            part = tx[(tx["event_ts"] >= pd.Timestamp(start)) & (tx["event_ts"] < pd.Timestamp(end))]
            part.to_parquet(w.validated / f"{start:%Y-%m-%d}.parquet", index=False)
        for i in range(WEEKS):
            start, end = week(i)
            for view in VIEWS:
                features.build_view_table(DECLARED.views[view], w.validated, home / "features", start, end,
                                          f"{start:%Y-%m-%d}")
        features.apply_feature_repo(REPO)
        store = features.feature_store(REPO)
        for view in VIEWS:
            # the brute-force helpers below call a snapshot's stamp `event_ts`
            w.snapshots[view] = pd.read_parquet(home / "features" / view).rename(columns={STAMP[view]: "event_ts"})
            w.ttl[view] = store.get_feature_view(view).ttl
            w.names[view] = [f.name for f in store.get_feature_view(view).features]
        add_leakage_probe(w)
        yield w


@pytest.fixture
def fresh_sqlite(world, tmp_path, monkeypatch) -> Path:
    """The real repo on a fresh registry and SQLite online store (same feature files)."""
    feast_env(monkeypatch, world.home, tmp_path / "feast")
    features.apply_feature_repo(REPO)
    return REPO


def redis_unreachable() -> str | None:
    import redis

    host, _, rest = REDIS.partition(":")
    try:
        redis.Redis(host=host, port=int(rest.split(",")[0] or 6379), socket_connect_timeout=1).ping()
    except Exception as exc:  # any failure to talk to it: connection refused, timeout, auth
        return f"Redis at {REDIS} is unreachable ({type(exc).__name__}: {exc}); start one to test the Redis store"
    return None


@pytest.fixture
def fresh_redis(world, tmp_path, monkeypatch) -> Iterator[Path]:
    """A copy of the repo under a unique project name (the key suffix in Redis), Redis as online store."""
    why = redis_unreachable()
    if why:
        if os.environ.get("FLYWHEEL_REQUIRE_SERVICES") == "1":   # CI has Redis: a missing one is a failure
            pytest.fail(why)
        pytest.skip(why)
    import redis

    project = f"flywheel_test_{uuid.uuid4().hex[:12]}"
    repo = tmp_path / "feature_repo"
    repo.mkdir()
    shutil.copy(REPO / "definitions.py", repo / "definitions.py")
    text, n = re.subn(r"(?m)^project: *flywheel\b", f"project: {project}", (REPO / "feature_store.yaml").read_text())
    assert n == 1
    (repo / "feature_store.yaml").write_text(text)
    feast_env(monkeypatch, world.home, tmp_path / "feast")
    monkeypatch.setenv(features.ONLINE_STORE_ENV, "redis")
    monkeypatch.setenv(features.REDIS_ENV, REDIS)
    host, _, port = REDIS.partition(":")
    client = redis.Redis(host=host, port=int(port.split(",")[0]))
    features.apply_feature_repo(repo)
    try:
        yield repo
        assert any(client.scan_iter(match=b"*" + project.encode(), count=1000)), "nothing was written to Redis"
    finally:
        features.feature_store(repo).teardown()
        left = list(client.scan_iter(match=b"*" + project.encode(), count=1000))
        if left:
            client.delete(*left)
        assert not left, f"teardown left {len(left)} keys of {project} in Redis"


@pytest.fixture(params=["sqlite", "redis"])
def online_repo(request) -> Path:
    return request.getfixturevalue(f"fresh_{request.param}")


# ------------------------------------------------------------------------------------------------
# oracles


def as_of(world: World, view: str, entity: int, at: pd.Timestamp) -> pd.Series | None:
    """Brute force: the view's latest snapshot of `entity` with event_ts <= at and within the TTL (ties: the
    latest created_ts), or None."""
    snap = world.snapshots[view]
    snap = snap[snap[KEY[view]] == entity]
    rows = snap[(snap["event_ts"] <= at) & (snap["event_ts"] >= at - world.ttl[view])]
    if rows.empty:
        return None
    return rows.sort_values(["event_ts", "created_ts"]).iloc[-1]


def label_rows(world: World) -> pd.DataFrame:
    """The fraud model's rows for weeks 1-5, plus rows on the edges of the join."""
    rows = training.label_rows(FRAUD, world.validated, week(1)[0], week(WEEKS - 1)[1],
                               views=training.ModelViews.of(FRAUD, REPO))
    assert len(rows) > 20_000
    snap = world.snapshots["customer_stats"]
    ttl = world.ttl["customer_stats"]
    last_b = snap.loc[snap["customer_id"] == world.group_b[0], "event_ts"].max()
    stamp = pd.Timestamp(week(3)[0]) + pd.Timedelta(days=2)   # a snapshot stamp (midnight)
    base = rows.iloc[0]
    edges = {
        "at_a_snapshot_stamp": (base.customer_id, base.merchant_id, stamp),
        "just_before_a_stamp": (base.customer_id, base.merchant_id, stamp - pd.Timedelta(microseconds=1)),
        "ttl_edge_inclusive": (world.group_b[0], base.merchant_id, last_b + ttl),
        "ttl_edge_expired": (world.group_b[0], base.merchant_id, last_b + ttl + pd.Timedelta(microseconds=1)),
        "unknown_customer": (10**9, base.merchant_id, stamp),
        "unknown_merchant": (base.customer_id, 10**9, stamp),
        "before_any_snapshot": (base.customer_id, base.merchant_id, pd.Timestamp(SC.start) + pd.Timedelta(hours=1)),
    }
    extra = rows.iloc[[0] * len(edges)].reset_index(drop=True)
    extra["transaction_id"] = [f"edge-{name}" for name in edges]
    extra["customer_id"] = [int(c) for c, _, _ in edges.values()]
    extra["merchant_id"] = [int(m) for _, m, _ in edges.values()]
    extra["event_ts"] = pd.to_datetime([t for _, _, t in edges.values()], utc=True).astype(rows["event_ts"].dtype)
    return pd.concat([rows, extra], ignore_index=True)


def by_id(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values("transaction_id", kind="stable").set_index("transaction_id")


# ------------------------------------------------------------------------------------------------
# training sets


@pytest.mark.parametrize("engine", ENGINES)
def test_training_rows_equal_a_brute_force_as_of_lookup_and_never_see_the_future(world, engine, monkeypatch):
    monkeypatch.setenv(features.RETRIEVAL_ENV, engine)
    rows = label_rows(world)
    edges = rows[rows["transaction_id"].str.startswith("edge-")]
    sample = pd.concat([rows.drop(edges.index).sample(n=300, random_state=4), edges], ignore_index=True)
    got = by_id(training.with_features(FRAUD, REPO, sample))
    assert len(got) == len(sample)
    checked = 0
    for row in sample.itertuples(index=False):
        for view in VIEWS:
            key = KEY[view]
            want = as_of(world, view, getattr(row, key), row.event_ts)
            for f in world.names[view]:
                value = got.at[row.transaction_id, f]
                if want is None:
                    assert pd.isna(value), (engine, row.transaction_id, view, f, value)
                else:
                    assert value == pytest.approx(want[f], nan_ok=True), (engine, row.transaction_id, view, f)
                    checked += 1
    assert checked > 300 * 6
    e = got.loc[edges["transaction_id"]]
    assert pd.isna(e.loc["edge-ttl_edge_expired", "cust_txn_count_7d"])
    assert not pd.isna(e.loc["edge-ttl_edge_inclusive", "cust_txn_count_7d"])
    assert e.loc["edge-unknown_merchant", ["merch_txn_count_7d"]].isna().all()
    assert not pd.isna(e.loc["edge-unknown_merchant", "cust_txn_count_7d"])
    assert e.loc["edge-before_any_snapshot"].filter(like="_7d").isna().all()

    # every row, every view: the snapshot joined is never later than the row, nor older than the TTL
    probe = by_id(features.historical_features(REPO, "leakage_probe", rows, engine=engine))
    ts = by_id(rows)["event_ts"].astype("datetime64[us, UTC]").astype("int64")
    for view in VIEWS:
        snap_us = probe[f"{view}_snapshot_us"]
        seen = snap_us.notna()
        assert seen.mean() > 0.9
        assert (snap_us[seen] <= ts[seen]).all(), f"{view}: a row saw a snapshot from its future"
        ttl_us = world.ttl[view] // timedelta(microseconds=1)
        assert (snap_us[seen] >= ts[seen] - ttl_us).all(), f"{view}: a row saw a snapshot older than the TTL"
    for row in sample.itertuples(index=False):   # and it is the very snapshot the brute force picks
        for view in VIEWS:
            want = as_of(world, view, getattr(row, KEY[view]), row.event_ts)
            got_us = probe.at[row.transaction_id, f"{view}_snapshot_us"]
            want_us = None if want is None else pd.Timestamp(want["event_ts"]).value // 1000
            assert (pd.isna(got_us) and want_us is None) or got_us == want_us, (engine, row.transaction_id, view)


@pytest.mark.parametrize("service", ["fraud_features", "spend_features"])
def test_asof_join_equals_feast_get_historical_features(world, service):
    """The DuckDB ASOF path (the default) and Feast's own join give the same frame on the same rows."""
    rows = label_rows(world)
    if service == "spend_features":
        rows = rows.drop(columns=["merchant_id"])
    before = rows.copy()
    feast = by_id(features.historical_features(REPO, service, rows, engine="feast"))
    asof_df = features.historical_features(REPO, service, rows, engine="asof")
    pd.testing.assert_frame_equal(rows, before)                 # the caller's rows are left alone
    assert asof_df["transaction_id"].tolist() == rows["transaction_id"].tolist()   # and keep their order
    asof_df = by_id(asof_df)
    assert list(asof_df.columns) == list(feast.columns)
    feast["event_ts"] = feast["event_ts"].astype(asof_df["event_ts"].dtype)   # Feast hands back microseconds
    pd.testing.assert_frame_equal(asof_df, feast, check_exact=True)
    names = [f for v in VIEWS for f in world.names[v] if f in feast.columns]
    assert feast[names].notna().all(axis=1).mean() > 0.9


# ------------------------------------------------------------------------------------------------
# online store


def entity_pairs(world: World, n: int = 60) -> pd.DataFrame:
    """Customers (active ones, both groups that left, an unknown one) paired with merchants."""
    rng = np.random.default_rng(5)
    active = world.tx.loc[world.tx["event_ts"] >= pd.Timestamp(week(4)[0]), "customer_id"].unique()
    cust = [*rng.choice(active, n, replace=False).tolist(), *world.group_a, *world.group_b, 10**9]
    merch = rng.choice(world.tx["merchant_id"].unique(), len(cust)).tolist()
    merch[-1] = 10**9
    return pd.DataFrame({"customer_id": cust, "merchant_id": merch}).astype("int64")


def online_frame(repo: Path, pairs: pd.DataFrame, at: datetime | None) -> pd.DataFrame:
    got = features.online_features(repo, "fraud_features", pairs.to_dict("records"), as_of=at)
    return pd.DataFrame(got).astype({c: "float64" for c in got if c not in pairs.columns})


def offline_at(repo: Path, pairs: pd.DataFrame, at: datetime) -> pd.DataFrame:
    return features.historical_features(repo, "fraud_features", pairs.assign(event_ts=pd.Timestamp(at)))


def latest_in(world: World, view: str, entity: int, lo: datetime, hi: datetime) -> pd.Series | None:
    """What materializing [lo, hi] leaves online: the entity's latest snapshot stamped in [lo, hi]."""
    snap = world.snapshots[view]
    rows = snap[(snap[KEY[view]] == entity) & (snap["event_ts"] >= pd.Timestamp(lo))
                & (snap["event_ts"] <= pd.Timestamp(hi))]
    return None if rows.empty else rows.sort_values(["event_ts", "created_ts"]).iloc[-1]


def test_online_values_equal_offline_as_of_values_at_the_interval_end(world, online_repo):
    start, end = week(WEEKS - 1)
    features.materialize(online_repo, VIEWS, start, end)
    pairs = entity_pairs(world)
    online = online_frame(online_repo, pairs, end)
    offline = offline_at(online_repo, pairs, end)
    names = [f for v in VIEWS for f in world.names[v]]
    np.testing.assert_array_equal(online[names].to_numpy(), offline[names].astype("float64").to_numpy())
    assert offline[names].notna().all(axis=1).sum() >= 50
    gone = pairs["customer_id"].isin(world.group_a + world.group_b)
    assert offline.loc[gone, "cust_txn_count_7d"].isna().all()
    # without the serving time, the store still holds the last value of customers who left in this interval
    raw = online_frame(online_repo, pairs, None)
    assert raw.loc[pairs["customer_id"].isin(world.group_b), "cust_txn_count_7d"].notna().all()


def test_backfilling_a_past_interval_after_a_later_one(world, online_repo):
    """Materialize week 5, then backfill week 4: customers whose snapshots end in week 4 get them, everyone
    else keeps week 5's (newer) values; offline, week 4's rows still read week 4's snapshots."""
    w4, w5 = week(WEEKS - 2), week(WEEKS - 1)
    features.materialize(online_repo, VIEWS, *w5)
    pairs = entity_pairs(world)
    before = online_frame(online_repo, pairs, None)
    assert before.loc[pairs["customer_id"].isin(world.group_a), "cust_txn_count_7d"].isna().all()
    features.materialize(online_repo, VIEWS, *w4)
    after = online_frame(online_repo, pairs, None)
    for view in VIEWS:
        key = KEY[view]
        for i, entity in enumerate(pairs[key]):
            want = latest_in(world, view, entity, w4[0], w5[1])
            for f in world.names[view]:
                value = after.at[i, f]
                ok = (want is None and pd.isna(value)) or value == pytest.approx(want[f], nan_ok=True)
                assert ok, (view, entity, f, value)
    a = pairs["customer_id"].isin(world.group_a)
    assert after.loc[a, "cust_txn_count_7d"].notna().all()   # the backfill wrote
    kept = ~a & before["cust_txn_count_7d"].notna()
    pd.testing.assert_frame_equal(after[kept], before[kept])     # and overwrote nothing newer
    # serving at week 5's end still agrees with the offline store, after the backfill
    names = [f for v in VIEWS for f in world.names[v]]
    np.testing.assert_array_equal(online_frame(online_repo, pairs, w5[1])[names].to_numpy(),
                                  offline_at(online_repo, pairs, w5[1])[names].astype("float64").to_numpy())
    # offline, a week-4 row reads week 4's snapshots
    rows = pairs.iloc[:10].assign(event_ts=pd.Timestamp(w4[1]) - pd.Timedelta(hours=1))
    got = features.historical_features(online_repo, "fraud_features", rows)
    for i, r in rows.iterrows():
        want = as_of(world, "customer_stats", r.customer_id, r.event_ts)
        assert got.at[i, "cust_amount_sum_7d"] == pytest.approx(want["cust_amount_sum_7d"])


# ------------------------------------------------------------------------------------------------
# bulk materialization (pipelines.features.online, the default) against Feast's own materialize


def reset_online(monkeypatch: pytest.MonkeyPatch, world: World, repo: Path, state: Path) -> None:
    """A fresh registry and SQLite file under `state` (Redis: the same project, its keys deleted), repo applied."""
    kept = {v: os.environ.get(v) for v in (features.ONLINE_STORE_ENV, features.REDIS_ENV)}
    feast_env(monkeypatch, world.home, state)
    for var, value in kept.items():
        if value:
            monkeypatch.setenv(var, value)
    features.apply_feature_repo(repo)
    store = features.feature_store(repo)
    if store.config.online_store.type == "redis":
        client = store._get_provider().online_store._get_client(store.config.online_store)
        keys = list(client.scan_iter(match=b"*" + store.project.encode(), count=1000))
        if keys:
            client.delete(*keys)


def online_state(repo: Path, world: World) -> dict[str, object]:
    """What the online store holds for the world's views, read back through Feast (every entity with a snapshot
    and an unknown one: every feature and its event timestamp), as stored (SQLite rows, Redis hashes), and the
    registry's materialization intervals."""
    import sqlite3

    store = features.feature_store(repo)
    state: dict[str, object] = {}
    for view in VIEWS:
        ids = [*sorted(set(world.snapshots[view][KEY[view]].astype(int))), 10**9]
        state[f"{view} read"] = store.get_online_features(
            features=[f"{view}:{f}" for f in world.names[view]],
            entity_rows=[{KEY[view]: i} for i in ids]).to_dict(include_event_timestamps=True)
        state[f"{view} intervals"] = store.get_feature_view(view).materialization_intervals
    if store.config.online_store.type == "sqlite":
        conn = sqlite3.connect(store.config.online_store.path)   # no type conversion: the values as stored
        for view in VIEWS:
            state[f"{view} rows"] = conn.execute(f'SELECT * FROM "{store.project}_{view}" '
                                                 "ORDER BY entity_key, feature_name").fetchall()
        conn.close()
    else:
        client = store._get_provider().online_store._get_client(store.config.online_store)
        keys = sorted(client.scan_iter(match=b"*" + store.project.encode(), count=1000))
        state["hashes"] = {k: client.hgetall(k) for k in keys}
    return state


def same(a: object, b: object) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float) and np.isnan(a) and np.isnan(b):
        return True
    return a == b


def test_bulk_materialization_writes_what_feast_materialize_writes(world, online_repo, tmp_path, monkeypatch):
    """The bulk path and Feast's materialize, each on a fresh store, through the same steps: week 5, a backfill of
    week 4 (widened to end at week 5's end), week 5 again. After every step both stores hold the same SQLite rows
    or Redis hashes (same keys, serialized values, event and created timestamps), read back the same values and
    timestamps for every entity, and their registries the same intervals."""
    from pipelines.features import online

    w4, w5 = week(WEEKS - 2), week(WEEKS - 1)
    steps = [w5, w4, w5]
    states: dict[str, list[dict[str, object]]] = {}
    for engine in ("feast", "bulk"):
        reset_online(monkeypatch, world, online_repo, tmp_path / engine)
        store = features.feature_store(online_repo)
        assert all(online.unsupported(store, v) is None for v in VIEWS)   # the bulk path does run here
        states[engine] = []
        for lo, hi in steps:
            features.materialize(online_repo, VIEWS, lo, hi, engine=engine)
            states[engine].append(online_state(online_repo, world))
    for step, (feast, bulk) in enumerate(zip(states["feast"], states["bulk"], strict=True)):
        for part in feast:
            assert same(feast[part], bulk[part]), f"step {step}: {part} differs between Feast and the bulk path"
    first, backfilled, rerun = states["bulk"]
    cust = "customer_stats"
    # the registry records every interval, the backfill's widened to the newest materialized end
    utc = [(pd.Timestamp(a).tz_convert("UTC"), pd.Timestamp(b).tz_convert("UTC")) for a, b in (w5, (w4[0], w5[1]), w5)]
    assert [(pd.Timestamp(a), pd.Timestamp(b)) for a, b in rerun[f"{cust} intervals"]] == utc
    # the backfill wrote the entities whose snapshots end in week 4, and left every newer value as it was
    read1, read2 = first[f"{cust} read"], backfilled[f"{cust} read"]
    ids = read1[KEY[cust]]
    gone = [i for i, e in enumerate(ids) if e in world.group_a]
    assert gone and all(read1["cust_txn_count_7d"][i] is None for i in gone)
    assert all(read2["cust_txn_count_7d"][i] is not None for i in gone)
    had = [i for i, v in enumerate(read1["cust_txn_count_7d"]) if v is not None]
    assert len(had) > 100
    for f in [*world.names[cust], *(f"{n}__ts" for n in world.names[cust])]:
        assert [read2[f][i] for i in had] == [read1[f][i] for i in had], f
    # a re-run of week 5 writes the same
    for part in backfilled:
        if not part.endswith("intervals"):
            assert same(backfilled[part], rerun[part]), part


def test_the_one_b_tree_sqlite_table_holds_and_serves_what_feasts_own_table_does(world, fresh_sqlite, tmp_path,
                                                                                  monkeypatch):
    """apply_feature_repo creates each view's SQLite table WITHOUT ROWID with Feast's `_ek` index holding no row, in
    a new store of 64 KiB pages; a store applied by Feast alone has Feast's rowid table and its full index, in
    SQLite's default 4 KiB pages. The same week materialized into each (bulk into Flywheel's, Feast's materialize
    into Feast's) leaves the same rows and reads back the same values, and applying the repo again leaves the
    layout as it is."""
    import sqlite3

    from pipelines.features.declarations import load_repo
    from pipelines.features.online import SQLITE_PAGE_SIZE

    def layout(repo: Path) -> dict[str, str]:
        store = features.feature_store(repo)
        conn = sqlite3.connect(store.config.online_store.path)
        try:
            rows = conn.execute("SELECT name, sql FROM sqlite_master WHERE tbl_name LIKE ? AND sql IS NOT NULL",
                                (f"{store.project}_%",))
            return dict(rows.fetchall()) | {"page size": conn.execute("PRAGMA page_size").fetchone()[0]}
        finally:
            conn.close()

    states = {}
    for who in ("feast", "flywheel"):
        if who == "feast":   # Feast's own update() creates the tables
            feast_env(monkeypatch, world.home, tmp_path / "feast-alone")   # not the fixture's store
            features.feature_store(fresh_sqlite).apply(load_repo(fresh_sqlite).objects)
        else:
            reset_online(monkeypatch, world, fresh_sqlite, tmp_path / "flywheel")   # through apply_feature_repo
        tables = layout(fresh_sqlite)
        project = features.feature_store(fresh_sqlite).project
        for view in VIEWS:
            table, index = tables[f"{project}_{view}"], tables[f"{project}_{view}_ek"]
            assert ("WITHOUT ROWID" in table) == (who == "flywheel"), table
            assert index.rstrip().endswith("WHERE 0") == (who == "flywheel"), index
        assert tables["page size"] == (SQLITE_PAGE_SIZE if who == "flywheel" else 4096)
        features.materialize(fresh_sqlite, VIEWS, *week(WEEKS - 1), engine="feast" if who == "feast" else "bulk")
        states[who] = online_state(fresh_sqlite, world)
        if who == "flywheel":
            features.apply_feature_repo(fresh_sqlite)
            assert layout(fresh_sqlite) == tables   # Feast's update() found table and index: all kept
    assert states["feast"].keys() == states["flywheel"].keys()
    for part in states["feast"]:
        assert same(states["feast"][part], states["flywheel"][part]), f"{part} differs between the two layouts"
    assert len(states["flywheel"]["customer_stats rows"]) > 100


def test_a_view_the_bulk_path_does_not_handle_goes_through_feast(world, fresh_sqlite, tmp_path, caplog):
    """A list-valued feature is not encoded in bulk: that view is materialized by Feast's materialize (logged with
    the reason) and serves its values; the scalar views next to it still go in bulk."""
    import logging

    from feast import FeatureView, Field, FileSource
    from feast.types import Array, Int64

    store = features.feature_store(REPO)
    t = pd.Timestamp(week(WEEKS - 1)[1])
    ids = sorted(set(world.snapshots["customer_stats"]["customer_id"].astype(int)))[:5]
    table = pd.DataFrame({"customer_id": ids, "recent": [[i, i + 1] for i in ids],
                          "feature_ts": t, "created_ts": t})
    out = tmp_path / "lists" / "lists.parquet"
    out.parent.mkdir()
    table.to_parquet(out, index=False)
    listed = FeatureView(name="listed", entities=[store.get_entity("customer")], ttl=timedelta(days=3),
                         source=FileSource(name="listed_source", path=str(out), timestamp_field="feature_ts",
                                           created_timestamp_column="created_ts"),
                         schema=[Field(name="customer_id", dtype=Int64), Field(name="recent", dtype=Array(Int64))])
    store.apply([listed])
    with caplog.at_level(logging.INFO, logger="pipelines.features.store"):
        features.materialize(REPO, ["listed", "customer_stats"], *week(WEEKS - 1))
    text = caplog.text
    assert "listed: materialized through Feast's materialize (listed.recent is Array(Int64), not a scalar" in text
    assert "customer_stats: " in text and "written to the sqlite online store in bulk" in text
    got = features.feature_store(REPO).get_online_features(
        features=["listed:recent"], entity_rows=[{"customer_id": i} for i in ids]).to_dict()
    assert got["recent"] == [[i, i + 1] for i in ids]


# ------------------------------------------------------------------------------------------------
# duplicates


@pytest.mark.parametrize("engine", ENGINES)
def test_duplicate_entity_timestamp_rows_resolve_to_the_latest_created_ts(world, tmp_path, monkeypatch, engine):
    """Two rows for one (customer, event_ts) with different created_ts: offline and online both return
    the later-created one (Feast's documented tie-break), whichever comes first in the file."""
    feast_env(monkeypatch, tmp_path, tmp_path / "feast")
    t = pd.Timestamp("2026-03-02", tz="UTC")
    first, second = t, t + pd.Timedelta(hours=6)
    cols = world.names["customer_stats"]

    def row(customer: int, created: pd.Timestamp, value: float) -> dict:
        return {"customer_id": customer, STAMP["customer_stats"]: t, **{c: value for c in cols}, "created_ts": created}

    table = pd.DataFrame([row(1, second, 2.0), row(1, first, 1.0),     # the later-created row first ...
                          row(2, first, 1.0), row(2, second, 2.0)])    # ... and last
    table = table.astype({c: "int64" for c in cols if "count" in c})
    out = tmp_path / "features" / "customer_stats" / "manual.parquet"
    out.parent.mkdir(parents=True)
    table.to_parquet(out, index=False)
    features.apply_feature_repo(REPO)
    rows = pd.DataFrame({"customer_id": [1, 2], "event_ts": [t + pd.Timedelta(hours=1)] * 2})
    got = features.historical_features(REPO, "spend_features", rows, engine=engine)
    assert (got[cols] == 2).all().all(), got
    features.materialize(REPO, ["customer_stats"], t - pd.Timedelta(days=1), t + pd.Timedelta(days=1))
    online = features.online_features(REPO, "spend_features", [{"customer_id": 1}, {"customer_id": 2}])
    assert all(online[c] == [2, 2] for c in cols), online


# ------------------------------------------------------------------------------------------------
# configuration


def test_online_store_is_chosen_by_the_environment(world, monkeypatch, tmp_path):
    from feast.infra.online_stores.redis import RedisOnlineStoreConfig
    from feast.infra.online_stores.sqlite import SqliteOnlineStoreConfig

    feast_env(monkeypatch, world.home, tmp_path)
    config = features.repo_config(REPO)
    assert isinstance(config.online_store, SqliteOnlineStoreConfig)
    assert config.online_store.path == str(tmp_path / "online.db")
    monkeypatch.setenv(features.ONLINE_STORE_ENV, "redis")
    with pytest.raises(ValueError, match="FLYWHEEL_FEAST_REDIS"):
        features.repo_config(REPO)
    monkeypatch.setenv(features.REDIS_ENV, "10.1.2.3:6390,db=2")
    monkeypatch.delenv("FLYWHEEL_FEAST_ONLINE")   # not needed with Redis
    config = features.repo_config(REPO)
    assert isinstance(config.online_store, RedisOnlineStoreConfig)
    assert config.online_store.connection_string == "10.1.2.3:6390,db=2"
    monkeypatch.setenv(features.ONLINE_STORE_ENV, "memcached")
    with pytest.raises(ValueError, match="sqlite .*or redis"):
        features.repo_config(REPO)
    monkeypatch.setenv(features.ONLINE_STORE_ENV, "sqlite")
    with pytest.raises(ValueError, match="FLYWHEEL_FEAST_ONLINE"):
        features.repo_config(REPO)
    monkeypatch.setenv(features.RETRIEVAL_ENV, "spark")
    with pytest.raises(ValueError, match="asof .*or feast"):
        features.historical_features(REPO, "spend_features", pd.DataFrame())
