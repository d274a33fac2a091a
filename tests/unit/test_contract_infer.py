"""`flywheel contract infer`: a draft contract from sample files, that loads and accepts its own sample."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flywheel.cli import main
from pipelines.contract_infer import InferError, draft_contract, infer_contract
from pipelines.landing import interval_of
from pipelines.spec import REPO_ROOT, DatasetContract, load_contract
from pipelines.validate import validate_batch

pytestmark = pytest.mark.unit

GENRES = ["Action", "Comedy", "Drama", "Horror"]


def ratings_month(month: int, n: int = 120, seed: int = 0) -> pd.DataFrame:
    """A month of ratings: an id, two int keys, half stars, a nullable int (nulls: pandas writes it as float), a
    low- and a high-cardinality string, and the event time in an unusual column, `rated_at`."""
    rng = np.random.default_rng(seed + month)
    start = datetime(2015, month, 1, tzinfo=UTC)
    minutes = np.sort(rng.integers(0, 27 * 24 * 60, n))
    age = [None if i % 9 == 0 else 18 + (i * 7) % 50 for i in range(n)]
    return pd.DataFrame({
        "rating_id": [f"{month}:{i}" for i in range(n)],
        "userId": rng.integers(1, 40, n),
        "movie_id": rng.integers(1, 900, n),
        "stars": rng.integers(1, 11, n) / 2,
        "age": pd.array(age, dtype="Int64").astype("float64"),   # as pandas writes an int column with nulls
        "genre": [GENRES[i % 4] for i in range(n)],
        "title": [f"Movie {(i * 13) % 70}" for i in range(n)],  # 70 titles: too many for `allowed`, not unique
        "rated_at": [start + timedelta(minutes=int(m)) for m in minutes],
    })


def monthly_csvs(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for month in (1, 2, 3):
        df = ratings_month(month)
        df["rated_at"] = df["rated_at"].map(lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ"))   # CSV: ISO 8601 text
        path = folder / f"ratings_2015-{month:02d}.csv"
        df.to_csv(path, index=False)
        out.append(path)
    return out


def weekly_parquet(folder: Path, n: int = 200) -> Path:
    rng = np.random.default_rng(7)
    start = datetime(2026, 1, 5, tzinfo=UTC)   # a Monday
    tip = rng.integers(0, 30, n).astype("float64")
    tip[::10] = np.nan
    df = pd.DataFrame({
        "transaction_id": [f"tx{i:05d}" for i in range(n)],
        "customer_id": rng.integers(1, 80, n),
        "amount": rng.uniform(5, 505, n).round(2),
        "tip": tip,                                                       # int with nulls, stored as float
        "channel": pd.Categorical(rng.choice(["pos", "online", "wallet"], n)),
        "is_fraud": rng.choice([0, 1], n, p=[0.9, 0.1]),
        "event_ts": [start + timedelta(hours=float(h)) for h in np.sort(rng.uniform(0, 6.5 * 24, n))],
    })
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tx_2026-01-05.parquet"
    df.to_parquet(path, index=False)
    return path


def load_draft(text: str, name: str, folder: Path) -> DatasetContract:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.yaml").write_text(text)
    return load_contract(folder / f"{name}.yaml")


def assert_accepted(contract: DatasetContract, files: list[Path], tmp_path: Path) -> None:
    """The gate, as ingest_validate__<dataset> runs it, on every sample file: accepted, nothing quarantined."""
    for f in files:
        start, end = interval_of(contract, str(f))
        result = validate_batch(f, contract, start, end, tmp_path / "validated", tmp_path / "quarantine",
                                tmp_path / "reports")
        assert result.verdict == "accepted", [x.message for x in result.failures]
        assert result.rows_quarantined == 0 and not result.failures, [x.message for x in result.failures]


def line_of(text: str, key: str) -> str:
    """The line of the draft that declares `key` (or the list item `- value`)."""
    return next(line for line in text.splitlines()
                if line.lstrip().startswith(key if key.startswith("- ") else f"{key}:"))


# ------------------------------------------------------------------------------------------------
# what the draft says


def test_a_folder_of_monthly_csvs_gives_a_contract_that_loads_and_accepts_the_sample(tmp_path):
    files = monthly_csvs(tmp_path / "sample")

    text = infer_contract([tmp_path / "sample"], "ratings", None)
    contract = load_draft(text, "ratings", tmp_path / "datasets")

    assert contract.timestamp == "rated_at"           # CSV text in ISO 8601 is a timestamp
    assert contract.row_id == "rating_id"
    assert contract.file_pattern == "ratings_{start:%Y-%m}.csv"
    assert contract.cadence == "0 0 1 * *"            # three files a month apart
    assert "monthly" in line_of(text, "cadence") and "3 files" in line_of(text, "cadence")
    assert "# guessed:" in line_of(text, "cadence") and "# guessed:" in line_of(text, "file_pattern")
    types = {c.name: c.type for c in contract.columns}
    assert types == {"rating_id": "string", "userId": "int", "movie_id": "int", "stars": "float", "age": "int",
                     "genre": "string", "title": "string", "rated_at": "timestamp"}
    age = contract.column("age")                      # float in the file, whole numbers: int, nullable
    assert age.nullable and age.max_null_share is not None and 0.11 < age.max_null_share < 1
    assert "whole number" in line_of(text, "age")
    assert contract.column("genre").allowed == tuple(GENRES)
    title = contract.column("title")
    assert title.allowed is None and not title.unique and not title.nullable
    assert contract.column("rating_id").unique and not contract.column("rating_id").nullable
    stars = contract.column("stars")                  # [0.5, 5.0] widened by 10% of 4.5, never below 0
    assert (stars.min, stars.max) == (0.0, 5.5)
    assert contract.column("userId").min is None      # an identifier: no range
    assert (contract.min_rows, contract.max_rows) == (60, 1200)   # half the smallest file, 10x the largest
    assert contract.owners == ("owner@example.com",) and "# REVIEW:" in line_of(text, "- owner@example.com")
    assert "# REVIEW:" in line_of(text, "description")
    assert_accepted(contract, files, tmp_path)


def test_one_parquet_file_of_a_week(tmp_path):
    path = weekly_parquet(tmp_path / "sample")

    text = infer_contract([path], "tx", ["payments@example.com"])
    contract = load_draft(text, "tx", tmp_path / "datasets")

    assert contract.file_pattern == "tx_{start:%Y-%m-%d}.parquet"
    assert contract.cadence == "0 0 * * 1"            # 6.5 days of events from a Monday: weekly
    assert "one interval of events spanning" in line_of(text, "cadence")
    assert contract.timestamp == "event_ts" and contract.row_id == "transaction_id"
    assert contract.owners == ("payments@example.com",)
    tip = contract.column("tip")
    assert tip.type == "int" and tip.nullable and tip.max_null_share == 0.15   # 10% null: x1.5
    assert contract.column("is_fraud").allowed == (0, 1)                         # a flag
    assert contract.column("channel").allowed == ("online", "pos", "wallet")     # a categorical's values
    assert contract.column("amount").min is not None and contract.column("amount").min >= 0
    assert_accepted(contract, [path], tmp_path)


def test_a_name_without_a_date_gets_the_default_pattern_and_a_cadence_from_the_events(tmp_path):
    df = ratings_month(2).head(60)
    df["rated_at"] = [datetime(2015, 2, 3, 1, tzinfo=UTC) + timedelta(minutes=15 * i) for i in range(60)]
    df["rated_at"] = df["rated_at"].map(lambda t: t.isoformat())  # +00:00 offsets
    path = tmp_path / "export.csv"
    df.to_csv(path, index=False)

    text = infer_contract([path], "clicks", None)
    contract = load_draft(text, "clicks", tmp_path / "datasets")

    assert contract.file_pattern == "clicks_{start:%Y-%m-%d}.csv"   # the default: the name carries no date
    assert "default" in line_of(text, "file_pattern")
    assert contract.cadence == "0 0 * * *"                          # 15 hours of events: daily
    assert_accepted(contract, [path], tmp_path)


def test_a_week_of_events_across_a_monday_falls_back_to_the_first_events_weekday(tmp_path):
    start = datetime(2026, 1, 7, tzinfo=UTC)   # a Wednesday
    df = pd.DataFrame({"event_id": range(100), "value": np.linspace(-50, 50, 100),
                       "at": [start + timedelta(hours=1.5 * i) for i in range(100)]})   # to Tuesday
    path = tmp_path / "dump.parquet"
    df.to_parquet(path, index=False)

    contract = load_draft(infer_contract([path], "dump", None), "dump", tmp_path / "datasets")

    assert contract.cadence == "0 0 * * 3"                          # Wednesday to Wednesday
    assert (contract.column("value").min, contract.column("value").max) == (-60, 60)   # +-10% of the range
    assert_accepted(contract, [path], tmp_path)


def test_no_unique_column_is_a_loud_review_and_the_draft_still_loads(tmp_path):
    df = ratings_month(1, n=60)
    df["rating_id"] = [f"r{i % 30}" for i in range(60)]   # every id twice, and no other column unique
    df["movie_id"], df["title"] = [i % 20 for i in range(60)], "Heat"
    path = tmp_path / "ratings_2015-01.parquet"
    df.to_parquet(path, index=False)

    text = infer_contract([path], "ratings", None)
    contract = load_draft(text, "ratings", tmp_path / "datasets")

    assert contract.row_id == "rating_id"
    assert "# REVIEW: no column is unique" in line_of(text, "row_id")


# ------------------------------------------------------------------------------------------------
# errors for people


@pytest.mark.parametrize("write, says", [
    (lambda p: p.write_bytes(b""), "the file is empty (0 bytes)"),
    (lambda p: p.write_text("a;b;rated_at\n1;2;2026-01-05T00:00:00Z\n"), "looks ;-delimited"),
    (lambda p: p.write_text("a\tb\tc\n1\t2\t3\n"), "looks tab-delimited"),
    (lambda p: p.write_text("id,amount,rated_at\n"), "a header but no rows"),
    (lambda p: p.write_text("id,amount,when\n1,2.5,yesterday\n2,3.5,today\n"), "no timestamp column"),
])
def test_a_sample_it_cannot_draft_from_is_one_clear_line_naming_the_file(tmp_path, capsys, write, says):
    path = tmp_path / "sample.csv"
    write(path)

    with pytest.raises(InferError, match=re.escape(says)):
        draft_contract([path], "events", None)
    code = main(["contract", "infer", str(path), "--name", "events", "--out", str(tmp_path)])

    err = capsys.readouterr().err
    assert code == 1 and says in err and str(path) in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "events.yaml").exists()


def test_no_timestamp_says_what_to_do(tmp_path):
    path = tmp_path / "sample.parquet"
    pd.DataFrame({"id": [1, 2], "epoch": [1420070400, 1420074000]}).to_parquet(path)

    with pytest.raises(InferError) as exc:
        draft_contract([path], "events", None)

    assert "add one to the export" in str(exc.value) and "ISO 8601" in str(exc.value)


def test_an_unreadable_parquet_and_an_unknown_file_type(tmp_path):
    bad = tmp_path / "x.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(InferError, match=r"x.parquet: cannot be read as parquet"):
        draft_contract([bad], "x", None)
    other = tmp_path / "x.json"
    other.write_text("{}")
    with pytest.raises(InferError, match=r"unsupported file type `.json`"):
        draft_contract([other], "x", None)


# ------------------------------------------------------------------------------------------------
# the command


def test_the_command_writes_the_draft_shows_the_guesses_and_never_overwrites_without_force(tmp_path, capsys):
    monthly_csvs(tmp_path / "sample")
    out = tmp_path / "datasets"
    out.mkdir()
    args = ["contract", "infer", str(tmp_path / "sample"), "--name", "ratings", "--out", str(out)]

    assert main(args) == 0
    printed = capsys.readouterr().out
    assert f"{out / 'ratings.yaml'}" in printed and "DRAFT" in printed
    assert "rated_at" in printed and "0 0 1 * *" in printed and "monthly" in printed
    assert any(line.split()[:3] == ["age", "int", "yes"] for line in printed.splitlines())
    assert any(line.split()[:3] == ["genre", "string", "no"] and "allowed" in line for line in printed.splitlines())
    assert "flywheel check" in printed and "flywheel validate" in printed and "--dataset ratings" in printed
    first = (out / "ratings.yaml").read_text()

    assert main([*args, "--owner", "catalogue@example.com"]) == 1       # exists: left as it is
    err = capsys.readouterr().err
    assert "already exists" in err and "--force" in err and (out / "ratings.yaml").read_text() == first

    assert main([*args, "--owner", "catalogue@example.com", "--force"]) == 0
    assert load_contract(out / "ratings.yaml").owners == ("catalogue@example.com",)


def test_usage_mistakes_exit_1(tmp_path, capsys):
    path = weekly_parquet(tmp_path)
    assert main(["contract", "infer", str(path)]) == 1
    assert "--name NAME is required" in capsys.readouterr().err
    assert main(["contract", "infer", str(path), "--name", "tx-feed", "--out", str(tmp_path)]) == 1
    assert "Python identifier" in capsys.readouterr().err
    assert main(["contract", "infer", str(path), "--name", "tx", "--out", str(tmp_path / "draft.yaml")]) == 1
    assert "named after its dataset" in capsys.readouterr().err
    assert main(["contract", "infer", str(tmp_path / "nope.csv"), "--name", "tx", "--out", str(tmp_path)]) == 1
    assert "no such file or folder" in capsys.readouterr().err


def test_as_engineers_run_it_infer_then_validate_the_sample(tmp_path):
    """Two subprocesses on a file outside the repository: the draft, then `flywheel validate` accepts the file."""
    sample = weekly_parquet(tmp_path / "outside")
    datasets, models = tmp_path / "datasets", tmp_path / "models"
    datasets.mkdir()
    models.mkdir()   # no model reads the new dataset yet
    env = {**os.environ, "GX_ANALYTICS_ENABLED": "false", "FLYWHEEL_HOME": str(tmp_path / "home"),
           "FLYWHEEL_DATASETS_DIR": str(datasets), "FLYWHEEL_MODELS_DIR": str(models)}

    def flywheel(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "flywheel.cli", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)

    infer = flywheel("contract", "infer", str(sample), "--name", "tx")   # default --out: $FLYWHEEL_DATASETS_DIR

    assert infer.returncode == 0, infer.stderr
    assert (datasets / "tx.yaml").is_file() and "wrote datasets/tx.yaml" in infer.stdout
    validate = flywheel("validate", str(sample), "--dataset", "tx")
    assert validate.returncode == 0, validate.stdout + validate.stderr
    assert validate.stdout.startswith("ACCEPTED  dataset tx") and "200 landed, 200 clean, 0 quarantined" in \
        validate.stdout
    assert REPO_ROOT not in sample.parents
