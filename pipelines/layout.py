"""Where Flywheel keeps its state: a local folder, `FLYWHEEL_HOME` (default `.flywheel/`), and a data
root, `FLYWHEEL_DATA_URI` (default: FLYWHEEL_HOME itself), that may be `s3://bucket/prefix`.

The data that crosses stages and hosts lives under the data root and is addressed by URI strings
(see pipelines/storage.py): landing, validated, quarantine, blocked, validation reports (the
duplicate-batch registry and the distribution profiles are read by every later run), feature tables,
scores and drift reports. The keys under the root are the same whatever the root:
`data/landing/<dataset>`, `data/validated/<dataset>`, `data/quarantine/<dataset>`, `data/blocked/<dataset>`,
`data/validation_reports/<dataset>`, `features/<view>`, `scores/<model>`, `reports/<model>`. A batch is
validated once per dataset; every model reading the dataset reads its validated batches. With the
default root these are the same local folders as always (plain paths, not file:// URIs).

What stays local under FLYWHEEL_HOME (`Path`s): the feature tables' read cache for Feast (see
`feature_cache`) and the Feast repo state, training sets, the GX Data Docs site (a static site GX
writes through its own filesystem backend), and airflow/, mlflow/ (MLflow has its own artifact root
setting), logs/, run/, secrets/ and mail/.

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
    """The partition key of a data interval: its start date, with the time when it is not midnight
    (`2026-01-05`, `2026-01-05T1300` for an hourly cadence). Sorts in time order."""
    if (start.hour, start.minute) == (0, 0):
        return start.strftime("%Y-%m-%d")
    return start.strftime("%Y-%m-%dT%H%M")


def parse_key(key: str) -> datetime:
    """The interval start of a partition key (UTC)."""
    from datetime import UTC

    ts = datetime.fromisoformat(key)
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts


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

    # validation outputs, per dataset (validated once, whichever models read it)
    def validated(self, dataset: str) -> str:
        return storage.join(self.data_root, "data", "validated", dataset)

    def quarantine(self, dataset: str) -> str:
        return storage.join(self.data_root, "data", "quarantine", dataset)

    def blocked(self, dataset: str) -> str:
        return storage.join(self.data_root, "data", "blocked", dataset)

    def validation_reports(self, dataset: str) -> str:
        return storage.join(self.data_root, "data", "validation_reports", dataset)

    def scores(self, model: str) -> str:
        return storage.join(self.data_root, "scores", model)

    def reports(self, model: str) -> str:
        return storage.join(self.data_root, "reports", model)

    # emails that could not be sent yet (pipelines/outbox.py): pending/, sent/, expired/
    def outbox(self) -> str:
        return storage.join(self.data_root, "outbox")

    # ---- local to this host (Paths under FLYWHEEL_HOME)

    # the GX Data Docs site of a dataset's gate (index: data_docs/<dataset>/site/index.html)
    def data_docs(self, dataset: str) -> Path:
        return self.home / "data" / "data_docs" / dataset

    # feature tables, per feature view (built once, read by every model whose FeatureService has it)
    def features(self) -> str:
        return storage.join(self.data_root, "features")

    def feature_table(self, view: str) -> str:
        return storage.join(self.features(), view)

    # ...and their local read cache, where Feast's FileSources point (feature_repo/definitions.py).
    # Feast's DuckDB offline store reads s3:// only through DuckDB's httpfs extension (ibis loads it
    # for every s3:// path), which DuckDB downloads at first use and which cannot be downloaded on
    # this machine; so each reader syncs the store's tables into this folder first
    # (pipelines.features.sync_feature_tables). With the default data root the two are the same.
    def feature_cache(self) -> Path:
        return self.home / "features"

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
