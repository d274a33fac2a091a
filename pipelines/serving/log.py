"""The online scoring log: every answered row, appended to the model's scores folder in batches, off the request
path.

A request only appends its rows to an in-memory queue (bounded: when the store is away for long, the oldest rows
are dropped and counted, never the request). A background thread writes them every `flush_s` seconds or
`flush_rows` rows, whichever comes first, as parquet files

    <scores>/<model>/_online/<interval key>__<write time ns>-<pid>-<n>.parquet

one per (flush, data interval): the interval of the dataset's cadence that holds each row's event time, so the
monitor reads a window's online rows as it reads its batch files (`read_online`, the same overlap rule as
`pipelines.score.read_scores`). The columns are the batch log's (row id, entity keys, event time, row features,
the service's features, `prediction`, `model_version`, `scored_for` = the interval key) plus `source` = "online"
and `served_at`; delayed labels join them by row id exactly as they join batch rows
(`pipelines.score.join_delayed_labels`).
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pipelines import storage

if TYPE_CHECKING:
    from pipelines.spec import ModelSpec
    from pipelines.storage import Location

log = logging.getLogger(__name__)

ONLINE_DIR = "_online"
SOURCE = "source"


class OnlineLog:
    def __init__(self, spec: ModelSpec, scores_dir: Location, flush_rows: int = 1000, flush_s: float = 2.0,
                 max_pending: int = 200_000) -> None:
        self.spec, self.dir = spec, storage.join(scores_dir, ONLINE_DIR)
        self.flush_rows, self.flush_s, self.max_pending = flush_rows, flush_s, max_pending
        self._queue: collections.deque[dict[str, Any]] = collections.deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()          # one writer at a time (the thread, or close())
        self._thread: threading.Thread | None = None
        self._seq = 0
        self.written = 0
        self.dropped = 0
        self.files = 0
        self.last_error: str | None = None

    # ---- the request path: O(rows), no I/O

    def append(self, rows: list[dict[str, Any]]) -> None:
        self._queue.extend(rows)
        over = len(self._queue) - self.max_pending
        if over > 0:
            for _ in range(over):
                self._queue.popleft()
            self.dropped += over
        if len(self._queue) >= self.flush_rows:
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._queue)

    # ---- the writer

    def flush(self) -> int:
        """Write what is queued now; returns the rows written (kept queued and retried when the write fails)."""
        with self._lock:
            rows: list[dict[str, Any]] = []
            while self._queue and len(rows) < 50_000:
                rows.append(self._queue.popleft())
            if not rows:
                return 0
            try:
                self._write(rows)
            except Exception as exc:  # noqa: BLE001 - the store may be away: keep the rows, try again
                self._queue.extendleft(reversed(rows))
                message = f"{type(exc).__name__}: {exc}"
                if message != self.last_error:
                    log.error("%s: online log not written to %s (%s); %d rows kept for the next try",
                              self.spec.name, self.dir, message, len(rows))
                self.last_error = message
                return 0
            self.last_error = None
            self.written += len(rows)
            return len(rows)

    def _write(self, rows: list[dict[str, Any]]) -> None:
        import pandas as pd

        from pipelines.landing import previous_tick
        from pipelines.layout import interval_key

        frame = pd.DataFrame.from_records(rows)
        ts_col = self.spec.event_timestamp
        frame[ts_col] = pd.to_datetime(frame[ts_col], utc=True, format="ISO8601")
        frame["served_at"] = pd.to_datetime(frame["served_at"], unit="s", utc=True)
        cadence = self.spec.dataset.cadence
        starts = {t: previous_tick(cadence, t.to_pydatetime()) for t in frame[ts_col].dt.floor("min").unique()}
        keys = frame[ts_col].dt.floor("min").map(lambda t: interval_key(starts[t]))
        frame["scored_for"] = keys
        stamp = f"{time.time_ns()}-{os.getpid()}"
        for key, part in frame.groupby(keys, sort=True):
            self._seq += 1
            storage.write_parquet(part.reset_index(drop=True),
                                  storage.join(self.dir, f"{key}__{stamp}-{self._seq}.parquet"))
            self.files += 1
        log.debug("%s: %d online row(s) logged under %s", self.spec.name, len(frame), self.dir)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_s)
            self._wake.clear()
            self.flush()

    def start(self) -> OnlineLog:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"online-log-{self.spec.name}", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop the thread and write what is left."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        while self._queue and self.flush():
            pass


def online_key(path: str) -> datetime:
    """The data interval (start) an online log file holds rows of."""
    return datetime.fromisoformat(storage.stem(path).split("__", 1)[0])


def read_online(scores_dir: Location, start: datetime, end: datetime, cadence: str | None = None) -> Any:
    """The online rows of the intervals `pipelines.score.read_scores` would read for [start, end)."""
    import pandas as pd

    from pipelines.landing import next_tick

    frames = []
    for p in storage.list_files(storage.join(scores_dir, ONLINE_DIR), ".parquet"):
        try:
            key = online_key(p).replace(tzinfo=start.tzinfo or UTC)
        except ValueError:
            log.warning("%s: not an online log file name (<interval key>__<id>.parquet); skipped", p)
            continue
        inside = (start <= key < end) if cadence is None else (key < end and next_tick(cadence, key) > start)
        if inside:
            frames.append(storage.read_parquet(p))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
