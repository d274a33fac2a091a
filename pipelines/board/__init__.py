"""What the Flywheel page in the Airflow UI shows, collected from where each fact is recorded today.

Nothing here is new state: the page reads what the loop already wrote.

* **Models** (`models.py`, `model_board`): the registry (an `MlflowClient` passed in) gives the
  champion, challenger and previous champion (aliases), every version's gate decision, its checks and
  its primary metric on the gate holdout (the `flywheel.gate.*` version tags of pipelines/tags.py),
  overrides and rollbacks (the alias history on the registered model, pipelines/gate.py) and the
  model card (`flywheel.model_card`); the monitor's verdicts (`Layout.reports(model)`, index.jsonl and
  one `<key>.json` per window, pipelines/monitor/reports.py) give drift per column per window and the
  primary metric of each labelled live window.
* **Datasets** (`datasets.py`, `dataset_board`): the gate's `ValidationResult` JSONs
  (`Layout.validation_reports(dataset)/<key>.json`) give rows landed, clean and quarantined per batch
  and the verdict; the kept copies under `Layout.blocked(dataset)/<key>/` give the blocked files of an
  interval that was later re-landed; `Layout.data_docs(dataset)` holds the Data Docs pages.
* **Files** (`files.py`): the reports, Data Docs pages and model cards the page links to, served only
  from Flywheel's own folders (`FileRef` -> a location, or None for anything outside them).
* **Charts** (`charts.py`): small SVG strings drawn server-side (no JavaScript, no fetch).
* **Pages** (`pages.py`): the HTML of the page, everything escaped.

Names of columns, views and features are never written here: they come from the specs and the
recorded results. No airflow import; pandas, pyarrow and mlflow only inside functions.
"""

from pipelines.board.datasets import BatchRow, DatasetBoard, dataset_board
from pipelines.board.files import FileRef, resolve_file
from pipelines.board.models import (
    DriftWindow,
    MetricPoint,
    ModelBoard,
    TimelineEvent,
    VersionFacts,
    model_board,
)

__all__ = [
    "BatchRow",
    "DatasetBoard",
    "DriftWindow",
    "FileRef",
    "MetricPoint",
    "ModelBoard",
    "TimelineEvent",
    "VersionFacts",
    "dataset_board",
    "model_board",
    "resolve_file",
]
