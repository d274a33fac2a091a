"""Where Flywheel keeps its runtime state: one folder, `FLYWHEEL_HOME` (default `.flywheel/`).

The DAG layer builds a `Layout` from the environment and passes plain paths to pipelines/
functions; nothing in pipelines/ reads the environment for locations.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pipelines.spec import REPO_ROOT


def default_home() -> Path:
    return Path(os.environ.get("FLYWHEEL_HOME", REPO_ROOT / ".flywheel")).resolve()


def interval_key(start: datetime) -> str:
    """The partition key of a data interval: its start date (batches are whole days/weeks)."""
    return start.strftime("%Y-%m-%d")


@dataclass(frozen=True)
class Layout:
    home: Path

    @classmethod
    def from_env(cls) -> Layout:
        return cls(default_home())

    # raw data: landed by producers, never modified by Flywheel
    def landing(self, dataset: str) -> Path:
        return self.home / "data" / "landing" / dataset

    # validation outputs, per model (each model validates with its own rules)
    def validated(self, model: str) -> Path:
        return self.home / "data" / "validated" / model

    def quarantine(self, model: str) -> Path:
        return self.home / "data" / "quarantine" / model

    def blocked(self, model: str) -> Path:
        return self.home / "data" / "blocked" / model

    def validation_reports(self, model: str) -> Path:
        return self.home / "data" / "validation_reports" / model

    # the GX Data Docs site of a model's gate (index: data_docs/<model>/site/index.html)
    def data_docs(self, model: str) -> Path:
        return self.home / "data" / "data_docs" / model

    # feature tables, per feature view (shared by every model that uses the view)
    def feature_table(self, view: str) -> Path:
        return self.home / "features" / view

    def feast_dir(self) -> Path:
        return self.home / "feast"

    def scores(self, model: str) -> Path:
        return self.home / "scores" / model

    def reports(self, model: str) -> Path:
        return self.home / "reports" / model

    def mail(self) -> Path:
        return self.home / "mail"

    def airflow_home(self) -> Path:
        return self.home / "airflow"

    def mlflow_dir(self) -> Path:
        return self.home / "mlflow"

    def logs(self) -> Path:
        return self.home / "logs"

    def run(self) -> Path:
        return self.home / "run"

    def secrets(self) -> Path:
        return self.home / "secrets"
