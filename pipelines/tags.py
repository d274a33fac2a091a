"""Every `flywheel.*` MLflow tag name Flywheel writes or reads, written once.

Three carriers: the training **run** (what trained it, on what data, with which code), the **model
version** (its gate decision, promotions, rollbacks, overrides, card) and the **registered model** (the
alias history). Tag values are strings (MLflow's rule); a PREFIX is followed by a name chosen at write
time (`f"{LIB_PREFIX}xgboost"`). Feast tags on feature views (`flywheel.dataset`, ...) are not MLflow
tags: they live in pipelines/features/declarations.py.
"""

from __future__ import annotations

# --- training run and model version: why and from what the version was trained (pipelines/model.py)
MODEL = "flywheel.model"  # run: the spec's model name
RUN_KEY = "flywheel.run_key"  # run + version: the orchestrator run that trained it (re-runs reuse the version)
REASON = "flywheel.reason"  # run + version: why it was trained (schedule, drift retrain, manual...)
CODE_VERSION = "flywheel.code_version"  # run + version: git SHA of the training code ("-dirty" if modified)
FEATURE_SERVICE = "flywheel.feature_service"  # run: the Feast FeatureService the training set came from
TRAIN_SHA256 = "flywheel.train_sha256"  # run: sha256 of the train parquet
HOLDOUT_SHA256 = "flywheel.holdout_sha256"  # run: sha256 of the holdout parquet
SPEC_SHA256 = "flywheel.spec_sha256"  # run: sha256 of the model spec file (a copy is under `spec/` in the run)
SEED = "flywheel.seed"  # run: the spec's training seed
LIB_PREFIX = "flywheel.lib."  # run (all) + version (xgboost, mlflow, pandas): + library name -> its version
WINDOW_PREFIX = "flywheel.window."  # run: + train_start | holdout_start | labelled_until -> ISO timestamp
TRAINED_UNTIL = "flywheel.trained_until"  # version: ISO end of the labelled data it was trained on
TRAINED_AS_OF = "flywheel.trained_as_of"  # version: ISO data time of the retrain (cooldowns count from here)
TRAIN_ROWS = "flywheel.train_rows"  # version: rows in its training set
# run: how the training rows were sampled (`training.sampling`, pipelines/training.py); the holdout never is
SAMPLING_RULE = "flywheel.sampling.rule"  # run: "none" | "negatives" | "rows"
SAMPLING_FRACTION = "flywheel.sampling.fraction"  # run: share of the sampled rows kept
SAMPLING_WEIGHT = "flywheel.sampling.weight"  # run: weight of a sampled row in training and early stopping
SAMPLING_ROWS_BEFORE = "flywheel.sampling.train_rows_before"  # run: training rows of the window before sampling
SAMPLING_ROWS_AFTER = "flywheel.sampling.train_rows_after"  # run: training rows kept (trained on)

# --- model version: the gate's decision (pipelines/gate.py `record_decision`)
GATE_DECISION = "flywheel.gate.decision"  # version: "promoted" | "rejected"
GATE_REASON = "flywheel.gate.reason"  # version: the decision's reason (first 5,000 characters)
GATE_MODE = "flywheel.gate.mode"  # version: "vs_champion" | "first_model"
GATE_METRIC = "flywheel.gate.metric"  # version: the primary metric's name
GATE_CHALLENGER_VALUE = "flywheel.gate.challenger_value"  # version: its primary metric on the gate holdout
GATE_CHAMPION_VALUE = "flywheel.gate.champion_value"  # version: the champion's primary metric on the same rows
GATE_CHAMPION_VERSION = "flywheel.gate.champion_version"  # version: the champion it was compared with ("None")
GATE_HOLDOUT_ROWS = "flywheel.gate.holdout_rows"  # version: rows of the gate holdout
GATE_IMPROVEMENT = "flywheel.gate.improvement"  # version: estimate [interval] of the paired bootstrap, or "n/a"
GATE_ARTIFACT = "flywheel.gate.artifact"  # version: run-relative path of the gate's JSON decision
GATE_SLICES = "flywheel.gate.slices"  # version: slice counts by status, and the blocking slices
GATE_CHECK_PREFIX = "flywheel.gate.check."  # version: + check name -> "PASS|FAIL value=... threshold=... | detail"

GOLDEN_PREFIX = "flywheel.golden."  # version: + golden set name -> "PASS|FAIL sha256=<hash of the file judged on>"

# --- model version: registry moves after the gate (pipelines/gate.py)
PROMOTED_AT = "flywheel.promoted_at"  # version: ISO time of the promotion (data time; wall clock if overridden)
PROMOTED_REASON = "flywheel.promoted_reason"  # version: why it was promoted
ROLLED_BACK_AT = "flywheel.rolled_back_at"  # version: ISO wall-clock time it was rolled back from champion
ROLLED_BACK_REASON = "flywheel.rolled_back_reason"  # version: why it was rolled back
OVERRIDE_ACTION = "flywheel.override.action"  # version: a human's "promote" | "reject" over the gate
OVERRIDE_REASON = "flywheel.override.reason"  # version: why the human overrode the gate
OVERRIDE_BY = "flywheel.override.by"  # version: who overrode (actor)
OVERRIDE_AT = "flywheel.override.at"  # version: ISO wall-clock time of the override
SERVED_FROM = "flywheel.served_from"  # version: ISO start of the first interval it scored as champion (data time)

# --- model version: the guardrail after a promotion (pipelines/guardrail.py, pipelines/monitor/guard.py)
GUARDRAIL_ROLLED_BACK = "flywheel.guardrail.rolled_back"  # version: ISO time; set = promote() refuses it but overrides
GUARDRAIL_EVIDENCE = "flywheel.guardrail.evidence"  # version: the verdict (JSON) that rolled it back

# --- model version: its model card (pipelines/model_card.py)
MODEL_CARD = "flywheel.model_card"  # version: run-relative path of the card's HTML artifact

# --- registered model: the alias history (pipelines/gate.py)
ALIAS_HISTORY_PREFIX = "flywheel.alias_history."  # registered model: + "<UTC timestamp>Z.<id>" -> one JSON move
