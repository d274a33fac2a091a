"""The guardrail as the monitor runs it (pipelines/monitor/guard.py): scores and shadow scores written as the score
stage writes them, labels in validated batches, a real MLflow registry on SQLite. It acts only on a champion that
is worse on labelled rows both versions scored, inside its guard period; then the rollback is audited, the version
is marked (the gate's `promote` refuses it, an override does not), and the owners' email carries the evidence."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from pipelines import gate, storage, tags
from pipelines.guardrail import ACTOR
from pipelines.layout import interval_key
from pipelines.mail import Pages, html_to_text
from pipelines.monitor.guard import (
    apply_guard,
    check_guard,
    compose_guard_email,
    list_guard,
    record_guard,
)
from pipelines.score import SHADOW_DIR
from pipelines.spec import load_specs

pytestmark = pytest.mark.unit

SPEC = next(s for s in load_specs().values() if s.guardrail is not None and s.task == "binary")
WEEK = timedelta(days=7)
T0 = datetime(2026, 3, 2, tzinfo=UTC)     # the interval the new champion first scored


@pytest.fixture(scope="module")
def tracking(tmp_path_factory):
    """One MLflow registry on SQLite for the module (creating its tables costs seconds): v1 and v2."""
    from mlflow_sqlite import sqlite_tracking

    tmp = tmp_path_factory.mktemp("guard-mlflow")
    with sqlite_tracking(tmp) as client:
        exp = client.create_experiment(f"flywheel/{SPEC.name}", artifact_location=(tmp / "art").as_uri())
        client.create_registered_model(SPEC.registered_model_name)
        for _ in range(2):
            run = client.create_run(exp)
            client.create_model_version(SPEC.registered_model_name, f"{run.info.artifact_uri}/model",
                                        run.info.run_id)
        yield client


@pytest.fixture
def registry(tracking):
    """Champion v2 promoted over v1 (previous-champion), v2 served from T0, no guardrail mark."""
    name = SPEC.registered_model_name
    for alias in ("champion", "previous-champion"):
        if alias in tracking.get_registered_model(name).aliases:
            tracking.delete_registered_model_alias(name, alias)
    for key in (tags.GUARDRAIL_ROLLED_BACK, tags.GUARDRAIL_EVIDENCE):
        if key in tracking.get_model_version(name, "2").tags:
            tracking.delete_model_version_tag(name, "2", key)
    gate.promote(SPEC, "1", "first model", T0 - 4 * WEEK)
    gate.promote(SPEC, "2", "retrain", T0)
    tracking.set_model_version_tag(name, "2", tags.SERVED_FROM, T0.isoformat())
    return tracking


def _week(tmp_path, start: datetime, worse_by: float, seed: int, n: int = 6000) -> None:
    """One scored interval: v2's scores, v1's shadow scores of the same rows, the validated batch with labels.
    v1 ranks with signal; v2 replaces `worse_by` of its signal with noise."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.05).astype(int)
    signal = y + rng.normal(0, 0.6, n)
    noise = rng.normal(0.5, 0.6, n)
    key = interval_key(start)
    ids = [f"r{seed}-{i}" for i in range(n)]
    ts = pd.Timestamp(start) + pd.to_timedelta(rng.integers(0, 7 * 86400, n), unit="s")
    base = {SPEC.dataset.row_id: ids, SPEC.event_timestamp: ts, SPEC.entity_key: rng.integers(0, n // 4, n)}
    scores = tmp_path / "scores"
    (scores / SHADOW_DIR).mkdir(parents=True, exist_ok=True)
    (tmp_path / "validated").mkdir(exist_ok=True)
    v2 = np.where(rng.random(n) < worse_by, noise, signal)
    pd.DataFrame({**base, "prediction": v2, "model_version": "2"}).to_parquet(scores / f"{key}.parquet")
    pd.DataFrame({SPEC.dataset.row_id: ids, "model_version": "1", "role": "previous-champion",
                  "prediction": signal}).to_parquet(scores / SHADOW_DIR / f"{key}.parquet")
    pd.DataFrame({**base, SPEC.label.column: y}).to_parquet(tmp_path / "validated" / f"{key}.parquet")


def _check(tmp_path, start: datetime = T0, spec=SPEC):
    return check_guard(spec, str(tmp_path / "scores"), str(tmp_path / "validated"), start, start + WEEK)


def test_a_worse_champion_is_rolled_back_audited_marked_and_emailed(registry, tmp_path):
    _week(tmp_path, T0, worse_by=0.8, seed=1)
    verdict = _check(tmp_path)
    assert verdict.action == "rollback", verdict.reason
    assert (verdict.champion, verdict.previous) == ("2", "1")
    assert verdict.champion_value < verdict.previous_value
    assert verdict.improvement["high"] < -SPEC.guardrail.tolerance
    # only rows whose label is due by the end of the interval were judged; the rest wait
    assert 0 < verdict.evidence["rows_pending_labels"] < 6000 and verdict.rows + verdict.evidence[
        "rows_pending_labels"] == 6000

    moved = apply_guard(SPEC, verdict, "monitor_run_1", actor=f"{ACTOR} via monitor__{SPEC.name} run r1")
    assert moved["champion"] == "1" and moved["rolled_back"] == "2"
    model = registry.get_registered_model(SPEC.registered_model_name)
    assert str(model.aliases.get("champion")) == "1" and "previous-champion" not in model.aliases
    last = gate.alias_history(SPEC, registry)[-1]
    assert last["action"] == "rollback" and last["actor"].startswith(ACTOR) and "worse" in last["reason"]
    marked = registry.get_model_version(SPEC.registered_model_name, "2").tags
    assert marked[tags.GUARDRAIL_ROLLED_BACK] and '"rollback"' in marked[tags.GUARDRAIL_EVIDENCE]
    # a retried task does not roll back twice
    assert apply_guard(SPEC, verdict, "monitor_run_1")["champion"] == "1"
    assert sum(e.get("run_key") == "monitor_run_1" for e in gate.alias_history(SPEC, registry)) == 1

    # marked: the gate's promote refuses it; a person's override promotes it
    with pytest.raises(gate.PromotionError, match="rolled back by the guardrail"):
        gate.promote(SPEC, "2", "a later gate", T0 + 2 * WEEK)
    gate.override(SPEC, "2", "promote", "labels were late; v2 is fine", "alice")
    assert str(registry.get_registered_model(SPEC.registered_model_name).aliases["champion"]) == "2"

    path = record_guard(str(tmp_path / "reports"), interval_key(T0), verdict, moved)
    assert storage.exists(path)
    assert [g["action"] for g in list_guard(str(tmp_path / "reports"))] == ["rollback"]

    pages = Pages(base_url="http://127.0.0.1:8080/")
    mail = compose_guard_email(SPEC, verdict, moved, pages)
    text = html_to_text(mail.html)
    assert set(mail.to) == set(SPEC.owners)
    assert "rolled back v2 -> v1" in mail.subject
    assert f"{verdict.champion_value:.4f}" in text and f"{verdict.previous_value:.4f}" in text
    assert f"{verdict.improvement['high']:+.4f}" in text and f"{verdict.rows:,}" in text
    assert 'href="http://127.0.0.1:8080/flywheel/runbooks/automatic-rollback"' in mail.html
    assert "http://127.0.0.1:8080/flywheel/runbooks/automatic-rollback" in text   # the text part links it too
    assert f'href="http://127.0.0.1:8080/flywheel/models/{SPEC.name}"' in mail.html


def test_an_equally_good_champion_is_kept(registry, tmp_path):
    _week(tmp_path, T0, worse_by=0.0, seed=2)
    verdict = _check(tmp_path)
    assert verdict.action == "none" and "not worse" in verdict.reason, verdict.reason
    assert apply_guard(SPEC, verdict, "r") is None
    assert str(registry.get_registered_model(SPEC.registered_model_name).aliases["champion"]) == "2"


@pytest.mark.parametrize("case", ["labels not due", "outside the guard period", "no previous champion",
                                  "no shadow scores", "no guardrail declared"])
def test_fail_safe_cases_take_no_action_and_say_why(registry, tmp_path, case):
    _week(tmp_path, T0, worse_by=0.8, seed=3)
    spec, start, want = SPEC, T0, ""
    if case == "labels not due":          # judged on the interval's first day: no label is due yet
        verdict = check_guard(SPEC, str(tmp_path / "scores"), str(tmp_path / "validated"), T0, T0 + timedelta(days=1))
        assert verdict.action == "none" and "too few labels" in verdict.reason, verdict.reason
        return
    if case == "outside the guard period":
        start, want = T0 + timedelta(days=SPEC.guardrail.guard_days), "outside its"
    elif case == "no previous champion":
        registry.delete_registered_model_alias(SPEC.registered_model_name, "previous-champion")
        want = "no previous champion"
    elif case == "no shadow scores":
        storage.delete(str(tmp_path / "scores" / SHADOW_DIR / f"{interval_key(T0)}.parquet"))
        want = "no shadow scores"
    else:
        spec, want = replace(SPEC, guardrail=None), "declares no `guardrail:`"
    verdict = _check(tmp_path, start, spec)
    assert verdict.action == "none" and want in verdict.reason, verdict.reason
    assert str(registry.get_registered_model(SPEC.registered_model_name).aliases["champion"]) == "2"


def test_serving_counts_from_the_first_interval_after_the_training_cutoff(registry):
    """A past interval re-scored after a promotion (a feature rebuild re-triggers scoring) is not serving: those rows
    were the version's own training data, and a guard period starting there would flatter it (the demo's holiday
    model once escaped the guardrail so). The first interval at or after its training cutoff counts."""
    from pipelines.score import mark_served

    name = SPEC.registered_model_name
    registry.delete_model_version_tag(name, "2", tags.SERVED_FROM)
    registry.set_model_version_tag(name, "2", tags.TRAINED_AS_OF, T0.isoformat())
    assert mark_served(registry, name, "2", T0 - WEEK) is None
    assert tags.SERVED_FROM not in registry.get_model_version(name, "2").tags
    assert mark_served(registry, name, "2", T0) == T0.isoformat()
    assert mark_served(registry, name, "2", T0 + WEEK) == T0.isoformat()       # set once
    registry.delete_model_version_tag(name, "2", tags.TRAINED_AS_OF)
