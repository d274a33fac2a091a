"""Airflow triggers of Flywheel (they run in the triggerer process).

`LandingTrigger` watches a dataset's landing area for files the gate has not judged yet (see
pipelines/landing.py) and fires one event per new file or new version of a file. It backs the Asset
watcher of `<dataset>__landed` (flywheel/dagkit.py), so landing a file is enough: `land__<dataset>`
runs on the event and starts `ingest_validate__<dataset>` for the file's interval, past intervals
included (a backfill is just files landed for past intervals).

Why an Asset watcher rather than a sensor or a command: the triggerer already runs in both topologies,
a watcher costs no worker slot while it waits (a sensor would hold one, or reschedule every poke), and
the run it starts is an ordinary DAG run of the interval, visible and retryable in the UI. The
`flywheel ingest FILE` command is the same path for people: it copies a file into landing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

log = logging.getLogger(__name__)


class LandingTrigger(BaseEventTrigger):
    """Fires {"dataset", "files": [{"dataset", "file", "interval_start", "interval_end", "key", "sha256"}, ...]}
    for the landed files whose current bytes the gate has not judged (one event per scan: of a burst of events
    the triggerer passed on one), and again (with "refire": true) every `refire_seconds` while a file still
    waits. Stateless across restarts: what was judged is read from the dataset's validation reports, so a
    restart re-fires only files still waiting."""

    def __init__(self, dataset: str, poll_seconds: float = 5.0) -> None:
        super().__init__()
        self.dataset = dataset
        self.poll_seconds = float(poll_seconds)
        # a file still waiting this long after its event is announced again (`refire`): Airflow can drop an
        # asset event of a burst (a backfill of many files) when it arrives as the run its queue entry
        # started is created; land__<dataset> skips a re-announced file whose ingest run is in flight or failed
        self.refire_seconds = max(60.0, 12 * self.poll_seconds)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("flywheel.triggers.LandingTrigger", {"dataset": self.dataset, "poll_seconds": self.poll_seconds})

    def _scan(self, known: dict[str, Any]) -> list[dict[str, Any]]:
        from pipelines.landing import pending
        from pipelines.layout import Layout
        from pipelines.spec import load_dataset

        lay = Layout.from_env()
        contract = load_dataset(self.dataset)
        return [{"dataset": self.dataset, **f.to_dict()}
                for f in pending(contract, lay.landing(self.dataset), lay.validation_reports(self.dataset), known)]

    async def run(self) -> AsyncIterator[TriggerEvent]:
        known: dict[str, Any] = {}
        fired: dict[str, tuple[str, float]] = {}   # file -> (sha256 announced by this trigger, when)
        while True:
            try:
                found = await asyncio.to_thread(self._scan, known)
            except Exception:  # noqa: BLE001 - a bad contract or an unreachable store: say it, keep watching
                log.exception("landing watch of %s failed; retrying in %ss", self.dataset, self.poll_seconds)
                found = []
            now = time.monotonic()
            announce = []
            for f in found:
                sha, when = fired.get(f["file"], ("", 0.0))
                if sha != f["sha256"]:
                    log.info("landed: %s for %s", f["file"], f["key"])
                    announce.append(f)
                elif now - when >= self.refire_seconds:
                    log.info("still waiting for the gate: %s for %s (announced again)", f["file"], f["key"])
                    announce.append({**f, "refire": True})
                else:
                    continue
                fired[f["file"]] = (f["sha256"], now)
            if announce:   # one event per scan: the triggerer passed on only one of a burst of events
                yield TriggerEvent({"dataset": self.dataset, "files": announce})
            await asyncio.sleep(self.poll_seconds)
