"""A real MLflow tracking store and registry on SQLite for a test module (tests/unit/test_guard_check.py,
tests/unit/test_sentinel.py): MLFLOW_TRACKING_URI points at it while the module runs, then the environment's URI
is back (the integration tests' servers)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def sqlite_tracking(folder: Path) -> Iterator[Any]:
    """An MlflowClient on `folder`/mlflow.db (creating its tables costs seconds: share one per module)."""
    import mlflow

    uri = f"sqlite:///{folder / 'mlflow.db'}"
    saved = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)
    try:
        yield mlflow.MlflowClient(tracking_uri=uri)
    finally:
        mlflow.set_tracking_uri(None)
        if saved is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved
