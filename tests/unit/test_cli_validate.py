"""`flywheel validate` as engineers and CI run it: a temporary FLYWHEEL_HOME, exit codes, what it prints.

The first test runs it as a subprocess, as people do; the others call the same `main` in this interpreter
(a new interpreter per call cost ~10 CPU seconds of imports each, with the suite's demo runs beside them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from pipelines.spec import REPO_ROOT, load_contract, load_datasets

pytestmark = pytest.mark.unit

CONTRACT = load_contract(REPO_ROOT / "datasets" / "transactions.yaml")
START = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday: the cadence "0 0 * * 1" ticks here
N = 150


def good_rows(n: int = N) -> pd.DataFrame:
    cols: dict[str, list] = {}
    for c in CONTRACT.columns:
        if c.allowed:
            cols[c.name] = [c.allowed[i % len(c.allowed)] for i in range(n)]
        elif c.type == "string":
            cols[c.name] = [f"tx{i:05d}" for i in range(n)]
        elif c.type == "int":
            cols[c.name] = [i + 1 for i in range(n)]
        elif c.type == "float":
            cols[c.name] = [round(1.0 + 1.25 * i, 2) for i in range(n)]
        else:
            cols[c.name] = [START + timedelta(days=1, minutes=30 * i) for i in range(n)]
    df = pd.DataFrame(cols)
    df[CONTRACT.timestamp] = pd.to_datetime(df[CONTRACT.timestamp], utc=True)
    return df


def flywheel(*args: str, home: Path | None = None, **extra_env: str) -> subprocess.CompletedProcess[str]:
    """`flywheel validate ARGS` in a new interpreter, exactly as an engineer or a CI job runs it."""
    env = {**os.environ, "GX_ANALYTICS_ENABLED": "false", **extra_env}
    if home is not None:
        env["FLYWHEEL_HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "flywheel.cli", "validate", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=180)


def flywheel_here(*args: str, home: Path | None = None, **extra_env: str) -> subprocess.CompletedProcess[str]:
    """The same command through `flywheel.cli.main` in this interpreter (its exit code, stdout and stderr): the
    interpreter's start and imports are the subprocess tests' cost, not what these tests are about. The
    environment is restored afterwards."""
    import contextlib
    import io

    from flywheel.cli import main

    saved = dict(os.environ)
    os.environ.update({"GX_ANALYTICS_ENABLED": "false", **extra_env})
    if home is not None:
        os.environ["FLYWHEEL_HOME"] = str(home)
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(["validate", *args])
            except SystemExit as exc:          # argparse's usage errors
                code = int(exc.code or 0)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return subprocess.CompletedProcess(["flywheel", "validate", *args], code, out.getvalue(), err.getvalue())


def test_accepted_csv_with_quarantined_rows_exits_0_and_writes_the_outputs(tmp_path):
    df = good_rows()
    df.loc[[3, 4], "amount"] = -2.0
    batch = tmp_path / "transactions_2026-01-05.csv"  # the interval comes from the name (file_pattern)
    df.to_csv(batch, index=False)
    home = tmp_path / "home"

    out = flywheel("--dataset", "transactions", str(batch), home=home)

    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ACCEPTED  dataset transactions")
    assert f"{N} landed, {N - 2} clean, 2 quarantined" in out.stdout
    assert "[2026-01-05T00:00:00+00:00, 2026-01-12T00:00:00+00:00)" in out.stdout
    assert "expect_column_values_to_be_between(amount)" in out.stdout and "-2.0" in out.stdout
    data = home / "data"
    # the dataset's folders: one validation per dataset, whichever models read it
    assert len(pd.read_parquet(data / "validated" / "transactions" / "2026-01-05.parquet")) == N - 2
    assert len(pd.read_parquet(data / "quarantine" / "transactions" / "2026-01-05.parquet")) == 2
    report = json.loads((data / "validation_reports" / "transactions" / "2026-01-05.json").read_text())
    assert report["verdict"] == "accepted" and report["rows_quarantined"] == 2
    assert report["dataset"] == "transactions" and "model" not in report
    assert Path(report["data_docs_path"]).is_file() and report["data_docs_path"] in out.stdout
    assert (data / "data_docs" / "transactions" / "site" / "index.html").is_file()
    assert not (data / "validated" / "fraud").exists()


def test_blocked_batch_exits_2_with_json_and_keeps_the_evidence(tmp_path):
    batch = tmp_path / "upstream_export.parquet"  # no interval in the name: the week of the data
    df = good_rows().rename(columns={"amount": "amt"})
    df.loc[[1, 2], "channel"] = "fax"  # rows that break a row rule, in a batch that is blocked anyway
    df.to_parquet(batch, index=False)
    home = tmp_path / "elsewhere"

    out = flywheel_here("--dataset", "transactions", str(batch), "--json", "--home", str(home))

    assert out.returncode == 2, out.stderr
    result = json.loads(out.stdout)
    assert result["verdict"] == "blocked" and result["exit_code"] == 2
    assert result["interval_start"] == START.isoformat()
    assert result["interval_end"] == (START + timedelta(days=7)).isoformat()
    (f,) = [f for f in result["failures"] if f["severity"] == "batch"]
    assert f["rule"] == "expect_table_columns_to_match_set" and "found `amt`" in f["message"]
    assert result["rows_clean"] == 0 and result["clean_path"] is None
    # a blocked batch stays whole: nothing quarantined, the report still counts the rows that broke a row rule
    assert result["rows_quarantined"] == 0 and result["quarantine_path"] is None
    (row,) = [f for f in result["failures"] if f["severity"] == "row"]
    assert (row["column"], row["count"]) == ("channel", 2) and "not quarantined" in row["message"]
    assert not list((home / "data" / "quarantine").rglob("*.parquet"))
    kept = Path(result["blocked_copy"])
    assert kept.read_bytes() == batch.read_bytes()
    assert kept.is_relative_to(home / "data" / "blocked" / "transactions")
    assert Path(result["data_docs_path"]).is_file() and Path(result["report_path"]).is_file()
    assert not (REPO_ROOT / ".flywheel" / "data" / "blocked" / "transactions" / "2026-01-05" / kept.name).exists()


def test_the_labels_of_the_models_reading_the_dataset_must_not_leak(tmp_path):
    batch = tmp_path / "transactions_2026-01-05.parquet"
    good_rows().assign(chargeback=lambda d: d["is_fraud"]).to_parquet(batch, index=False)

    out = flywheel_here("--dataset", "transactions", str(batch), "--json", home=tmp_path / "home")

    assert out.returncode == 2, out.stderr
    (f,) = [f for f in json.loads(out.stdout)["failures"] if f["severity"] == "batch"]
    assert f["rule"] == "leaked_label" and "the label `is_fraud`" in f["message"]
    assert "(the label of model fraud)" in f["message"]  # the readers come from models/


def test_errors_exit_1_with_a_clear_message(tmp_path):
    batch = tmp_path / "transactions_2026-01-05.parquet"
    good_rows().to_parquet(batch, index=False)

    unknown = flywheel_here("--dataset", "nope", str(batch), home=tmp_path)
    assert unknown.returncode == 1
    known = ", ".join(sorted(load_datasets()))   # every contract of datasets/, e.g. "ratings, transactions"
    assert f"unknown dataset 'nope'; known: {known} (datasets/<name>.yaml)" in unknown.stderr

    no_dataset = flywheel_here(str(batch), "--json", home=tmp_path)
    assert no_dataset.returncode == 1 and json.loads(no_dataset.stdout)["verdict"] == "error"
    assert f"--dataset NAME is required; known: {known}" in no_dataset.stderr

    old_flag = flywheel_here("--model", "fraud", str(batch), home=tmp_path)
    assert old_flag.returncode == 1  # an error, not "blocked" (2)
    assert "--model is gone" in old_flag.stderr and "use --dataset transactions" in old_flag.stderr

    missing = flywheel_here("--dataset", "transactions", str(tmp_path / "missing.parquet"), "--json", home=tmp_path)
    assert missing.returncode == 1
    assert json.loads(missing.stdout)["verdict"] == "error"
    assert "missing.parquet: no such file" in missing.stderr

    bad_start = flywheel_here("--dataset", "transactions", str(batch), "--start", "last monday", home=tmp_path)
    assert bad_start.returncode == 1 and "--start 'last monday' is not an ISO 8601" in bad_start.stderr
    assert not (tmp_path / "data").exists()  # nothing written on a usage error


METERS = """\
name: meter_readings
owners: [grid-data@example.com]
file_pattern: "meters_{start:%Y%m%dT%H}.csv"
row_id: reading_id
timestamp: read_at
cadence: "0 * * * *"
columns:
  reading_id: {type: string, nullable: false, unique: true}
  kwh: {type: float, nullable: true, max_null_share: 0.5}
  read_at: {type: timestamp, nullable: false}
validation: {min_rows: 5}
"""


def test_the_interval_follows_the_contract_cadence(tmp_path):
    """Another dataset, another cadence (hourly): the interval of the data is the hour holding its first event."""
    datasets, models = tmp_path / "datasets", tmp_path / "models"
    datasets.mkdir()
    models.mkdir()  # no model reads this dataset
    (datasets / "meter_readings.yaml").write_text(METERS)
    first = START + timedelta(hours=3, minutes=20)
    batch = tmp_path / "export.csv"  # no interval in the name
    reads = [(first + timedelta(minutes=3 * i)).isoformat() for i in range(10)]
    pd.DataFrame({"reading_id": [f"r{i}" for i in range(10)], "kwh": 1.5, "read_at": reads}).to_csv(batch, index=False)

    out = flywheel_here("--dataset", "meter_readings", str(batch), "--json", home=tmp_path / "home",
                   FLYWHEEL_DATASETS_DIR=str(datasets), FLYWHEEL_MODELS_DIR=str(models))

    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert (result["dataset"], result["verdict"], result["rows_clean"]) == ("meter_readings", "accepted", 10)
    assert result["interval_start"] == (START + timedelta(hours=3)).isoformat()
    assert result["interval_end"] == (START + timedelta(hours=4)).isoformat()  # the next tick, not a week later
