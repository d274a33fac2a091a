"""The data that crosses stages and hosts, behind URIs: a local folder or `s3://bucket/prefix`.

Every function takes a location as a URI string: a local path (`/srv/flywheel/data/...`, or a
`pathlib.Path`), a `file://` URI, or `s3://bucket/key`. Locations that come back (`join`,
`list_files`) keep the form they were given in, so a local layout keeps showing plain paths.

pyarrow.fs does the I/O (LocalFileSystem, S3FileSystem); nothing here is hand-written transfer code.

S3 settings come from the standard AWS environment variables, read when a bucket is first used:
`AWS_ENDPOINT_URL` (an S3-API server other than AWS, e.g. MinIO or moto: `http://127.0.0.1:9000`),
`AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (or any other credential source the AWS SDK knows),
`AWS_DEFAULT_REGION` (default us-east-1). pyarrow's `FileSystem.from_uri` honours AWS_ENDPOINT_URL
but the `S3FileSystem` constructor does not, so the endpoint is passed as `endpoint_override`.

Writes are all-or-nothing for readers: locally a temporary file in the same folder is renamed over
the target; on S3 the content is buffered in memory and sent only once the writer has finished
(`allow_delayed_open`: a small object as a single PutObject, a big one as a multipart upload that
only appears when complete), so a writer that fails midway uploads nothing.
S3 has no rename and no folders: `list_files` lists keys under a prefix, and `delete` of a missing
object is a no-op. No heavy imports at module import time.
"""

from __future__ import annotations

import logging
import os
import posixpath
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.fs as pafs

log = logging.getLogger(__name__)

Location = str | os.PathLike[str]  # a local path, file:// or s3:// URI
REMOTE_SCHEMES = ("s3",)
_FILESYSTEMS: dict[tuple[int, str, str], Any] = {}  # (pid, scheme, bucket) -> pyarrow FileSystem


# ----------------------------------------------------------------------------------------------
# locations (pure string work)


def scheme(uri: Location) -> str:
    """'s3', or 'file' for a local path or file:// URI."""
    text = os.fspath(uri)
    head, sep, _ = text.partition("://")
    if not sep:
        return "file"
    head = head.lower()
    if head not in ("file", *REMOTE_SCHEMES):
        raise ValueError(f"{text}: unsupported storage scheme {head!r}; use a local path, file:// or s3://.")
    return head


def is_remote(uri: Location) -> bool:
    return scheme(uri) != "file"


def local_path(uri: Location) -> Path:
    """The local path of a local location (plain path or file:// URI); ValueError for a remote one."""
    text = os.fspath(uri)
    if is_remote(text):
        raise ValueError(f"{text} is not a local path")
    if text.startswith("file://"):
        from urllib.parse import unquote, urlparse

        return Path(unquote(urlparse(text).path))
    return Path(text)


def join(uri: Location, *parts: str) -> str:
    """`uri` / part / part..., in the same form as `uri` (a plain path stays a plain path)."""
    text = os.fspath(uri)
    clean = [p.strip("/") for p in parts if p.strip("/")]
    if "://" not in text:
        return str(Path(text, *clean))
    return posixpath.join(text.rstrip("/"), *clean)


def name(uri: Location) -> str:
    """The last component (the file name)."""
    return os.fspath(uri).rstrip("/").rsplit("/", 1)[-1]


def stem(uri: Location) -> str:
    return Path(name(uri)).stem


def suffix(uri: Location) -> str:
    return Path(name(uri)).suffix


def parent(uri: Location) -> str:
    text = os.fspath(uri)
    if "://" not in text:
        return str(Path(text).parent)
    return text.rstrip("/").rsplit("/", 1)[0]


def _split_s3(text: str) -> tuple[str, str]:
    rest = text.split("://", 1)[1]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise ValueError(f"{text}: no bucket in the S3 URI (expected s3://bucket/key).")
    return bucket, key.strip("/")


def resolve(uri: Location) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem of `uri` and the path to use with it (cached per process, scheme, bucket)."""
    text = os.fspath(uri)
    kind = scheme(text)
    if kind == "file":
        return _filesystem("file", ""), str(local_path(text).absolute())
    bucket, key = _split_s3(text)
    return _filesystem(kind, bucket), f"{bucket}/{key}" if key else bucket


def _filesystem(kind: str, bucket: str) -> pafs.FileSystem:
    import pyarrow.fs as pafs

    cache_key = (os.getpid(), kind, bucket)  # never share an AWS client across a fork
    fs = _FILESYSTEMS.get(cache_key)
    if fs is None:
        if kind == "file":
            fs = pafs.LocalFileSystem()
        else:
            fs = pafs.S3FileSystem(
                access_key=os.environ.get("AWS_ACCESS_KEY_ID") or None,
                secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY") or None,
                session_token=os.environ.get("AWS_SESSION_TOKEN") or None,
                region=os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or "us-east-1",
                endpoint_override=os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None,
                allow_delayed_open=True,  # small objects: one PutObject on close
            )
        _FILESYSTEMS[cache_key] = fs
    return fs


def clear_cache() -> None:
    """Forget the cached filesystems (after changing the AWS_* environment, e.g. in tests)."""
    _FILESYSTEMS.clear()


# ----------------------------------------------------------------------------------------------
# queries


def _info(uri: Location) -> Any:
    fs, path = resolve(uri)
    return fs.get_file_info(path)


def exists(uri: Location) -> bool:
    """True when `uri` is a file (object), or a local folder."""
    import pyarrow.fs as pafs

    return bool(_info(uri).type != pafs.FileType.NotFound)


def is_file(uri: Location) -> bool:
    import pyarrow.fs as pafs

    return bool(_info(uri).type == pafs.FileType.File)


def version(uri: Location) -> tuple[int, int]:
    """(size in bytes, modification time in ns) of a file; FileNotFoundError when there is none.

    A rewrite changes the modification time (S3: the object's LastModified), so a copy stamped with
    this version (`copy(..., keep_mtime=True)`) tells whether it is still current.
    """
    import pyarrow.fs as pafs

    info = _info(uri)
    if info.type != pafs.FileType.File:
        raise FileNotFoundError(f"{os.fspath(uri)}: no such file")
    return int(info.size), int(info.mtime_ns or 0)


def size(uri: Location) -> int:
    """Size in bytes of a file; FileNotFoundError when there is none."""
    import pyarrow.fs as pafs

    info = _info(uri)
    if info.type != pafs.FileType.File:
        raise FileNotFoundError(f"{os.fspath(uri)}: no such file")
    return int(info.size)


def list_files(prefix: Location, suffix: str = "") -> list[str]:
    """The files directly under `prefix` whose name ends with `suffix`, sorted by name.

    Names starting with "." (temporary files of an unfinished local write, lock files) are left
    out, and so are sub-folders. A missing prefix lists nothing.
    """
    import pyarrow.fs as pafs

    fs, path = resolve(prefix)
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=False))
    names = sorted(
        i.base_name
        for i in infos
        if i.type == pafs.FileType.File and i.base_name.endswith(suffix) and not i.base_name.startswith(".")
    )
    return [join(prefix, n) for n in names]


def list_versions(prefix: Location, suffix: str = "") -> dict[str, tuple[int, int]]:
    """`list_files`, each with its `version` (size, modification time in ns), in one listing call."""
    import pyarrow.fs as pafs

    fs, path = resolve(prefix)
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=False))
    return {join(prefix, i.base_name): (int(i.size or 0), int(i.mtime_ns or 0))
            for i in sorted(infos, key=lambda i: i.base_name)
            if i.type == pafs.FileType.File and i.base_name.endswith(suffix) and not i.base_name.startswith(".")}


# ----------------------------------------------------------------------------------------------
# reading


def open_input(uri: Location) -> Any:
    """A readable, seekable binary file (pyarrow NativeFile); close it (use `with`)."""
    fs, path = resolve(uri)
    return fs.open_input_file(path)


def read_bytes(uri: Location) -> bytes:
    with open_input(uri) as fh:
        return bytes(fh.read())


def read_text(uri: Location, encoding: str = "utf-8") -> str:
    return read_bytes(uri).decode(encoding)


def read_table(uri: Location, columns: list[str] | None = None) -> pa.Table:
    import pyarrow.parquet as pq

    fs, path = resolve(uri)
    return pq.read_table(path, columns=columns, filesystem=fs)


def read_parquet(uri: Location, columns: list[str] | None = None) -> pd.DataFrame:
    """A parquet file as pandas reads it (`pd.read_parquet`), from any location."""
    import pandas as pd

    fs, path = resolve(uri)
    return pd.read_parquet(path, columns=columns, filesystem=fs)


def parquet_rows(uri: Location) -> int:
    """Row count from the parquet footer (no data read)."""
    import pyarrow.parquet as pq

    with open_input(uri) as fh:
        return int(pq.read_metadata(fh).num_rows)


def parquet_metadata(uri: Location) -> Any:
    import pyarrow.parquet as pq

    with open_input(uri) as fh:
        return pq.read_metadata(fh)


# ----------------------------------------------------------------------------------------------
# writing


@contextmanager
def _staged(uri: Location) -> Iterator[Path]:
    """A local temporary file next to local `uri`, renamed over it if the block succeeds, else removed."""
    target = local_path(uri).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def _output(uri: Location) -> Iterator[Any]:
    """A writable stream whose content appears at `uri` all at once, only if the block succeeds."""
    import pyarrow as pa

    fs, path = resolve(uri)
    # compression=None: bytes are stored as given (pyarrow would otherwise gzip a `.gz` name again)
    if is_remote(uri):
        # buffered, then one write: an error inside the block must not upload what was written so far
        # (closing an S3 output stream completes the upload, whatever happened before)
        buf = pa.BufferOutputStream()
        yield buf
        data = buf.getvalue()
        with fs.open_output_stream(path, compression=None) as out:
            out.write(data)
        return
    with _staged(uri) as tmp, fs.open_output_stream(str(tmp), compression=None) as out:
        yield out


def write_bytes(data: bytes, uri: Location) -> str:
    with _output(uri) as out:
        out.write(data)
    return os.fspath(uri)


def write_text(text: str, uri: Location, encoding: str = "utf-8") -> str:
    return write_bytes(text.encode(encoding), uri)


def write_parquet(data: pa.Table | pd.DataFrame, uri: Location, *, index: bool = False) -> str:
    """Write a table (or a DataFrame, as `DataFrame.to_parquet(index=index)` would) to `uri`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not is_remote(uri):
        with _staged(uri) as tmp:
            if isinstance(data, pa.Table):
                pq.write_table(data, tmp)
            else:
                data.to_parquet(tmp, index=index)
        return os.fspath(uri)
    buf = pa.BufferOutputStream()
    if isinstance(data, pa.Table):
        pq.write_table(data, buf)
    else:
        data.to_parquet(buf, index=index)
    return write_bytes(buf.getvalue().to_pybytes(), uri)


def copy(src: Location, dst: Location, *, keep_mtime: bool = False) -> str:
    """Copy a file byte for byte, across stores too; `dst` appears whole or not at all.

    Streams between pyarrow files rather than `pyarrow.fs.copy_files`, which would compress or
    decompress names ending in .gz/.bz2/... on the way. `keep_mtime` (local `dst` only) stamps the
    copy with the source's modification time, so `version(dst) == version(src)` while it is current.
    """
    stamp = version(src)[1] if keep_mtime else None
    with open_input(src) as fin, _output(dst) as out:
        while chunk := fin.read(1 << 20):
            out.write(chunk)
    if stamp is not None and not is_remote(dst):
        os.utime(local_path(dst), ns=(stamp, stamp))
    return os.fspath(dst)


def delete(uri: Location) -> bool:
    """Remove a file; False when there was none."""
    if not is_file(uri):
        return False
    fs, path = resolve(uri)
    log.info("removing %s", os.fspath(uri))
    fs.delete_file(path)
    return True


def sha256(uri: Location) -> str:
    import hashlib

    h = hashlib.sha256()
    with open_input(uri) as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


@contextmanager
def local_copy(uri: Location) -> Iterator[Path]:
    """A local path holding the content of `uri`, for libraries that need one (email attachments).

    A local location is yielded as it is; a remote one is downloaded to a temporary folder (same
    file name) that is removed afterwards.
    """
    if not is_remote(uri):
        yield local_path(uri)
        return
    with tempfile.TemporaryDirectory(prefix="flywheel-") as tmp:
        path = Path(tmp) / name(uri)
        copy(uri, path)
        yield path
