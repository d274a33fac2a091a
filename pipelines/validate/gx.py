"""Great Expectations plumbing: one ephemeral context per batch, and what to read off its results.

Every expectation the gate builds carries Flywheel's short check name in `meta["check"]` (schema,
type, row_count, null_share, not_null, unique, allowed, range, not_in_future, in_interval,
distribution, leak_probe), so a result says which rule it was without guessing from its kwargs.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


class GXBatch:
    """An ephemeral GX context with one whole-dataframe batch definition."""

    def __init__(self) -> None:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        import great_expectations as gx
        import great_expectations.execution_engine.pandas_execution_engine as pandas_engine
        from great_expectations.data_context.types.base import ProgressBarsConfig

        # GX fingerprints in-memory frames below HASH_THRESHOLD bytes (a hash of every cell, on
        # every get_batch): ~0.5 s per 1M rows and call. The batch is identified by the file's sha256.
        pandas_engine.HASH_THRESHOLD = 0  # type: ignore[attr-defined]
        self.gx = gx
        self.context = gx.get_context(mode="ephemeral")
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False)
        asset = self.context.data_sources.add_pandas("landed").add_dataframe_asset("batch")
        self.definition = asset.add_batch_definition_whole_dataframe("whole")
        self.meta: dict[str, Any] = {}

    @property
    def expectations(self) -> Any:
        """GX's expectation classes (`gx.expectations`)."""
        return self.gx.expectations

    def run(self, df: pd.DataFrame, name: str, expectations: list[Any], result_format: dict[str, Any]) -> list[Any]:
        if not expectations:
            return []
        suite = self.gx.ExpectationSuite(name=name, expectations=expectations)
        batch = self.definition.get_batch(batch_parameters={"dataframe": df})
        validation = batch.validate(suite, result_format=result_format)
        self.meta = dict(validation.meta or {})
        return list(validation.results)


def check_of(r: Any) -> str:
    """Flywheel's check name of a GX result (`meta["check"]` of its expectation)."""
    return str((r.expectation_config.meta or {}).get("check", ""))


def rule_of(r: Any) -> tuple[str, str | None]:
    """The GX expectation type of a result and its column (None for table-level expectations)."""
    return r.expectation_config.type, r.expectation_config.kwargs.get("column")


def raised(r: Any) -> str | None:
    """The error message when GX could not evaluate the expectation, else None."""
    info = r.exception_info or {}
    if info.get("raised_exception"):
        return str(info.get("exception_message"))
    return None
