"""The gate's history in the reports folder: which file was accepted for each interval, and the profiles
of the accepted batches; both read-modify-written under a lock (`locked`), which also covers the row-id
index of row_ids.py.

- `accepted_batches.json`: interval key -> sha256, file name and row counts of the accepted file (the
  duplicate-batch registry: the same bytes accepted for another interval are an old file re-sent);
- `profiles/<key>.json`: the profile of each accepted batch's clean rows (distribution.py).

Locks: an exclusive file lock in a local reports folder (two runs of one dataset may validate
different intervals at once). An S3 folder has no lock across hosts: there a single writer per dataset
is guaranteed by the DAG (`ingest_validate__<dataset>` runs with max_active_runs=1), and runs on the
same host (e.g. `flywheel validate` next to a worker) still take a local lock keyed by the URI.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines import storage
from pipelines.validate import messages

if TYPE_CHECKING:
    from pipelines.storage import Location
    from pipelines.validate.results import RuleFailure

logger = logging.getLogger(__name__)

REGISTRY = "accepted_batches.json"
PROFILES = "profiles"


# ----------------------------------------------------------------------------------------------
# accepted batches


def accepted_batches(reports_dir: Location) -> dict[str, dict[str, Any]]:
    """The registry: interval key -> what was accepted for it ({} when none, or when it is unreadable)."""
    path = storage.join(reports_dir, REGISTRY)
    if not storage.is_file(path):
        return {}
    try:
        data = json.loads(storage.read_text(path))
    except ValueError:  # a damaged registry must not block every batch: it is rebuilt as batches pass
        logger.warning("ignoring unreadable duplicate-batch registry %s", path)
        return {}
    return data if isinstance(data, dict) else {}


def record(reports_dir: Location, key: str, entry: dict[str, Any] | None) -> None:
    """Register the file accepted for `key` (None: nothing is accepted for it any more). Call under `locked`."""
    registry = accepted_batches(reports_dir)
    if entry is None:
        if registry.pop(key, None) is None:
            return
    else:
        if registry.get(key) == entry:
            return
        registry[key] = entry
    storage.write_text(json.dumps(registry, indent=2, sort_keys=True) + "\n", storage.join(reports_dir, REGISTRY))


def duplicate_failures(reports_dir: Location, key: str, digest: str, where: str) -> list[RuleFailure]:
    """The same bytes accepted for another interval: an old file sent again (block).

    The same bytes for this same interval are a rerun (a retry, a cleared task, `flywheel validate`
    run twice): the gate is idempotent and gives the same result again.
    """
    return [
        messages.duplicate_batch(other, entry, digest, where)
        for other, entry in sorted(accepted_batches(reports_dir).items())
        if other != key and entry.get("sha256") == digest
    ]


# ----------------------------------------------------------------------------------------------
# profiles of the accepted batches


def write_profile(reports_dir: Location, key: str, profile: dict[str, Any]) -> None:
    storage.write_text(
        json.dumps(profile, indent=2, sort_keys=True) + "\n", storage.join(reports_dir, PROFILES, f"{key}.json")
    )


def remove_profile(reports_dir: Location, key: str) -> None:
    path = storage.join(reports_dir, PROFILES, f"{key}.json")
    if storage.is_file(path):
        logger.info("removing stale %s", path)
        storage.delete(path)


def reference_profiles(reports_dir: Location, key: str, reference_batches: int) -> list[dict[str, Any]]:
    """Profiles of the last `reference_batches` accepted batches before the interval `key` (oldest first)."""
    folder = storage.join(reports_dir, PROFILES)
    files = [f for f in storage.list_files(folder, ".json") if storage.stem(f) < key]
    profiles = []
    for f in files[-reference_batches:] if reference_batches > 0 else []:
        try:
            profiles.append(json.loads(storage.read_text(f)))
        except ValueError:
            logger.warning("ignoring unreadable profile %s", f)
    return profiles


# ----------------------------------------------------------------------------------------------
# locks


@contextmanager
def locked(folder: Location) -> Iterator[None]:
    """An exclusive lock on `folder` (two runs of one dataset may validate different intervals at once).

    A local folder holds its own `.lock`. A remote one (S3 has no locks) is locked on this host only,
    through a lock file in the temporary folder named after the URI: across hosts, the DAG's
    max_active_runs=1 per dataset is what keeps a single writer.
    """
    import fcntl

    if storage.is_remote(folder):
        import hashlib
        import tempfile

        digest = hashlib.sha256(os.fspath(folder).encode()).hexdigest()[:16]
        lock_dir = Path(tempfile.gettempdir()) / "flywheel-locks"
        lock_file = lock_dir / f"{digest}.lock"
    else:
        lock_dir = storage.local_path(folder)
        lock_file = lock_dir / ".lock"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with lock_file.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
