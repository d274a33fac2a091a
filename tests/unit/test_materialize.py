"""The bulk materialization's encoders against Feast's own conversion, value by value, on tiny columns.

pipelines.features.online serializes a column once per distinct value, or as a fixed-width layout read off
Feast's output; entity keys likewise. Whatever the values (NaN, -0.0, infinities, nulls, extremes, several
join keys, string keys), each row must come out as the very bytes (and SQLite value_text) Feast's
`python_values_to_proto_values` + `SerializeToString` / `serialize_entity_key` give it. The stores themselves are
held to Feast's materialize in tests/integration/test_feature_store.py.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from feast import Entity, FeatureView, Field, FileSource
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import _redis_key, extract_text_and_num
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.type_map import python_values_to_proto_values
from feast.types import Int32, Int64, String
from feast.value_type import ValueType

from pipelines.features import online

pytestmark = pytest.mark.unit

COLUMNS = {
    "float64": (ValueType.DOUBLE, pa.array([1.5, None, -0.0, 0.0, np.nan, np.inf, -np.inf, 1e300, 5e-324,
                                            0.1, 1.5, 2.0 / 3.0], type=pa.float64())),
    "float64 all null": (ValueType.DOUBLE, pa.array([None, None], type=pa.float64())),
    "float32": (ValueType.FLOAT, pa.array([0.1, None, -0.0, 3.4e38, 1.5, 0.1], type=pa.float32())),
    "int64": (ValueType.INT64, pa.array([0, 1, -1, 2**63 - 1, -(2**63), 7, 7, 300], type=pa.int64())),
    "int64 with nulls": (ValueType.INT64, pa.array([3, None, 3, 127, 128], type=pa.int64())),
    "int32": (ValueType.INT32, pa.array([0, -5, 2**31 - 1, -(2**31), -5], type=pa.int32())),
    "double from int64": (ValueType.DOUBLE, pa.array([1, 2, 2, -3], type=pa.int64())),
    "string": (ValueType.STRING, pa.array(["a", None, "", "é😀", "a", "x" * 300])),
    "bool": (ValueType.BOOL, pa.array([True, False, None, True])),
}


def feast_bytes(values: np.ndarray, value_type: ValueType) -> tuple[list[bytes], list[str | None]]:
    protos = python_values_to_proto_values(values, value_type)
    return [p.SerializeToString() for p in protos], [extract_text_and_num(p, False)[0] for p in protos]


@pytest.mark.parametrize("name", list(COLUMNS))
def test_values_serialize_as_feast_serializes_them(name):
    value_type, arrow = COLUMNS[name]
    values = arrow.to_numpy(zero_copy_only=False)   # what Feast's materialization converts
    want, texts = feast_bytes(values, value_type)
    enc = online.encode_values(values, value_type, texts=True)
    assert enc.render() == want
    # what SQLite binds: the same bytes, as bytearrays (bound without sqlite3's adapter lookup)
    assert [type(b) for b in enc.blobs()] == [bytearray] * len(want) and list(map(bytes, enc.blobs())) == want
    assert enc.texts == texts
    # floats go through the fixed-width layout (checked against Feast on the column's own values), unless all null
    assert (enc.body is not None) == (name in ("float64", "float32"))
    # the Redis field framing wraps every value, the empty (null) one too
    assert enc.render(lambda n: b"<%d>" % n, b"|") == [b"<%d>%s|" % (len(w), w) for w in want]
    # a slice and a reordering keep each row's bytes
    order = np.arange(len(values))[::-1]
    assert enc.take(order).render() == [want[i] for i in order]
    assert enc.take(slice(1, 3)).render() == want[1:3]


def test_floats_take_the_fixed_width_layout_and_the_rest_the_distinct_values():
    assert online.encode_values(np.array([1.0, 2.5]), ValueType.DOUBLE).body is not None
    assert online.encode_values(np.array([1, 2], dtype="int64"), ValueType.INT64).body is None
    assert online.encode_values(np.array([1, 2], dtype="int64"), ValueType.INT64).distinct == \
        feast_bytes(np.array([1, 2], dtype="int64"), ValueType.INT64)[0]


def view(keys: dict[str, object]) -> FeatureView:
    entities = [Entity(name=f"e_{k}", join_keys=[k]) for k in keys]
    src = FileSource(path="/nowhere/x.parquet", timestamp_field="ts")
    return FeatureView(name="v", entities=entities, source=src,
                       schema=[*(Field(name=k, dtype=t) for k, t in keys.items()), Field(name="f", dtype=Int64)])


KEYS = {
    "one int64 key": ({"k": Int64}, {"k": pa.array([5, -1, 0, 2**63 - 1, -(2**63), 256, 1], type=pa.int64())}),
    "one string key": ({"k": String}, {"k": pa.array(["b", "a", "é", ""])}),
    "one int32 key": ({"k": Int32}, {"k": pa.array([3, -3, 70000], type=pa.int32())}),
    "two keys": ({"b": Int64, "a": String},
                 {"b": pa.array([1, 1, 2], type=pa.int64()), "a": pa.array(["x", "y", "x"])}),
}


@pytest.mark.parametrize("name", list(KEYS))
@pytest.mark.parametrize("redis", [False, True])
def test_entity_keys_serialize_as_feast_serializes_them(name, redis):
    dtypes, columns = KEYS[name]
    fv = view(dtypes)
    table = pa.table(columns)

    def key(ek: EntityKeyProto) -> bytes:
        return _redis_key("proj", ek, 3) if redis else serialize_entity_key(ek, entity_key_serialization_version=3)

    names = [c.name for c in fv.entity_columns]
    protos = [python_values_to_proto_values(table.column(c.name).to_numpy(zero_copy_only=False),
                                            c.dtype.to_value_type()) for c in fv.entity_columns]
    want = [key(EntityKeyProto(join_keys=names, entity_values=list(v))) for v in zip(*protos, strict=True)]
    enc = online.encode_keys(fv, table, key)
    assert enc.render() == want
    assert [bytes(b) for b in enc.blobs()] == want and {type(b) for b in enc.blobs()} == {bytearray}
    assert (enc.body is not None) == (name == "one int64 key")   # the layout where it applies
    # SQLite is filled in the byte order of the keys
    assert [want[i] for i in enc.order()] == sorted(want)


def test_timestamps_convert_once_per_distinct_value_as_feast_does():
    from datetime import datetime

    col = pa.chunked_array([pa.array([datetime(2026, 3, 2), None, datetime(2026, 3, 2), datetime(2026, 3, 3, 0, 0, 1)],
                                     type=pa.timestamp("us", tz="UTC"))])
    codes, stamps = online.timestamp_codes(col)
    assert codes.tolist() == [0, -1, 0, 1]
    assert stamps == [datetime(2026, 3, 2), datetime(2026, 3, 3, 0, 0, 1)]   # naive UTC, as Feast hands them on


def test_the_sqlite_statement_binds_each_entity_once_per_feature():
    import sqlite3

    sql = online._upsert_sql("t", ["event_ts", "created_ts"], features=2, entities=2)
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (entity_key BLOB, feature_name TEXT, value BLOB, value_text TEXT, vector_value BLOB,"
                 " event_ts timestamp, created_ts timestamp, PRIMARY KEY(entity_key, feature_name))")
    names = ("f1", "f2")
    conn.execute(sql, names + (b"k1", b"a", "1", b"b", "2", 10, 11) + (b"k2", b"c", "3", b"d", None, 12, None))
    got = conn.execute("SELECT entity_key, feature_name, value, value_text, event_ts, created_ts FROM t "
                       "ORDER BY entity_key, feature_name").fetchall()
    assert got == [(b"k1", "f1", b"a", "1", 10, 11), (b"k1", "f2", b"b", "2", 10, 11),
                   (b"k2", "f1", b"c", "3", 12, None), (b"k2", "f2", b"d", None, 12, None)]
    conn.execute(sql, names + (b"k1", b"A", "9", b"B", "8", 20, 21) + (b"k2", b"C", "7", b"D", "6", 22, 23))
    assert conn.execute("SELECT count(*), min(event_ts) FROM t").fetchone() == (4, 20)   # upserted, not added
