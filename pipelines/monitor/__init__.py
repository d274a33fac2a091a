"""Drift stage of `monitor__<model>`: compare this window's rows with the reference, decide on a retrain.

What one monitor run does (`check_drift`, called by the DAG's `detect_drift` task):

1. **Data.** Reference = the sample of the champion's training set logged with the model version;
   current = the scoring log (`scores/<interval>.parquet`) of the last `drift.window_days`.
2. **Data drift** per column with Evidently (`Report([DataDriftPreset(...)])`). The stat test per column
   comes from the spec (`drift.methods` by column type, `drift.columns` per column; defaults:
   normed Wasserstein for numeric columns, Jensen-Shannon for categorical ones and for numeric columns
   with <= 5 distinct values), pinned for every sample size so a threshold always means the same thing.
   The model's `prediction` is monitored like a feature (prediction drift).
3. **Performance drift** once labels arrive: `pipelines.score.join_delayed_labels` joins the labels now
   due (event time + `label.delay_days` <= the end of the window) onto the scored rows; the primary
   metric on them is compared with the champion's gate-time holdout value (model version tag
   `flywheel.gate.challenger_value`); no such tag -> status "unknown".
4. **Verdict** `reports/<model>/<key>.json` (drift share, per-column scores, methods, thresholds, the
   performance part, the decision, later the email status) next to the Evidently report `<key>.html`,
   and one line per key in `reports/<model>/index.jsonl` (`list_reports` reads it). Re-running a key
   overwrites its files and its index line.
5. **Retrain policy** (`decide_retrain`, pure): a window *alarms* on data drift (share of drifted
   columns >= `drift.drift_share`), or on a performance drop when `drift.performance.retrain` is set.
   A request needs an alarm in >= N of the last M windows (hysteresis, read from the index, keyed by
   interval), no retrain of the model queued or running (dedupe: the DAG asks Airflow), and a champion
   older than `drift.cooldown_days` (counted from its `flywheel.trained_as_of`).
6. **Email** (`plan_email`, pure; `send_drift_report`): owners get one email per *alarm episode*, not one
   per window. An episode starts when a window alerts (data drift or a performance drop) after one that
   did not; later windows of it are recorded with `emailed: false` and their `episode` (the page still
   shows every window) until `drift.cooldown_days` have passed since its last email (then a reminder, or
   with `drift.alerts: digest` a digest of the windows not emailed, also sent when the alarm clears). The
   email shows the verdict, a picture of every column's score against its threshold (a PNG inline,
   `<key>.png`), what happens next, links to the model's and dataset's Flywheel pages and the full report,
   with the Evidently report attached as `.html` (the JSON verdict when over MAX_ATTACHMENT_BYTES). If
   SMTP is down the send is retried, then kept in the outbox; the outcome is recorded in the verdict
   (`email`, `email_failed`) and the index; the report files stay on disk either way. The retrain
   decision (5) and the email plan never change each other.

**Sampling and its error.** Each side is sampled (seeded by `training.seed`) to `drift.max_rows` rows
before Evidently: Evidently's cost grows with the rows (74 s / 2 GB for 1M x 20 columns unsampled) while
the distances converge long before. bench/drift.py measured, at the default 50,000 rows per side, 20
seeds x 20 columns on 1M-row frames: max absolute error of the sampled score vs the all-rows score 0.017
(normed Wasserstein; p95 0.013) and 0.015 (Jensen-Shannon; p95 0.011), against a threshold of 0.1. So a
column's verdict can differ from the all-rows verdict only when its all-rows score is within ~0.02 of
its threshold (0 of 400 seed x column verdicts differed). The A/A and injected-shift tests
(tests/unit/test_monitor.py) run on 3,000-row samples, i.e. with more sampling noise than 50,000 rows.

**Layout.** `results.py` (DriftResult, RetrainDecision, ColumnScores), `drift.py` (Evidently, column
verdicts, sampling), `performance.py` (performance drift), `policy.py` (retrain decision, when to email: episodes),
`reports.py` (verdict files, the reports index), `email.py` (the owners' email, its picture and attachment),
`check.py` (`check_drift`, the stage as the DAG runs it). Every name is importable from
`pipelines.monitor`; a test that patches a module-level name patches it in the submodule that uses it
(e.g. `pipelines.monitor.email.MAX_ATTACHMENT_BYTES`).

Nothing heavy is imported at module level: pandas and evidently are imported inside functions.
"""

from __future__ import annotations

from pipelines.mail import Email
from pipelines.monitor.check import check_drift
from pipelines.monitor.drift import (
    LOW_CARDINALITY,
    PREDICTION_COLUMN,
    SMALL_SAMPLE_ROWS,
    compute_drift,
    drift_scores,
    sample_rows,
)
from pipelines.monitor.email import (
    EMAIL_TOP_COLUMNS,
    MAX_ATTACHMENT_BYTES,
    EmailDeliveryError,
    compose_drift_email,
    record_late_delivery,
    send_drift_report,
)
from pipelines.monitor.performance import performance_drift
from pipelines.monitor.policy import decide_retrain, entry_alerts, is_alarm, needs_email, plan_email
from pipelines.monitor.reports import INDEX_FILE, index_entry, list_reports, record_verdict
from pipelines.monitor.results import ColumnScores, DriftResult, EmailPlan, RetrainDecision
from pipelines.monitor.results import _ranked as _ranked  # tests rank columns directly

__all__ = [
    "EMAIL_TOP_COLUMNS",
    "INDEX_FILE",
    "LOW_CARDINALITY",
    "MAX_ATTACHMENT_BYTES",
    "PREDICTION_COLUMN",
    "SMALL_SAMPLE_ROWS",
    "ColumnScores",
    "DriftResult",
    "Email",
    "EmailDeliveryError",
    "EmailPlan",
    "RetrainDecision",
    "check_drift",
    "compose_drift_email",
    "compute_drift",
    "decide_retrain",
    "drift_scores",
    "entry_alerts",
    "index_entry",
    "is_alarm",
    "list_reports",
    "needs_email",
    "performance_drift",
    "plan_email",
    "record_verdict",
    "sample_rows",
    "record_late_delivery",
    "send_drift_report",
]
