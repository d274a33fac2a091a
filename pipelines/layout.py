"""Where Flywheel keeps its state: a local folder, `FLYWHEEL_HOME` (default `.flywheel/`), and a data
root, `FLYWHEEL_DATA_URI` (default: FLYWHEEL_HOME itself), that may be `s3://bucket/prefix`.

The data that crosses stages and hosts lives under the data root and is addressed by URI strings
(see pipelines/storage.py): landing, validated, quarantine, blocked, validation reports (the
duplicate-batch registry and the distribution profiles are read by every later run), scores and
drift reports. The keys under the root are the same whatever the root:
`data/landing/<dataset>`, `data/validated/<model>`, `data/quarantine/<model>`, `data/blocked/<model>`,
`data/validation_reports/<model>`, `scores/<model>`, `reports/<model>`. With the default root these
are the same local folders as always (plain paths, not file:// URIs).

What stays local under FLYWHEEL_HOME (`Path`s): the feature tables and the Feast repo state (Feast's
DuckDB offline store would read s3:// through DuckDB's httpfs extension, which DuckDB downloads on
first use, and that download is not possible on this machine; the feature tables are rebuilt from the
validated batches, which are in the store), the GX Data Docs site (a static site GX writes through its
own filesystem backend), and airflow/, mlflow/ (MLflow has its own artifact root setting), logs/,
run/, secrets/ and mail/.

The DAG layer builds a `Layout` from the environment and passes plain paths and URIs to pipelines/
functions; nothing in pipelines/ reads the environment for locations.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pipelines import storage
from pipelines.spec import REPO_ROOT


def default_home() -> Path:
    return Path(os.environ.get("FLYWHEEL_HOME", REPO_ROOT / ".flywheel")).resolve()


def default_data_uri() -> str | None:
    """FLYWHEEL_DATA_URI (`s3://bucket/prefix`, `file:///path` or a path), or None for FLYWHEEL_HOME."""
    raw = os.environ.get("FLYWHEEL_DATA_URI", "").strip()
    if not raw:
        return None
    if "://" not in raw:
        return str(Path(raw).resolve())
    storage.scheme(raw)  # an unsupported scheme fails here, naming the value
    return raw.rstrip("/")


def interval_key(start: datetime) -> str:
    """The partition key of a data interval: its start date (batches are whole days/weeks)."""
    return start.strftime("%Y-%m-%d")


@dataclass(frozen=True)
class Layout:
    home: Path
    data_uri: str | None = None  # root of the shared data areas; None: `home`

    @classmethod
    def from_env(cls) -> Layout:
        return cls(default_home(), default_data_uri())

    @property
    def data_root(self) -> str:
        return self.data_uri or str(self.home)

    # ---- in the store (URI strings, see pipelines/storage.py)

    # raw data: landed by producers, never modified by Flywheel
    def landing(self, dataset: str) -> str:
        return storage.join(self.data_root, "data", "landing", dataset)

    # validation outputs, per model (each model validates with its own rules)
    def validated(self, model: str) -> str:
        return storage.join(self.data_root, "data", "validated", model)

    def quarantine(self, model: str) -> str:
        return storage.join(self.data_root, "data", "quarantine", model)

    def blocked(self, model: str) -> str:
        return storage.join(self.data_root, "data", "blocked", model)

    def validation_reports(self, model: str) -> str:
        return storage.join(self.data_root, "data", "validation_reports", model)

    def scores(self, model: str) -> str:
        return storage.join(self.data_root, "scores", model)

    def reports(self, model: str) -> str:
        return storage.join(self.data_root, "reports", model)

    # ---- local to this host (Paths under FLYWHEEL_HOME)

    # the GX Data Docs site of a model's gate (index: data_docs/<model>/site/index.html)
    def data_docs(self, model: str) -> Path:
        return self.home / "data" / "data_docs" / model

    # feature tables, per feature view (shared by every model that uses the view). Local: Feast's DuckDB
    # offline store reads them, and reading s3:// from DuckDB needs its httpfs extension, which DuckDB
    # downloads at first use and which cannot be downloaded on this machine.
    def feature_table(self, view: str) -> Path:
        return self.home / "features" / view

    def feast_dir(self) -> Path:
        return self.home / "feast"

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
