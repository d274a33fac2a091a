"""The README's "Bring your own data" commands against the played demo: `flywheel ingest --wait` and
`flywheel train`, as an engineer types them, through the real Airflow of the shared `demo` fixture.

They add a month of ratings the demo did not land (June 2016) and train `movie_rating` once more, so they run
after test_loop.py (name order); the champion may move (a later test reads the alias it finds).
"""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest
from loop_outcomes import REPO, mlflow_client

from scenarios import movielens

pytestmark = pytest.mark.integration
MONTH = "2016-06"   # after the short story's live months


def flywheel(demo, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flywheel.cli", *args], env=demo["env"], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def test_ingest_waits_for_the_gate_and_says_the_verdict(demo, tmp_path):
    src = tmp_path / f"ratings_{MONTH}.csv"
    src.write_bytes(movielens.to_csv_bytes(movielens.month_ratings(MONTH)))
    rows = len(movielens.month_ratings(MONTH))

    first = flywheel(demo, "ingest", str(src), "--dataset", "ratings", "--wait")
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"batch__{MONTH}-01: accepted: {rows} clean rows, 0 quarantined" in first.stdout, first.stdout

    # the same bytes again: judged already, no run to wait for
    again = flywheel(demo, "ingest", str(src), "--dataset", "ratings", "--wait", timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "already judged" in again.stdout and "accepted" not in again.stdout


def test_ingest_refuses_a_file_it_cannot_place_and_lands_nothing(demo, tmp_path):
    bad = tmp_path / "ratings_export.csv"
    bad.write_bytes(movielens.to_csv_bytes(movielens.month_ratings(MONTH)).replace(b",", b";"))
    landing = demo["layout"].landing("ratings")
    from pipelines import storage

    before = storage.list_files(landing)
    out = flywheel(demo, "ingest", str(bad), "--dataset", "ratings", "--wait", timeout=120)
    assert out.returncode == 1, out.stdout + out.stderr
    assert ";-delimited" in out.stderr and "comma-separated" in out.stderr and str(bad) in out.stderr, out.stderr
    assert storage.list_files(landing) == before


def test_ingest_of_a_broken_export_exits_2_with_the_gate_s_reasons(demo, tmp_path):
    month = "2016-07"
    df = movielens.month_ratings(month)
    assert len(df) > 0
    broken = df.assign(rating=pd.NA)   # the label column exported empty: a broken batch, not bad rows
    src = tmp_path / f"ratings_{month}.csv"
    src.write_bytes(movielens.to_csv_bytes(broken))
    out = flywheel(demo, "ingest", str(src), "--dataset", "ratings", "--wait")
    assert out.returncode == 2, out.stdout + out.stderr
    assert f"batch__{month}-01: BLOCKED" in out.stdout and "rating" in out.stdout, out.stdout


def test_train_triggers_the_dag_and_prints_the_gate_verdict(demo):
    client = mlflow_client(demo)
    versions = len(client.search_model_versions("name='flywheel-movie_rating'"))
    out = flywheel(demo, "train", "movie_rating", "--reason", "test: a retrain on June")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "train__movie_rating success:" in out.stdout, out.stdout
    assert ("PROMOTED" in out.stdout) != ("REJECTED" in out.stdout), out.stdout
    # the new version is registered (the June landing may also have started a drift retrain of its own)
    import re

    trained = re.search(r"v(\d+) (?:PROMOTED|REJECTED)", out.stdout)
    assert trained and int(trained.group(1)) > versions, out.stdout
    assert client.get_model_version("flywheel-movie_rating", trained.group(1)).version == trained.group(1)
    # as of the end of the newest validated month (June; July was blocked)
    assert "as of 2016-07-01" in out.stdout, out.stdout
