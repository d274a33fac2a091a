"""pipelines/storage.py on every kind of location: a local path, a file:// URI and s3:// (a real S3-API
server on loopback). The local cases are unit tests; the S3 cases are integration tests."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from pipelines import storage
from pipelines.layout import Layout

unit = pytest.mark.unit


@pytest.fixture(
    params=[
        pytest.param("path", marks=pytest.mark.unit),
        pytest.param("file", marks=pytest.mark.unit),
        pytest.param("s3", marks=pytest.mark.integration),
    ]
)
def root(request, tmp_path) -> str:
    """A fresh, empty data root of each kind."""
    if request.param == "path":
        return str(tmp_path / "root")
    if request.param == "file":
        return (tmp_path / "root").as_uri()
    name, _ = request.getfixturevalue("s3_bucket")
    return f"s3://{name}/prefix"


FRAME = pd.DataFrame({"id": ["a", "b", "c"], "amount": [1.5, 2.0, -3.25], "n": [1, 2, 3]})


def test_parquet_round_trip_and_row_count(root):
    uri = storage.join(root, "scores", "fraud", "2026-01-05.parquet")
    assert storage.write_parquet(FRAME, uri) == uri
    pd.testing.assert_frame_equal(storage.read_parquet(uri), FRAME)
    pd.testing.assert_frame_equal(storage.read_parquet(uri, columns=["amount"]), FRAME[["amount"]])
    assert storage.parquet_rows(uri) == 3
    table = pa.table({"x": [1, 2]})
    storage.write_parquet(table, uri)  # a rerun overwrites the partition
    assert storage.read_table(uri).equals(table)


def test_bytes_text_exists_size_delete(root):
    uri = storage.join(root, "reports", "fraud", "index.jsonl")
    assert not storage.exists(uri) and not storage.is_file(uri)
    storage.write_text("héllo\n", uri)
    assert storage.exists(uri) and storage.is_file(uri)
    assert storage.read_text(uri) == "héllo\n"
    assert storage.read_bytes(uri) == "héllo\n".encode()
    assert storage.size(uri) == len("héllo\n".encode())
    assert storage.delete(uri) is True
    assert not storage.exists(uri)
    assert storage.delete(uri) is False  # deleting what is not there is not an error
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(uri)
    with pytest.raises(FileNotFoundError):
        storage.size(uri)


def test_list_files_sorted_by_name_filtered_and_flat(root):
    folder = storage.join(root, "data", "validated", "fraud")
    assert storage.list_files(folder) == []  # a folder that does not exist yet lists nothing
    for name in ("2026-01-12.parquet", "2026-01-05.parquet", "notes.txt", "sub/2026-01-19.parquet"):
        storage.write_bytes(b"x", storage.join(folder, name))
    got = storage.list_files(folder, ".parquet")
    assert got == [storage.join(folder, "2026-01-05.parquet"), storage.join(folder, "2026-01-12.parquet")]
    assert [storage.stem(u) for u in got] == ["2026-01-05", "2026-01-12"]
    assert len(storage.list_files(folder)) == 3  # the file in the sub-folder is not listed


def test_copy_is_byte_identical_across_stores(root, tmp_path):
    data = os.urandom(3 * (1 << 20) + 17)  # more than one copy chunk
    local = tmp_path / "landed.parquet"
    local.write_bytes(data)
    dst = storage.join(root, "data", "blocked", "fraud", "2026-01-05", "abc-landed.parquet")
    storage.copy(local, dst)
    assert storage.read_bytes(dst) == data
    back = tmp_path / "back" / "copy.parquet"
    storage.copy(dst, back)
    assert back.read_bytes() == data
    assert storage.sha256(dst) == storage.sha256(local)


def test_a_copy_that_fails_midway_leaves_nothing_behind(root, tmp_path):
    """The source vanishes after the first chunk: the destination must not appear half written
    (on S3, closing the output stream would otherwise upload what was written so far)."""
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(3 * (1 << 20)))
    real_open = storage.open_input

    class Failing:
        def __init__(self, fh):
            self.fh, self.reads = fh, 0

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def read(self, n):
            self.reads += 1
            if self.reads > 1:
                raise OSError("source went away")
            return self.fh.read(n)

    dst = storage.join(root, "scores", "fraud", "2026-01-05.parquet")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(storage, "open_input", lambda uri: Failing(real_open(uri)))
        with pytest.raises(OSError, match="source went away"):
            storage.copy(src, dst)
    assert not storage.exists(dst)
    assert storage.list_files(storage.parent(dst)) == []


def test_local_copy_gives_a_readable_local_file(root):
    uri = storage.join(root, "reports", "fraud", "2026-01-05.html.gz")
    storage.write_bytes(b"report", uri)
    with storage.local_copy(uri) as path:
        assert isinstance(path, Path) and path.name == "2026-01-05.html.gz"
        assert path.read_bytes() == b"report"
    if storage.is_remote(uri):
        assert not path.exists()  # the downloaded copy is cleaned up
    assert storage.exists(uri)  # the original never is


@unit
def test_local_writes_never_expose_a_half_written_file(tmp_path, monkeypatch):
    uri = str(tmp_path / "landing" / "batch.parquet")
    storage.write_parquet(FRAME, uri)
    before = Path(uri).read_bytes()

    def crash(self, target, *args, **kwargs):
        Path(target).write_bytes(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", crash)
    with pytest.raises(OSError, match="disk full"):
        storage.write_parquet(FRAME, uri)
    assert Path(uri).read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "landing").iterdir()) == ["batch.parquet"]  # no temp file left


@unit
def test_join_keeps_the_form_of_the_root(tmp_path):
    assert storage.join(tmp_path, "a", "b.parquet") == str(tmp_path / "a" / "b.parquet")
    assert storage.join("s3://bkt/pre/", "a", "b.parquet") == "s3://bkt/pre/a/b.parquet"
    assert storage.join("s3://bkt", "a") == "s3://bkt/a"
    assert storage.join("file:///srv/x", "a") == "file:///srv/x/a"
    assert storage.parent("s3://bkt/pre/a.json") == "s3://bkt/pre"
    assert storage.name("s3://bkt/pre/a.json") == "a.json" and storage.suffix("s3://bkt/a.csv") == ".csv"
    assert storage.local_path("file:///srv/my%20data/a") == Path("/srv/my data/a")
    assert storage.is_remote("s3://bkt/a") and not storage.is_remote(tmp_path) and not storage.is_remote("file:///a")


@unit
def test_unsupported_scheme_names_the_location():
    with pytest.raises(ValueError, match=r"gs://bkt/a: unsupported storage scheme 'gs'"):
        storage.exists("gs://bkt/a")
    with pytest.raises(ValueError, match="no bucket"):
        storage.exists("s3:///key")


@unit
def test_layout_keeps_todays_local_folders_by_default(tmp_path, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path))
    monkeypatch.delenv("FLYWHEEL_DATA_URI", raising=False)
    lay = Layout.from_env()
    assert lay.landing("transactions") == str(tmp_path / "data" / "landing" / "transactions")
    assert lay.validated("fraud") == str(tmp_path / "data" / "validated" / "fraud")
    assert lay.quarantine("fraud") == str(tmp_path / "data" / "quarantine" / "fraud")
    assert lay.blocked("fraud") == str(tmp_path / "data" / "blocked" / "fraud")
    assert lay.validation_reports("fraud") == str(tmp_path / "data" / "validation_reports" / "fraud")
    assert lay.scores("fraud") == str(tmp_path / "scores" / "fraud")
    assert lay.reports("fraud") == str(tmp_path / "reports" / "fraud")
    assert Layout(tmp_path).validated("fraud") == lay.validated("fraud")


@unit
def test_layout_puts_the_shared_areas_under_the_data_uri(tmp_path, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path))
    monkeypatch.setenv("FLYWHEEL_DATA_URI", "s3://flywheel-data/prod/")
    lay = Layout.from_env()
    assert lay.landing("transactions") == "s3://flywheel-data/prod/data/landing/transactions"
    assert lay.validated("fraud") == "s3://flywheel-data/prod/data/validated/fraud"
    assert lay.quarantine("fraud") == "s3://flywheel-data/prod/data/quarantine/fraud"
    assert lay.blocked("fraud") == "s3://flywheel-data/prod/data/blocked/fraud"
    assert lay.validation_reports("fraud") == "s3://flywheel-data/prod/data/validation_reports/fraud"
    assert lay.scores("fraud") == "s3://flywheel-data/prod/scores/fraud"
    assert lay.reports("fraud") == "s3://flywheel-data/prod/reports/fraud"
    assert lay.feature_table("tx") == "s3://flywheel-data/prod/features/tx"
    # what stays on this host (the feature tables' read cache for Feast)
    assert lay.feature_cache() == tmp_path / "features"
    assert lay.data_docs("fraud") == tmp_path / "data" / "data_docs" / "fraud"
    assert lay.feast_dir() == tmp_path / "feast"
    monkeypatch.setenv("FLYWHEEL_DATA_URI", "gcs://nope")
    with pytest.raises(ValueError, match="gcs://nope"):
        Layout.from_env()


@pytest.mark.integration
def test_s3_objects_are_where_the_uri_says(s3_bucket):
    """What storage writes to s3:// is a plain object under the key the URI names, readable by any S3 client."""
    name, client = s3_bucket
    storage.write_parquet(FRAME, f"s3://{name}/data/validated/fraud/2026-01-05.parquet")
    storage.write_text('{"ok": true}\n', f"s3://{name}/reports/fraud/2026-01-05.json")
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=name)["Contents"])
    assert keys == ["data/validated/fraud/2026-01-05.parquet", "reports/fraud/2026-01-05.json"]
    body = client.get_object(Bucket=name, Key="reports/fraud/2026-01-05.json")["Body"].read()
    assert body == b'{"ok": true}\n'
    # small objects go up in one PUT: a plain MD5 ETag, not a multipart one ("<md5>-<parts>")
    etag = client.head_object(Bucket=name, Key="reports/fraud/2026-01-05.json")["ETag"]
    assert "-" not in etag.strip('"'), etag


@pytest.mark.integration
def test_s3_missing_bucket_is_a_clear_error(s3_server):
    with pytest.raises(OSError, match="no-such-bucket-here"):
        storage.write_bytes(b"x", "s3://no-such-bucket-here/a.txt")
