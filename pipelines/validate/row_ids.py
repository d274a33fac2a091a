"""Row identity across batches: the contract's `row_id` is unique across every accepted batch of a dataset.

The index, in the reports folder: `row_ids/<key>.parquet`, one file per accepted interval, one column
`id_hash` holding the sorted, distinct 64-bit hashes of that interval's clean row ids (pandas'
`hash_array`: SipHash-2-4 under pandas' fixed key, over the ids as Python str, int64, float64 or
int64 nanoseconds, as the contract types the column), delta-encoded: about 47 bits an id, 5.9 MB per
million ids (bench/row_ids.py). The file's schema metadata names the hash and the column; an index
with another hash or of another column counts as missing.

The check (`seen_elsewhere`): the batch's ids are hashed and sorted once. The other accepted
intervals' index files are read by a few threads (`READ_AHEAD` files at a time, so memory does not grow
with the history), each screened as it arrives through a bit table of the batch's hash prefixes and the
survivors looked up in the batch's sorted hashes. A hash hit is only a candidate: it is confirmed
against that interval's validated file (its ids, compared exactly) before the row is called a
duplicate, so a hash collision can never quarantine a good row.

Which intervals: those with a validated file (what downstream reads) other than the batch's own: a
rerun, or a fixed file re-landed for the interval, replaces that interval's ids and never flags its
own rows. Upgrade path: an interval with a validated file and no usable index (accepted before the
index existed, or indexed with another hash or column) is read from its validated file, and its
index is written then (a lazy rebuild, once per interval). An index file whose validated file is gone
is ignored.

Maintenance, by batch.py under `registry.locked` (the check runs under the same lock, so two runs of
one dataset cannot both accept an id): `write_index` when a batch is accepted, `remove_index` when an
interval becomes blocked.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipelines import storage
from pipelines.validate import messages, registry
from pipelines.validate.results import UNIQUE_ACROSS_BATCHES

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from pipelines.spec import DatasetContract
    from pipelines.storage import Location
    from pipelines.validate.results import RuleFailure

logger = logging.getLogger(__name__)

INDEX = "row_ids"  # the index folder, in the reports folder
COLUMN = "id_hash"
HASH = "pandas.util.hash_array(categorize=False)/siphash-2-4/v1"
META = b"flywheel.row_ids"
CHECK = UNIQUE_ACROSS_BATCHES  # the rule, and its check name


def index_file(reports_dir: Location, key: str) -> str:
    return storage.join(reports_dir, INDEX, f"{key}.parquet")


# ----------------------------------------------------------------------------------------------
# ids and their hashes


def id_values(ids: pd.Series, kind: str) -> np.ndarray:
    """Non-null ids as the values that are hashed and compared: str, int64, float64 or int64 ns (UTC)."""
    import numpy as np
    import pandas as pd

    if kind == "string":
        return ids.to_numpy(dtype=object)
    if kind == "int":
        return ids.to_numpy(dtype=np.int64)
    if kind == "float":
        return ids.to_numpy(dtype=np.float64)
    return pd.to_datetime(ids, utc=True).to_numpy(dtype="datetime64[ns]").view(np.int64)


def id_hashes(values: np.ndarray) -> np.ndarray:
    """The 64-bit hash of each id value (uint64, aligned); `HASH` names the function."""
    import pandas as pd

    return pd.util.hash_array(values, categorize=False)


CHUNK = 1 << 17  # ids hashed at a time: only one chunk's Python strings are alive at once


def hash_ids(ids: Any, kind: str) -> np.ndarray:
    """The hashes of non-null ids (a pd.Series, or an arrow array from `validated_ids`), chunk by chunk."""
    import numpy as np
    import pandas as pd

    def values(i: int) -> np.ndarray:
        if isinstance(ids, pd.Series):
            return id_values(ids.iloc[i : i + CHUNK], kind)
        return ids.slice(i, CHUNK).to_numpy(zero_copy_only=False)

    out = np.empty(len(ids), dtype=np.uint64)
    for i in range(0, len(ids), CHUNK):
        out[i : i + CHUNK] = id_hashes(values(i))
    return out


def sorted_distinct(hashes: np.ndarray) -> np.ndarray:
    """`hashes` sorted, each once (what an index file holds). Not np.unique: 50x slower on uint64 in numpy 2.4."""
    import numpy as np

    out = np.sort(hashes)
    return out[np.concatenate(([True], out[1:] != out[:-1]))] if len(out) else out


@dataclass(frozen=True)
class BatchIds:
    """The row ids of a landed batch: the positions of the rows that have one, and their hashes (aligned)."""

    column: str
    kind: str
    ids: Any  # the batch's id column (pd.Series)
    rows: Any  # positions (int64, increasing) of the rows with a non-null id
    hashes: Any  # uint64

    @classmethod
    def of(cls, df: pd.DataFrame, contract: DatasetContract) -> BatchIds:
        import numpy as np

        column = contract.row_id
        kind = contract.column(column).type
        ids = df[column]
        rows = np.flatnonzero(ids.notna().to_numpy())
        hashes = hash_ids(ids.iloc[rows] if len(rows) < len(ids) else ids, kind)
        return cls(column, kind, ids, rows, hashes)

    def values_at(self, at: Any) -> Any:
        """The id values (as hashed) at the given indexes of `rows`."""
        return id_values(self.ids.iloc[self.rows[at]], self.kind)

    def clean_hashes(self, bad_rows: Any) -> np.ndarray:
        """Sorted distinct hashes of the ids of the rows not in `bad_rows` (what an accepted batch indexes)."""
        import numpy as np

        keep = ~np.isin(self.rows, bad_rows, assume_unique=True) if len(bad_rows) else slice(None)
        return sorted_distinct(self.hashes[keep])


class HashScreen:
    """The batch's sorted hashes, and a bit table of their top bits to screen another interval's hashes fast."""

    def __init__(self, hashes: np.ndarray) -> None:
        import numpy as np

        self.order = np.argsort(hashes)
        self.sorted = hashes[self.order]
        bits = int(min(26, max(10, np.ceil(np.log2(max(len(hashes), 1))) + 4)))  # about 1/16 of the table set
        self.shift = np.uint64(64 - bits)
        self.table = np.zeros(1 << bits, dtype=bool)
        self.table[self.sorted >> self.shift] = True

    def common(self, other: np.ndarray) -> np.ndarray:
        """The hashes of `other` (sorted or not) that the batch has too."""
        import numpy as np

        candidates = other[self.table[other >> self.shift]]
        if not len(candidates) or not len(self.sorted):
            return candidates[:0]
        at = np.minimum(np.searchsorted(self.sorted, candidates), len(self.sorted) - 1)
        return candidates[self.sorted[at] == candidates]

    def positions(self, common: np.ndarray) -> np.ndarray:
        """Indexes (into the batch's id arrays, increasing) of the ids whose hash is in `common`."""
        import numpy as np

        common = np.sort(common)
        at = np.minimum(np.searchsorted(common, self.sorted), len(common) - 1)
        return np.sort(self.order[common[at] == self.sorted])


# ----------------------------------------------------------------------------------------------
# the index files


def write_index(reports_dir: Location, key: str, hashes: np.ndarray, column: str) -> str:
    """Write the index of interval `key`: sorted distinct `hashes` of its clean ids. Call under `locked`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    meta = {"hash": HASH, "column": column, "key": key, "ids": len(hashes)}
    table = pa.table({COLUMN: pa.array(hashes, type=pa.uint64())}).replace_schema_metadata(
        {META: json.dumps(meta, sort_keys=True).encode()}
    )
    buf = pa.BufferOutputStream()
    # sorted 64-bit hashes: delta encoding takes them to ~47 bits each; a codec on top gains nothing
    pq.write_table(
        table, buf, compression="none", use_dictionary=False, column_encoding={COLUMN: "DELTA_BINARY_PACKED"}
    )
    return storage.write_bytes(buf.getvalue().to_pybytes(), index_file(reports_dir, key))


def remove_index(reports_dir: Location, key: str) -> None:
    """Forget the ids of interval `key` (it is no longer accepted). Call under `locked`."""
    path = index_file(reports_dir, key)
    if storage.is_file(path):
        logger.info("removing stale %s", path)
        storage.delete(path)


def read_index(path: str, column: str) -> np.ndarray | None:
    """The hashes of an index file; None when it is unreadable or was written by another hash or column."""
    try:
        table = storage.read_table(path)
        meta = json.loads((table.schema.metadata or {}).get(META, b"{}"))
    except Exception:  # noqa: BLE001 - a damaged index is rebuilt from the validated file, never trusted
        logger.warning("ignoring unreadable row-id index %s", path, exc_info=True)
        return None
    if meta.get("hash") != HASH or meta.get("column") != column or COLUMN not in table.column_names:
        logger.info("row-id index %s was written for %s; rebuilding it", path, meta or "another format")
        return None
    return table.column(COLUMN).to_numpy()


def validated_ids(clean_file: str, column: str, kind: str) -> Any:
    """The ids of an accepted interval, exactly, from its validated file: an arrow array of the values that
    `id_values` gives (strings, int64, float64; timestamps as int64 ns)."""
    import pyarrow as pa

    try:
        ids = storage.read_table(clean_file, columns=[column]).column(column).combine_chunks().drop_null()
        if kind == "timestamp":
            ids = ids.cast(pa.timestamp("ns", tz="UTC")).cast(pa.int64())
        return ids
    except Exception as exc:
        raise RuntimeError(
            f"{clean_file}: cannot read its row ids `{column}` ({type(exc).__name__}: {exc}), so the batch cannot be "
            f"checked against it (rule {CHECK}); nothing is published. If the contract's row_id changed since that "
            "interval was accepted, validate that interval again (or move its validated file away), then rerun."
        ) from exc


# ----------------------------------------------------------------------------------------------
# the check

READ_AHEAD = 4  # index files read ahead, in threads, while one is screened (memory: a few files at most)


def seen_elsewhere(ids: BatchIds, key: str, validated_dir: Location, reports_dir: Location) -> dict[str, np.ndarray]:
    """For each other accepted interval, the positions of the batch's rows whose id it accepted, confirmed
    exactly against its validated file ({} when none). Call under `registry.locked`: an interval with no
    usable index gets one (from its validated file)."""
    from collections import deque
    from concurrent.futures import Future, ThreadPoolExecutor

    import pyarrow as pa
    import pyarrow.compute as pc

    if not len(ids.rows):
        return {}
    screen = HashScreen(ids.hashes)
    indexed = {storage.stem(f): f for f in storage.list_files(storage.join(reports_dir, INDEX), ".parquet")}
    # this interval's own ids are replaced by this run: never a duplicate of itself
    others = [f for f in storage.list_files(validated_dir, ".parquet") if storage.stem(f) != key]

    def screened(clean_file: str) -> tuple[np.ndarray, Any]:
        """The hashes an interval shares with the batch (and its exact ids, when they had to be read)."""
        other = storage.stem(clean_file)
        hashes = read_index(indexed[other], ids.column) if other in indexed else None
        if hashes is not None:
            return screen.common(hashes), None
        # accepted before the index existed (or indexed otherwise): rebuilt from the validated file, once
        exact = validated_ids(clean_file, ids.column, ids.kind)
        hashes = sorted_distinct(hash_ids(exact, ids.kind))
        write_index(reports_dir, other, hashes, ids.column)
        logger.info("row-id index of %s rebuilt from %s (%d ids)", other, clean_file, len(hashes))
        return screen.common(hashes), exact

    found: dict[str, np.ndarray] = {}
    with ThreadPoolExecutor(max_workers=READ_AHEAD, thread_name_prefix="row-ids") as pool:
        queue: deque[tuple[str, Future[tuple[np.ndarray, Any]]]] = deque()
        todo = iter(others)
        for clean_file in todo:
            queue.append((clean_file, pool.submit(screened, clean_file)))
            if len(queue) >= READ_AHEAD:
                break
        while queue:
            clean_file, loading = queue.popleft()
            following = next(todo, None)
            if following is not None:
                queue.append((following, pool.submit(screened, following)))
            common, exact = loading.result()
            if not len(common):
                continue
            at = screen.positions(common)  # candidates: confirmed on the ids themselves
            if exact is None:
                exact = validated_ids(clean_file, ids.column, ids.kind)
            candidates = pa.array(ids.values_at(at))
            if exact.type != candidates.type:  # e.g. large_string written by another tool
                exact = exact.cast(candidates.type)
            # every accepted id probed into the few candidates, then the candidates into the ids that matched
            matched = exact.filter(pc.is_in(exact, value_set=candidates))
            confirmed = pc.is_in(candidates, value_set=matched).to_numpy(zero_copy_only=False)
            other = storage.stem(clean_file)
            if not confirmed.all():
                logger.info("%s: %d row-id hash collision(s) with %s: not duplicates", key, (~confirmed).sum(), other)
            if confirmed.any():
                found[other] = ids.rows[at[confirmed]]
    return found


def reason(column: str, keys: list[str]) -> str:
    """The quarantine reason of a row whose id was accepted for the intervals `keys`."""
    return f"{CHECK}({column}, {', '.join(keys)})"


def quarantined_rows(found: dict[str, np.ndarray], column: str) -> tuple[np.ndarray, np.ndarray]:
    """The rows of `found` (positions, increasing) and their reasons (aligned), each naming every interval
    that accepted the row's id."""
    import numpy as np
    import pandas as pd

    keys = sorted(found)
    if len(keys) == 1:
        rows = found[keys[0]]
        return rows, np.full(len(rows), reason(column, keys), dtype=object)
    rows = np.concatenate([found[k] for k in keys])
    by_row = pd.Series(np.repeat(keys, [len(found[k]) for k in keys])).groupby(rows, sort=True).agg(list)
    return by_row.index.to_numpy(np.int64), np.array([reason(column, k) for k in by_row], dtype=object)


def check_unique_across_batches(
    df: pd.DataFrame,
    ids: BatchIds,
    key: str,
    validated_dir: Location,
    reports_dir: Location,
    where: str,
    quarantine_file: str,
) -> tuple[RuleFailure | None, Any, Any]:
    """The rule: the failure (None when no id of the batch was accepted for another interval), the rows to
    quarantine (positions, increasing) and their reasons (aligned). Call under `registry.locked`."""
    import numpy as np

    found = seen_elsewhere(ids, key, validated_dir, reports_dir)
    if not found:
        return None, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=object)
    rows, reasons = quarantined_rows(found, ids.column)
    accepted = registry.accepted_batches(reports_dir)
    failure = messages.unique_across_batches(
        ids.column,
        len(rows),
        messages.sample(df[ids.column].iloc[rows[:50]].tolist()),
        [(k, len(found[k]), accepted.get(k, {}).get("file")) for k in sorted(found)],
        where,
        messages.show(validated_dir),
        quarantine_file,
    )
    return failure, rows, reasons
