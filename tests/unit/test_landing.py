"""Landed files: the interval of a file (by name, else by data) and which files still wait for the gate."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

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
    with pytest.raises(ValueError, match="cannot be read as parquet to place the batch in an interval"):
        interval_of(CONTRACT, str(f))


def test_the_real_problem_is_named_when_the_interval_cannot_be_read(tmp_path):
    """An empty file, a CSV with another delimiter, a missing timestamp column: each said as what it is (they used
    to come back as 'cannot infer the interval')."""
    empty = tmp_path / "export.csv"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"export.csv: the file is empty \(0 bytes\)"):
        interval_of(CONTRACT, str(empty))
    semi = tmp_path / "export_semi.csv"
    semi.write_text(f"transaction_id;{CONTRACT.timestamp}\nt1;2026-02-10T10:00:00Z\n")
    with pytest.raises(ValueError, match=r"looks ;-delimited; write it comma-separated") as err:
        interval_of(CONTRACT, str(semi))
    assert "export_semi.csv" in str(err.value)
    other = tmp_path / "export_cols.csv"
    other.write_text("transaction_id,when\nt1,2026-02-10T10:00:00Z\n")
    with pytest.raises(ValueError, match=rf"no column `{CONTRACT.timestamp}`.*\['transaction_id', 'when'\]"):
        interval_of(CONTRACT, str(other))
    text = tmp_path / "export_text.csv"
    text.write_text(f"{CONTRACT.timestamp}\nyesterday\n")
    with pytest.raises(ValueError, match=rf"`{CONTRACT.timestamp}` cannot be read as timestamps"):
        interval_of(CONTRACT, str(text))


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


def test_the_watcher_announces_a_waiting_file_again_until_the_gate_judges_it(tmp_path, monkeypatch):
    """Airflow can drop an asset event of a burst (a backfill of many files landed at once): a file still waiting
    for the gate is announced again (`refire`), and no more once its report records its bytes."""
    import asyncio

    from flywheel.triggers import LandingTrigger
    from pipelines.layout import Layout
    from pipelines.util import sha256_file

    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path))
    monkeypatch.delenv("FLYWHEEL_DATA_URI", raising=False)
    lay = Layout.from_env()
    landing = Path(lay.landing(CONTRACT.name))
    landing.mkdir(parents=True)
    f = landing / CONTRACT.file_name(MON)
    pd.DataFrame({CONTRACT.timestamp: pd.to_datetime(["2026-02-10T10:00"], utc=True)}).to_parquet(f)
    trigger = LandingTrigger(CONTRACT.name, poll_seconds=0.05)
    trigger.refire_seconds = 0.3

    second = landing / CONTRACT.file_name(MON + timedelta(weeks=1))
    pd.DataFrame({CONTRACT.timestamp: pd.to_datetime(["2026-02-17T10:00"], utc=True)}).to_parquet(second)

    async def events(n: int) -> list[dict]:
        out, gen = [], trigger.run()
        async for ev in gen:
            out.append(ev.payload)
            if len(out) == n:
                break
        await gen.aclose()
        return out

    burst, again = asyncio.run(events(2))
    # both files in ONE event (the triggerer passes on one event of a burst)
    assert [x["key"] for x in burst["files"]] == ["2026-02-09", "2026-02-16"]
    first = burst["files"][0]
    assert first["file"] == str(f) and "refire" not in first
    assert [x["refire"] for x in again["files"]] == [True, True] and again["files"][0]["sha256"] == first["sha256"]
    second.unlink()
    reports = Path(lay.validation_reports(CONTRACT.name))
    reports.mkdir(parents=True)
    (reports / "2026-02-09.json").write_text(json.dumps({"batch_sha256": sha256_file(f)}))

    async def quiet() -> list[dict]:
        gen, out = trigger.run(), []
        try:
            async with asyncio.timeout(1.0):
                async for ev in gen:
                    out.append(ev.payload)
        except TimeoutError:
            pass
        await gen.aclose()
        return out

    assert asyncio.run(quiet()) == []   # judged: not announced at all
