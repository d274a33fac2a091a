"""What the gate writes besides its reports: the clean rows, the quarantined rows, the kept blocked file.

Every output is written whole through pipelines/storage.py (locally a temporary file renamed over the
target; on S3 one PUT), so a rerun overwrites it atomically. The landed file is only ever read.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from pipelines import storage
from pipelines.util import sha256_file
from pipelines.validate.reading import arrow_type
from pipelines.validate.results import REASONS

if TYPE_CHECKING:
    import pandas as pd

    from pipelines.spec import DatasetContract
    from pipelines.storage import Location

logger = logging.getLogger(__name__)


def without(df: pd.DataFrame, rows: Any) -> pd.DataFrame:
    """`df` minus the rows at the given positions (the frame itself when there are none)."""
    import numpy as np

    if not len(rows):
        return df
    keep = np.ones(len(df), dtype=bool)
    keep[rows] = False
    return df.loc[keep]


def clean_table(clean: pd.DataFrame, contract: DatasetContract) -> Any:
    """The clean rows as an arrow table: contract columns only, in contract order, with contract types."""
    import pyarrow as pa

    cols = contract.columns
    frame = clean[[c.name for c in cols]].reset_index(drop=True)
    pandas_type = {"int": "int64", "float": "float64"}  # no nulls in accepted non-nullable columns
    frame = frame.astype(
        {
            c.name: ("Int64" if c.nullable and c.type == "int" else pandas_type[c.type])
            for c in cols
            if c.type in pandas_type and str(frame[c.name].dtype) != pandas_type[c.type]
        }
    )
    schema = pa.schema([pa.field(c.name, arrow_type(c.type), nullable=c.nullable) for c in cols])
    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    return table.replace_schema_metadata(None)  # readers get plain int64/float64/object dtypes


def quarantine_table(df: pd.DataFrame, bad_rows: Any, reasons: Any) -> Any:
    """The offending rows as landed, plus `_quarantine_reasons` ("; "-joined `rule(column)` labels)."""
    import pyarrow as pa

    frame = df.iloc[bad_rows].reset_index(drop=True)
    frame[REASONS] = reasons
    frame[REASONS] = frame[REASONS].astype("string")
    return pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)


def remove(path: Location) -> None:
    """Remove a stale output (a clean file of a batch now blocked, a quarantine file with no rows left)."""
    if storage.is_file(path):
        logger.info("removing stale %s", path)
        storage.delete(path)


def preserve_blocked(batch_file: Location, blocked_dir: Location, key: str) -> str:
    """Keep a byte-identical copy of a blocked batch, so re-landing a fixed file loses no evidence.

    Copies go to blocked_dir/<key>/<sha256[:12]>-<file name> (the location, as a string); the same bytes
    blocked twice are kept once. The batch and the folder may be on different stores (e.g. a local file
    checked with `flywheel validate`, kept in an S3 data root).
    """
    digest = sha256_file(batch_file)[:12]
    out = storage.join(blocked_dir, key, f"{digest}-{storage.name(batch_file)}")
    if not storage.is_file(out):
        storage.copy(batch_file, out)
    return out
