"""Materialization in bulk: what Feast's `materialize` writes into the online store, written column by column.

Feast 0.67's local engine reads every row of [start, end] through ibis, keeps each entity's latest row (pandas),
turns each value into a ValueProto one at a time and hands the online store a list of per-entity dicts; SQLite
then runs one statement per (entity, feature), Redis a read-then-write pipeline built command by command. That is
~8-10k entity rows/s here (bench/materialize.py). This module does the same work, in bulk:

- read: one DuckDB query over the view's parquet files: per entity the latest row stamped in [start, end] (the
  same filter as Feast's, on the timestamp cast to UTC wall time; latest event timestamp, then latest created
  timestamp, Feast's tie-break). Rows without a join key are left out;
- encode: every column serialized once per distinct value with Feast's own conversion
  (`type_map.python_values_to_proto_values`), float columns as the fixed-width ValueProto layout and single
  integer join keys as `serialize_entity_key`'s layout, both derived from and checked against Feast's output on
  the column's own values; event and created timestamps through Feast's own adapters (SQLite) or protobuf
  `Timestamp` (Redis), once per distinct timestamp;
- write the online store's own table / keys / fields, the same bytes: SQLite in one transaction (as Feast does),
  rows in key order, multi-row upserts that overwrite unconditionally (as Feast does); Redis per batch: the stored
  event timestamps (one Lua HGET over the batch), then the HSETs of the entities whose new timestamp is later
  (Feast's rule: an older or equal one is not written), pipelined on one connection;
- record the interval in the registry (`apply_materialization`) with Feast's view state transitions.

`unsupported()` names what this does not handle (other stores, Redis Cluster, key TTLs, vector or value_num
columns, stream or on-demand views, transformations, validation, sources other than local parquet files, field
mappings, non-scalar features, Feast's OpenLineage/MLflow hooks, services precomputed online): those views go
through Feast's own `materialize` (pipelines.features.store.materialize logs which and why).
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa
    from feast import FeatureStore, FeatureView
    from feast.infra.offline_stores.file_source import FileSource

log = logging.getLogger(__name__)

CHUNK = 100_000        # SQLite: entities encoded at a time (bounds the Python objects alive at once)
SQLITE_GROUP = 200     # SQLite: entities per INSERT statement (one row per feature each)
# SQLite: a new online store's page size. 64 KiB instead of SQLite's 4 KiB: a 1M-entity update of 5 features
# rewrites every page of the table, and SQLite's own upsert of it takes 5.8-6.4 s instead of 7.9-8.7 s
# (bench/materialize.py, the update's ceiling). A point read of one entity: p50 17 us against 15 us, p99 32 us
# against 72 us (1M entities, a serving connection's default cache); Feast's read around it takes ~500 us.
SQLITE_PAGE_SIZE = 65_536
SQLITE_WRITE_CACHE_KIB = 65_536   # SQLite: the page cache of a bulk write (the default 2 MiB holds 31 such pages)
SQLITE_MAX_PARAMS = 30_000   # under SQLite's 32,766 host parameters per statement
REDIS_BATCH = 10_000   # Redis: entities per round trip (timestamps read, then HSETs)
SCALARS = ("INT32", "INT64", "FLOAT", "DOUBLE", "STRING", "BYTES", "BOOL")   # ValueType names encoded here
FIXED = {"DOUBLE": "float64", "FLOAT": "float32"}   # ValueType -> numpy dtype serialized as fixed width
MARKER = 0x0123456789ABCDEF   # a join key value whose 8 bytes show where the value sits in a serialized key

# the stored event timestamps of a batch of Redis keys (nil where none), in one reply
READ_TIMESTAMPS = """
local out = {}
for i, key in ipairs(KEYS) do out[i] = redis.call('HGET', key, ARGV[1]) end
return out
"""


def _no_head(_: int) -> bytes:
    return b""


@dataclass(frozen=True)
class Encoded:
    """One column's serialized values, row by row. Fixed width: `prefix` + a row of `body` + `suffix`, the empty
    value (b"", Feast's null) where `empty`; or `distinct` serialized values indexed by `codes` (-1: empty).
    `texts`: the rows' SQLite `value_text` (None where Feast writes NULL), when asked for."""
    prefix: bytes = b""
    body: np.ndarray | None = None
    suffix: bytes = b""
    empty: np.ndarray | None = None
    codes: np.ndarray | None = None
    distinct: list[bytes] | None = None
    texts: list[str | None] | None = None

    def __len__(self) -> int:
        if self.body is not None:
            return len(self.body)
        return 0 if self.codes is None else len(self.codes)

    def render(self, head: Callable[[int], bytes] = _no_head, tail: bytes = b"") -> list[bytes]:
        """Every row's value v as head(len(v)) + v + tail (the empty value too)."""
        import numpy as np

        blank = head(0) + tail
        if self.body is None:
            out = [head(len(v)) + v + tail for v in self.distinct or []] + [blank]   # code -1 is the last
            return np.array(out, dtype=object)[self.codes].tolist()
        return self._rows(blank, head, tail, bytes)

    def blobs(self) -> list[bytearray]:
        """Every row's value as a bytearray, the same bytes as render(): what sqlite3 binds as a BLOB.

        sqlite3 binds a bytearray as it is, and a bytes value only after looking for an adapter (a key tuple built,
        a dict looked up, two attribute lookups): at 1M entities the first write took 5.8 s instead of 7.7 s, the
        next day's update 8.8 s instead of 10.9 s (bench/materialize.py, bench/README.md)."""
        if self.body is None:
            out = [bytearray(v) for v in self.distinct or []] + [bytearray()]   # code -1 is the last
            return [out[c] for c in self.codes.tolist()] if self.codes is not None else []
        return self._rows(b"", _no_head, b"", bytearray)

    def _rows(self, blank: bytes, head: Callable[[int], bytes], tail: bytes, kind: type) -> list[Any]:
        import numpy as np

        assert self.body is not None
        n, w = self.body.shape
        before = head(len(self.prefix) + w + len(self.suffix)) + self.prefix
        after = self.suffix + tail
        grid = np.empty((n, len(before) + w + len(after)), dtype=np.uint8)
        grid[:, :len(before)] = np.frombuffer(before, dtype=np.uint8)
        grid[:, len(before):len(before) + w] = self.body
        grid[:, len(before) + w:] = np.frombuffer(after, dtype=np.uint8)
        # one copy of the grid; slices of a bytes are bytes, of a bytearray bytearrays
        flat, step = (grid.tobytes() if kind is bytes else bytearray(grid.data)), grid.shape[1]
        rows = [flat[i:i + step] for i in range(0, n * step, step)]
        if self.empty is not None:
            for i in np.flatnonzero(self.empty):
                rows[i] = kind(blank)
        return rows

    def take(self, rows: np.ndarray | slice) -> Encoded:
        """The same column restricted to `rows` (indices or a slice)."""
        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[rows]

        texts = None
        if self.texts is not None:
            import numpy as np

            texts = np.array(self.texts, dtype=object)[rows].tolist()
        return replace(self, body=pick(self.body), empty=pick(self.empty), codes=pick(self.codes), texts=texts)

    def order(self) -> np.ndarray:
        """Row indices in the byte order of the serialized values (SQLite's order of a BLOB primary key)."""
        import numpy as np

        if self.body is not None and self.body.shape[1] == 8 and self.empty is None:
            # a fixed prefix and suffix: the bodies decide; 8 bytes compare as one big-endian integer
            return np.argsort(np.ascontiguousarray(self.body).view(">u8").ravel(), kind="stable")
        rows = self.render()
        return np.array(sorted(range(len(rows)), key=rows.__getitem__), dtype=np.int64)


# ------------------------------------------------------------------------------------------------
# what the fast path handles


def _store_kind(store: FeatureStore) -> str | None:
    """sqlite or redis when the online store is Feast's own of that kind (by its config class, so that asking
    does not import the other store's client)."""
    return {"SqliteOnlineStoreConfig": "sqlite", "RedisOnlineStoreConfig": "redis"}.get(
        type(store.config.online_store).__name__)


def unsupported(store: FeatureStore, view: str) -> str | None:
    """Why `view` cannot go through `materialize_view` on this store (None: it can)."""
    from feast.errors import FeatureViewNotFoundException
    from feast.infra.offline_stores.file_source import FileSource
    from feast.stream_feature_view import StreamFeatureView

    config = store.config
    online = config.online_store
    kind = _store_kind(store)
    if kind == "sqlite":
        if online.vector_enabled:
            return "the SQLite online store has vector_enabled"
        if getattr(online, "enable_openai_compatible_store", False):
            return "the SQLite online store keeps value_num (enable_openai_compatible_store)"
    elif kind == "redis":
        from feast.infra.online_stores.redis import RedisType

        if online.redis_type == RedisType.redis_cluster:
            return "the Redis online store is a cluster"
        if online.key_ttl_seconds:
            return "the Redis online store expires keys (key_ttl_seconds)"
    else:
        return f"the online store is {getattr(online, 'type', type(online).__name__)}, not sqlite or redis"
    engine = config.batch_engine_config
    if (engine.get("type") if isinstance(engine, dict) else engine) not in (None, "local"):
        return f"the batch engine is {engine!r}, not local"
    for hook in ("mlflow", "openlineage"):
        if getattr(getattr(config, hook, None), "enabled", False):
            return f"Feast's {hook} hook is enabled"
    try:
        fv = store.registry.get_feature_view(view, store.project)
    except FeatureViewNotFoundException:
        return f"{view} is not a batch feature view"
    if isinstance(fv, StreamFeatureView):
        return f"{view} is a stream feature view"
    if not fv.online or getattr(fv, "offline", False):
        return f"{view} is not online-only (online={fv.online}, offline={getattr(fv, 'offline', False)})"
    if getattr(fv, "aggregations", None) or getattr(fv, "feature_transformation", None):
        return f"{view} has aggregations or a transformation for Feast's engine to run"
    if getattr(fv, "enable_validation", False):
        return f"{view} asks Feast to validate its rows"
    src = fv.batch_source
    if not isinstance(src, FileSource) or src.field_mapping:
        return f"{view}'s source is not a plain FileSource"
    if not src.path.startswith("/") or not (src.path.endswith(".parquet") or src.file_format is not None):
        return f"{view} reads {src.path} (not a local absolute parquet path)"
    if src.file_format is not None and type(src.file_format).__name__ != "ParquetFormat":
        return f"{view} reads {type(src.file_format).__name__}, not parquet"
    if not fv.entity_columns:
        return f"{view} has no join keys"
    for field in [*fv.entity_columns, *fv.features]:
        if field.dtype.to_value_type().name not in SCALARS:
            return f"{view}.{field.name} is {field.dtype}, not a scalar type"
    if kind == "sqlite":
        table, stamps = sqlite_layout(store, fv)
        if len(stamps) != 2:
            return f"the SQLite table {table} has {len(stamps)} timestamp columns, not Feast's two (was it applied?)"
    for svc in store.registry.list_feature_services(store.project):
        if getattr(svc, "precompute_online", False) and view in {p.name for p in svc.feature_view_projections}:
            return f"service {svc.name} precomputes {view} online"
    return None


# ------------------------------------------------------------------------------------------------
# read


def _source(fv: FeatureView) -> FileSource:
    """The view's batch source (a FileSource: `unsupported` checked)."""
    return cast("FileSource", fv.batch_source)


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def latest_rows(fv: FeatureView, start: datetime, end: datetime) -> pa.Table:
    """Per entity, the view's latest row stamped in [start, end] (ties: latest created timestamp), as Feast's
    materialization reads it: join keys, features, event timestamp[, created timestamp].

    Feast's filter, on the timestamp cast to a UTC wall time, is applied as it is; on a timestamp column a slightly
    wider range on the column itself comes first, so that DuckDB skips the files and row groups outside it by their
    statistics (a view's table keeps one file per interval)."""
    import duckdb

    src = _source(fv)
    keys = [_ident(c.name) for c in fv.entity_columns]
    ts = _ident(src.timestamp_field)
    created = _ident(src.created_timestamp_column) if src.created_timestamp_column else None
    cols = [*keys, *(_ident(f.name) for f in fv.features), ts, *([created] if created else [])]
    lo, hi = (t.astimezone(UTC).replace(tzinfo=None).isoformat(" ") for t in (start, end))
    files = f"read_parquet('{src.path.replace(chr(39), chr(39) * 2)}')"
    latest = f"{ts} DESC" + (f", {created} DESC NULLS LAST" if created else "")
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        within = f"CAST({ts} AS TIMESTAMP) >= TIMESTAMP '{lo}' AND CAST({ts} AS TIMESTAMP) <= TIMESTAMP '{hi}'"
        kind = con.sql(f"DESCRIBE SELECT {ts} FROM {files}").fetchall()[0][1]
        literal = {"TIMESTAMP WITH TIME ZONE": "TIMESTAMPTZ", "TIMESTAMPTZ": "TIMESTAMPTZ",
                   "TIMESTAMPTZ_NS": "TIMESTAMPTZ", "TIMESTAMP": "TIMESTAMP", "TIMESTAMP_NS": "TIMESTAMP"}.get(kind)
        if literal:   # the cast moves a value by less than a microsecond: this range holds every row Feast keeps
            zone = "+00" if literal == "TIMESTAMPTZ" else ""
            within = (f"{ts} > {literal} '{lo}{zone}' - INTERVAL 1 MICROSECOND "
                      f"AND {ts} < {literal} '{hi}{zone}' + INTERVAL 1 MICROSECOND AND {within}")
        sql = (f"SELECT {', '.join(cols)} FROM {files} WHERE {within} "
               f"AND {' AND '.join(f'{k} IS NOT NULL' for k in keys)} "
               f"QUALIFY row_number() OVER (PARTITION BY {', '.join(keys)} ORDER BY {latest}) = 1")
        return con.sql(sql).to_arrow_table()
    finally:
        con.close()


# ------------------------------------------------------------------------------------------------
# encode


def _feast_protos(values: np.ndarray, value_type: Any) -> list[Any]:
    from feast.type_map import python_values_to_proto_values

    # the array itself, as Feast's own conversion is handed it (its first non-empty element decides the checks)
    return python_values_to_proto_values(cast("list[Any]", values), value_type) if len(values) else []


def _text(proto: Any) -> str | None:
    from feast.infra.online_stores.helpers import extract_text_and_num

    return extract_text_and_num(proto, False)[0]


def encode_values(values: np.ndarray, value_type: Any, texts: bool = False) -> Encoded:
    """A column (as Feast converts it: the arrow column's `to_numpy(zero_copy_only=False)`) serialized as Feast
    serializes each of its values; with `texts`, the SQLite store's `value_text` of each too."""
    if FIXED.get(value_type.name) == values.dtype.name:
        fixed = _encode_fixed(values, value_type, texts)
        if fixed is not None:
            return fixed
        log.warning("%s column: the fixed-width layout did not match Feast's, serialized value by value instead",
                    value_type.name)
    return _encode_distinct(values, value_type, texts)


def _encode_distinct(values: np.ndarray, value_type: Any, texts: bool) -> Encoded:
    """Each distinct value through Feast's conversion once; NaN and None are Feast's empty value."""
    import numpy as np
    import pandas as pd

    if values.dtype.kind == "f":   # by bit pattern: 0.0 and -0.0 serialize differently
        codes, bits = pd.factorize(values.view(f"i{values.dtype.itemsize}"))
        uniques = np.asarray(bits).view(values.dtype)
    else:
        codes, uniques = pd.factorize(values)
    protos = _feast_protos(np.asarray(uniques), value_type)
    texts_ = None
    if texts:
        texts_ = np.array([_text(p) for p in protos] + [None], dtype=object)[codes].tolist()
    return Encoded(codes=np.asarray(codes, dtype=np.int64), distinct=[p.SerializeToString() for p in protos],
                   texts=texts_)


def _encode_fixed(values: np.ndarray, value_type: Any, texts: bool) -> Encoded | None:
    """A float column as prefix + its little-endian bytes, the layout read off Feast's serialization of the
    column's first value and checked on a few more; None if they disagree."""
    import numpy as np

    empty = np.isnan(values)
    valid = np.flatnonzero(~empty)
    if not len(valid):
        return None
    le = values.astype(values.dtype.newbyteorder("<"), copy=False)
    probe = np.unique(valid[[0, len(valid) // 2, -1]])
    probe = np.unique(np.concatenate([probe, valid[[np.argmin(values[valid]), np.argmax(values[valid])]]]))
    protos = _feast_protos(values[probe], value_type)
    w = values.dtype.itemsize
    prefix = protos[0].SerializeToString()[:-w]
    for proto, i in zip(protos, probe, strict=True):
        if proto.SerializeToString() != prefix + le[i].tobytes() or _text(proto) != str(values[i].item()):
            return None
    texts_: list[str | None] | None = None
    if texts:
        texts_ = list(map(repr, values.tolist()))   # str() of a float is its repr()
        for i in np.flatnonzero(empty):
            texts_[i] = None
    return Encoded(prefix=prefix, body=le.view(np.uint8).reshape(len(values), w),
                   empty=empty if empty.any() else None, texts=texts_)


def encode_keys(fv: FeatureView, table: pa.Table, key: Callable[[Any], bytes]) -> Encoded:
    """Each row's entity key as `key(EntityKeyProto)` gives it (Feast's serialize_entity_key or Redis key).

    One INT64 join key of int64 values: Feast's layout around the value's 8 bytes, read off a marker value and
    checked on real rows; any other shape: row by row through Feast's own conversion."""
    import numpy as np
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto

    names = [c.name for c in fv.entity_columns]
    types = [c.dtype.to_value_type() for c in fv.entity_columns]
    columns = [table.column(n).to_numpy(zero_copy_only=False) for n in names]
    n = table.num_rows

    def feast_keys(rows: np.ndarray) -> list[bytes]:
        protos = [_feast_protos(col[rows], t) for col, t in zip(columns, types, strict=True)]
        return [key(EntityKeyProto(join_keys=names, entity_values=list(vals))) for vals in zip(*protos, strict=True)]

    if len(names) == 1 and types[0].name == "INT64" and columns[0].dtype == np.int64 and n:
        from feast.protos.feast.types.Value_pb2 import Value as ValueProto

        marker = np.array([MARKER], dtype="<i8").tobytes()
        probe = key(EntityKeyProto(join_keys=names, entity_values=[ValueProto(int64_val=MARKER)]))
        if probe.count(marker) == 1:
            at = probe.index(marker)
            head, tail = probe[:at], probe[at + 8:]
            le = columns[0].astype("<i8", copy=False)
            rows = np.unique(np.array([0, n // 2, n - 1, int(np.argmin(le)), int(np.argmax(le))]))
            if all(k == head + le[i].tobytes() + tail for k, i in zip(feast_keys(rows), rows, strict=True)):
                return Encoded(prefix=head, body=le.view(np.uint8).reshape(n, 8), suffix=tail)
        log.warning("%s: the entity key layout did not match Feast's, keys serialized row by row", fv.name)
    return Encoded(codes=np.arange(n, dtype=np.int64), distinct=feast_keys(np.arange(n)))


def timestamp_codes(column: pa.ChunkedArray) -> tuple[np.ndarray, list[datetime]]:
    """(codes, distinct datetimes): each row's timestamp as Feast's conversion makes it (naive UTC, -1: null)."""
    import numpy as np
    import pandas as pd
    from feast.utils import _coerce_datetime

    codes, uniques = pd.factorize(column.to_numpy(zero_copy_only=False))
    return np.asarray(codes, dtype=np.int64), [_coerce_datetime(t) for t in pd.to_datetime(uniques)]


# ------------------------------------------------------------------------------------------------
# write


def materialize_view(store: FeatureStore, view: str, start: datetime, end: datetime) -> tuple[int, int]:
    """Load `view`'s latest values of [start, end] into the online store as Feast's `materialize` does, and record
    the interval in the registry. Returns (entity rows read, entity rows written): SQLite writes every one, Redis
    those newer than what it holds. Check `unsupported(store, view)` first."""
    from feast import utils
    from feast.feature_view import FeatureViewState

    start, end = utils.make_tzaware(start), utils.make_tzaware(end)
    if start > end:
        raise ValueError(f"The given start_date {start} is greater than the given end_date {end}.")
    fv = store.registry.get_feature_view(view, store.project)
    # Feast's state transitions around a materialization (FeatureStore.materialize)
    previous: Any = getattr(fv, "state", None)
    if previous == FeatureViewState.MATERIALIZING:
        previous = FeatureViewState.GENERATED
    elif previous not in (None, FeatureViewState.STATE_UNSPECIFIED):
        if not fv.state.can_transition_to(FeatureViewState.MATERIALIZING):
            raise ValueError(f"FeatureView {fv.name} cannot transition from {fv.state.name} to MATERIALIZING.")
        fv.state = FeatureViewState.MATERIALIZING
        store.registry.apply_feature_view(fv, store.project, commit=True)
    try:
        table = latest_rows(fv, start, end)
        written = 0
        if table.num_rows:
            if _store_kind(store) == "sqlite":
                written = write_sqlite(store, fv, table)
            else:
                written = write_redis(store, fv, table)
    except BaseException:
        if previous not in (None, FeatureViewState.STATE_UNSPECIFIED):
            fv.state = previous
            store.registry.apply_feature_view(fv, store.project, commit=True)
        raise
    store.registry.apply_materialization(fv, store.project, start, end)
    return table.num_rows, written


def create_sqlite_tables(store: FeatureStore, views: list[Any]) -> list[str]:
    """Create the SQLite online store's table of each of `views` before Feast's apply would, in a layout that costs
    each write one B-tree instead of three; returns the tables created.

    Feast's table (`SqliteOnlineStore.update`) is a rowid table with its primary key (entity_key, feature_name)
    as a second B-tree and an index `<table>_ek` on entity_key as a third, although entity_key is the primary
    key's prefix: every row written updates all three. Here the table is Feast's own statement (its update() run
    on an empty database in memory) WITHOUT ROWID: the rows live in the primary key's B-tree, which serves
    Feast's reads `WHERE entity_key IN (...)` as before. `<table>_ek` is Feast's index on no row (`WHERE 0`):
    Feast's `CREATE INDEX IF NOT EXISTS` finds the name and stops, and no write maintains it. Feast reads,
    writes, upserts and drops the table with the same statements. A table that already exists is left as it
    is; a store with vector search (Feast joins on rowid there) or value_num keeps Feast's own layout."""
    import sqlite3

    from feast.infra.online_stores.sqlite import SqliteOnlineStore, _table_id

    config = store.config
    online = config.online_store
    if _store_kind(store) != "sqlite" or online.vector_enabled or getattr(online, "enable_openai_compatible_store",
                                                                           False):
        return []
    conn: sqlite3.Connection = cast("Any", store._get_provider().online_store)._get_conn(config)
    versioning = config.registry.enable_online_feature_view_versioning
    names = {_table_id(config.project, fv, versioning): fv for fv in views}
    have = {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    new = [fv for n, fv in names.items() if n not in have]
    if not new:
        return []
    # Feast's own statements for these tables (its update() on an empty database in memory), then the same
    # columns and primary key WITHOUT ROWID and its `_ek` index on no row
    scratch = SqliteOnlineStore()
    scratch._conn = sqlite3.connect(":memory:")
    try:
        scratch.update(config, tables_to_delete=[], tables_to_keep=new, entities_to_delete=[], entities_to_keep=[],
                       partial=True)
        feast_sql = scratch._conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master "
                                          "WHERE sql IS NOT NULL").fetchall()
    finally:
        scratch._conn.close()
    made = []
    if not have:   # a new store: its page size (applies while the database file holds nothing yet)
        conn.execute(f"PRAGMA page_size = {SQLITE_PAGE_SIZE}")
    with conn:
        for kind, name, table, sql in feast_sql:
            if kind == "table":
                conn.execute(sql.rstrip().rstrip(";") + " WITHOUT ROWID")
                made.append(name)
            elif kind == "index" and name == f"{table}_ek":
                conn.execute(sql.rstrip().rstrip(";") + " WHERE 0")
            else:   # anything a later Feast adds: as Feast writes it
                conn.execute(sql)
    return made


def _upsert_sql(table: str, stamps: list[str], features: int, entities: int) -> str:
    """One statement for `entities` entities: the feature names are ?1..?F, then per entity its key, (value,
    value_text) per feature, and its two timestamps (`stamps`: the table's event and created timestamp columns).
    Feast's upsert, on the same columns."""
    from feast.infra.online_stores.sqlite import _quote_id

    per = 2 * features + 3
    rows = []
    for e in range(entities):
        base = features + e * per
        key, ev, cr = base + 1, base + 2 * features + 2, base + 2 * features + 3
        rows += [f"(?{key},?{j + 1},?{base + 2 + 2 * j},?{base + 3 + 2 * j},?{ev},?{cr})" for j in range(features)]
    cols = ["entity_key", "feature_name", "value", "value_text", *stamps]
    update = ", ".join(f"{c} = excluded.{c}" for c in (_quote_id(c) for c in cols[2:]))
    return (f"INSERT INTO {_quote_id(table)} ({', '.join(map(_quote_id, cols))}) VALUES {','.join(rows)} "
            f"ON CONFLICT(entity_key, feature_name) DO UPDATE SET {update}")


def sqlite_layout(store: FeatureStore, fv: FeatureView) -> tuple[str, list[str]]:
    """(table, its timestamp columns): the view's table in Feast's SQLite online store, and the columns declared
    `timestamp` in it, in table order (Feast's event timestamp, then created timestamp)."""
    from feast.infra.online_stores.sqlite import _quote_id, _table_id

    config = store.config
    conn = cast("Any", store._get_provider().online_store)._get_conn(config)
    name = _table_id(config.project, fv, config.registry.enable_online_feature_view_versioning)
    info = conn.execute(f"PRAGMA table_info({_quote_id(name)})").fetchall()
    return name, [c[1] for c in info if str(c[2]).lower() == "timestamp"]


def _sqlite_times(column: pa.ChunkedArray | None, n: int, cache: dict[Any, Any]) -> list[Any]:
    """What SQLite stores for each row's timestamp: Feast's registered datetime adapter of the naive UTC time."""
    import sqlite3

    import numpy as np
    from feast.utils import to_naive_utc

    if column is None:
        return [None] * n
    codes, stamps = timestamp_codes(column)
    for t in stamps:
        if t not in cache:
            cache[t] = sqlite3.adapt(to_naive_utc(t), sqlite3.PrepareProtocol)
    return np.array([cache[t] for t in stamps] + [None], dtype=object)[codes].tolist()


def write_sqlite(store: FeatureStore, fv: FeatureView, table: pa.Table) -> int:
    """The rows Feast's SqliteOnlineStore.online_write_batch writes, in one transaction; returns the entities."""

    from feast.infra.key_encoding_utils import serialize_entity_key

    config = store.config
    online: Any = store._get_provider().online_store
    conn = online._get_conn(config)
    name, stamp_columns = sqlite_layout(store, fv)
    version = config.entity_key_serialization_version
    keys = encode_keys(fv, table, lambda ek: serialize_entity_key(ek, entity_key_serialization_version=version))
    order = keys.order()   # key order: the primary key's B-tree is filled left to right
    keys, table = keys.take(order), table.take(order)
    src = _source(fv)
    names = tuple(f.name for f in fv.features)
    per = 2 * len(names) + 3   # parameters per entity: key, (value, value_text) per feature, two timestamps
    group = max(1, min(SQLITE_GROUP, (SQLITE_MAX_PARAMS - len(names)) // per))
    full_sql = _upsert_sql(name, stamp_columns, len(names), group)
    adapted: dict[Any, Any] = {}   # timestamp -> what SQLite stores for it

    def statements(lo: int) -> list[tuple[str, list[tuple[Any, ...]]]]:
        part = table.slice(lo, CHUNK)
        m = part.num_rows
        columns: list[list[Any]] = [keys.take(slice(lo, lo + CHUNK)).blobs()]
        for f in fv.features:
            enc = encode_values(part.column(f.name).to_numpy(zero_copy_only=False), f.dtype.to_value_type(),
                                texts=True)
            columns += [enc.blobs(), enc.texts or []]
        columns.append(_sqlite_times(part.column(src.timestamp_field), m, adapted))
        created = src.created_timestamp_column
        columns.append(_sqlite_times(part.column(created) if created else None, m, adapted))
        flat: list[Any] = [None] * (m * per)   # the entities' parameters one after the other, as bound
        for j, column in enumerate(columns):
            if len(column) != m:
                raise ValueError(f"{fv.name}: {len(column)} values for {m} entities")
            flat[j::per] = column
        whole = m - m % group
        out = [(full_sql, [names + tuple(flat[i * per:(i + group) * per]) for i in range(0, whole, group)])]
        if whole < m:
            out.append((_upsert_sql(name, stamp_columns, len(names), m - whole), [names + tuple(flat[whole * per:])]))
        return out

    # the loop allocates millions of bytes, strings and tuples and frees them in order (no cycles): the cyclic
    # collector would only walk them again and again (bench/materialize.py: 85k -> 104k entity rows/s at 300k)
    collecting = gc.isenabled()
    gc.disable()
    (cache,) = conn.execute("PRAGMA cache_size").fetchone()
    conn.execute(f"PRAGMA cache_size = -{SQLITE_WRITE_CACHE_KIB}")   # this write's; the connection's own after
    try:
        with conn:
            for lo in range(0, table.num_rows, CHUNK):
                for sql, params in statements(lo):
                    conn.executemany(sql, params)
    finally:
        conn.execute(f"PRAGMA cache_size = {int(cache)}")
        if collecting:
            gc.enable()
    return table.num_rows


def _bulk(value: bytes) -> bytes:
    """A Redis protocol (RESP) bulk string."""
    return b"$%d\r\n%s\r\n" % (len(value), value)


def send_pipelined(client: Any, commands: list[bytes]) -> list[Any]:
    """Send packed commands on one pooled connection; their replies, in order (an error reply raises)."""
    if not commands:
        return []
    pool = client.connection_pool
    conn = pool.get_connection()
    try:
        conn.send_packed_command([b"".join(commands)])
        return [conn.read_response() for _ in commands]
    except BaseException:
        conn.disconnect()   # replies may be pending: the connection is not reused
        raise
    finally:
        pool.release(conn)


def write_redis(store: FeatureStore, fv: FeatureView, table: pa.Table) -> int:
    """The HSETs Feast's RedisOnlineStore.online_write_batch sends: per entity one hash field per feature and the
    event timestamp, skipped where Redis holds a later or equal timestamp. Returns the entities written.

    Batch by batch: the batch's stored timestamps in one round trip (an EVAL of READ_TIMESTAMPS), then the HSETs
    of the entities that are newer, pipelined."""
    import numpy as np
    from feast import utils
    from feast.infra.online_stores.helpers import _mmh3, _redis_key
    from feast.infra.online_stores.redis import _versioned_fv_name
    from google.protobuf.timestamp_pb2 import Timestamp

    config = store.config
    online: Any = store._get_provider().online_store
    client = online._get_client(config.online_store)
    project, version = config.project, config.entity_key_serialization_version
    name = _versioned_fv_name(fv, config)
    ts_field = f"_ts:{name}".encode()
    keys = encode_keys(fv, table, lambda ek: _redis_key(project, ek, entity_key_serialization_version=version))
    hset = b"*%d\r\n$4\r\nHSET\r\n" % (2 + 2 * (len(fv.features) + 1))
    dedup = not config.online_store.skip_dedup
    fields = {f.name: _bulk(_mmh3(f"{name}:{f.name}")) for f in fv.features}

    def field_head(field: bytes) -> Callable[[int], bytes]:
        return lambda n: field + b"$%d\r\n" % n

    def nanos(ts: Timestamp) -> int:
        return ts.seconds * 1_000_000_000 + ts.nanos

    stamps: dict[datetime, tuple[bytes, int]] = {}   # event time -> (HSET field + value, nanoseconds)
    held: dict[bytes | None, int] = {None: 0}        # stored timestamp -> nanoseconds

    def encode(lo: int) -> tuple[bytes | None, np.ndarray, list[bytes]]:
        """(the read of the stored timestamps, the new ones in nanoseconds, each entity's HSET)."""
        part = table.slice(lo, REDIS_BATCH)
        codes, times = timestamp_codes(part.column(_source(fv).timestamp_field))
        for t in times:
            if t not in stamps:
                ts = Timestamp()
                ts.FromDatetime(utils.make_tzaware(t))
                stamps[t] = (_bulk(ts_field) + _bulk(ts.SerializeToString()), nanos(ts))
        part_keys = keys.take(slice(lo, lo + REDIS_BATCH))
        read = None
        if dedup:
            read = (b"*%d\r\n$4\r\nEVAL\r\n" % (part.num_rows + 4) + _bulk(READ_TIMESTAMPS.encode())
                    + _bulk(b"%d" % part.num_rows) + b"".join(part_keys.render(lambda n: b"$%d\r\n" % n, b"\r\n"))
                    + _bulk(ts_field))
        columns = [part_keys.render(lambda n: hset + b"$%d\r\n" % n, b"\r\n"),
                   np.array([stamps[t][0] for t in times], dtype=object)[codes].tolist()]
        for f in fv.features:
            enc = encode_values(part.column(f.name).to_numpy(zero_copy_only=False), f.dtype.to_value_type())
            columns.append(enc.render(field_head(fields[f.name]), b"\r\n"))
        new = np.array([stamps[t][1] for t in times], dtype=np.int64)[codes]
        return read, new, list(map(b"".join, zip(*columns, strict=True)))

    def write(batch: tuple[bytes | None, np.ndarray, list[bytes]]) -> int:
        read, new, commands = batch
        if read is not None:
            before = send_pipelined(client, [read])[0]
            for b in set(before) - held.keys():
                ts = Timestamp()
                ts.ParseFromString(b)
                held[b] = nanos(ts)
            old = np.fromiter((held[b] for b in before), dtype=np.int64, count=len(before))
            keep = ~((old != 0) & (new <= old))   # Feast: an older or equal timestamp is not written
            commands = [c for c, k in zip(commands, keep.tolist(), strict=True) if k]
        send_pipelined(client, commands)
        return len(commands)

    return sum(write(encode(lo)) for lo in range(0, table.num_rows, REDIS_BATCH))
