"""Landed files: the interval of a file (by name, else by data) and which files still wait for the gate."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime

import pandas as pd
import pytest

from pipelines.landing import interval_of, pending, start_from_name
from pipelines.spec import load_datasets

pytestmark = pytest.mark.unit

CONTRACT = load_datasets()["transactions"]
MON = datetime(2026, 2, 9, tzinfo=UTC)


def test_the_interval_comes_from_the_file_name_any_extension():
    name = CONTRACT.file_name(MON)
    assert start_from_name(CONTRACT, name) == MON
    assert start_from_name(CONTRACT, name.replace(".parquet", ".csv")) == MON
    assert start_from_name(CONTRACT, "something_else.parquet") is None


def test_a_file_without_a_dated_name_is_placed_by_its_earliest_event(tmp_path):
    f = tmp_path / "late_export.parquet"
    pd.DataFrame({CONTRACT.timestamp: pd.to_datetime(["2026-02-11T10:00", "2026-02-13T09:00"], utc=True)}).to_parquet(f)
    assert interval_of(CONTRACT, str(f)) == (MON, datetime(2026, 2, 16, tzinfo=UTC))


def test_an_hourly_cadence_places_a_file_in_its_hour(tmp_path):
    hourly = dataclasses.replace(CONTRACT, cadence="0 * * * *", file_pattern="x_{start:%Y-%m-%dT%H}.parquet")
    start = datetime(2026, 2, 9, 13, tzinfo=UTC)
    assert interval_of(hourly, str(tmp_path / "x_2026-02-09T13.parquet")) == (start, start.replace(hour=14))


def test_unreadable_without_a_name_says_why(tmp_path):
    f = tmp_path / "garbage.parquet"
    f.write_bytes(b"not parquet")
    with pytest.raises(ValueError, match="cannot be read from `event_ts`"):
        interval_of(CONTRACT, str(f))


def test_pending_lists_files_the_gate_has_not_judged_in_their_current_bytes(tmp_path):
    landing, reports = tmp_path / "landing", tmp_path / "reports"
    landing.mkdir()
    reports.mkdir()
    first = landing / CONTRACT.file_name(MON)
    first.write_bytes(b"v1")
    (landing / "notes.txt").write_text("ignored: not a batch")
    known: dict = {}
    (only,) = pending(CONTRACT, str(landing), str(reports), known)
    assert only.key == "2026-02-09" and only.interval_end == datetime(2026, 2, 16, tzinfo=UTC)
    # the gate judged these bytes (accepted or blocked): nothing waits any more
    (reports / "2026-02-09.json").write_text(json.dumps({"batch_sha256": only.sha256, "verdict": "blocked"}))
    assert pending(CONTRACT, str(landing), str(reports), known) == []
    # a fixed file re-landed under the same name: new bytes, waiting again
    first.write_bytes(b"v2 fixed")
    (again,) = pending(CONTRACT, str(landing), str(reports), known)
    assert again.sha256 != only.sha256 and again.key == only.key
