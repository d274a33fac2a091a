"""The model card: what a reviewer of a version reads (Markdown and HTML), from what MLflow recorded."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pipelines.gate import compare_on_holdout, decide_promotion
from pipelines.model_card import CardFacts, card_html, card_markdown
from pipelines.spec import REPO_ROOT, SliceSpec, load_specs

pytestmark = pytest.mark.unit

FRAUD = load_specs(REPO_ROOT / "models")["fraud"]
SPEC = dataclasses.replace(FRAUD, gate={**FRAUD.gate, "max_latency_p95_ms": 50.0, "max_brier": 0.1},
                           slices=(SliceSpec("channel"),))


def decision(champion: bool = True, reason_suffix: str = "") -> dict:
    rng = np.random.default_rng(1)
    n = 3000
    y = (rng.random(n) < 0.08).astype(float)
    ch = rng.choice(np.array(["pos", "online", "wallet"], dtype=object), size=n, p=[0.55, 0.43, 0.02])

    def scores(signal, seed):
        z = signal * y + np.random.default_rng(seed).normal(size=n) - 3.0
        return 1 / (1 + np.exp(-z))

    ev = compare_on_holdout(SPEC, y, scores(3.0, 2), scores(2.0, 3) if champion else None, "2" if champion else None,
                            {"channel": ch}, {"p95_ms": 1.5, "p50_ms": 1.0})
    d = decide_promotion(SPEC, "3", ev).to_dict()
    d["reason"] += reason_suffix
    return d


def facts(d: dict | None, **kw) -> CardFacts:
    base = dict(
        version="3", run_id="abc123",
        version_tags={"flywheel.gate.decision": "promoted"},
        run_tags={"flywheel.window.train_start": "2026-01-12T00:00:00+00:00",
                  "flywheel.window.holdout_start": "2026-02-16T00:00:00+00:00",
                  "flywheel.window.labelled_until": "2026-02-18T00:00:00+00:00",
                  "flywheel.train_sha256": "a" * 64, "flywheel.holdout_sha256": "b" * 64,
                  "flywheel.code_version": "deadbeef", "flywheel.seed": "42", "flywheel.lib.xgboost": "3.2.0",
                  "flywheel.lib.mlflow": "3.17.2", "flywheel.lib.pandas": "2.3.3", "flywheel.reason": "drift retrain",
                  "flywheel.spec_sha256": "c" * 64, "flywheel.feature_service": "fraud_features"},
        params={"max_depth": "5", "eta": "0.15", "seed": "42", "train_rows": "50000", "holdout_rows": "3000",
                "features": "amount,channel"},
        metrics={"holdout_average_precision": 0.5, "boosted_rounds": 41.0},
        aliases=["champion"], decision=d,
        history=[{"at": "2026-11-25T18:00:00+00:00", "action": "promote", "actor": "gate via train__fraud run r1",
                  "reason": "promoted: better", "moves": [{"alias": "champion", "from": "2", "to": "3"}]}],
        features=["amount", "channel"], categorical=["channel"])
    base.update(kw)
    return CardFacts(**base)


def test_card_has_every_section_a_reviewer_needs():
    md = card_markdown(SPEC, facts(decision()))
    for section in ("## Intended use", "## Owners", "## Training data", "## Reproducibility", "## Features",
                    "## Metrics on the holdout", "## Metrics by slice", "## Gate decision",
                    "## Registry history of this version", "## Limitations"):
        assert section in md, section
    assert SPEC.description in md
    assert all(o in md for o in SPEC.owners)
    assert "a" * 64 in md and "b" * 64 in md and "deadbeef" in md and "xgboost 3.2.0" in md
    assert "2026-01-12" in md and "2026-02-18" in md
    assert "`channel` (categorical)" in md
    assert "Status: **champion** (serving)" in md
    assert "champion: 2 → 3" in md


def test_card_lists_every_gate_check_and_slice():
    d = decision()
    md = card_markdown(SPEC, facts(d))
    assert "**PROMOTED**" in md
    for c in d["checks"]:
        assert f"| {c['name']} | pass |" in md
    for s in d["slices"]:
        assert f"| channel={s['value']} | {s['rows']} |" in md
    assert "paired-bootstrap interval" in md and "champion v2 (same rows)" in md
    assert "Too few rows or positives to evaluate: channel=wallet" in md


def test_card_of_a_rejected_first_model_says_so():
    d = decision(champion=False)
    d["promote"], d["reason"] = False, "rejected: challenger average_precision 0.1 (must be >= 0.2)"
    d["checks"][3]["passed"] = False
    md = card_markdown(SPEC, facts(d, aliases=["challenger"], history=[]))
    assert "Status: **rejected by the gate**" in md and "**REJECTED**" in md and "**FAIL**" in md
    assert "First model: there was no champion to compare with" in md
    assert "champion v" not in md.split("## Metrics on the holdout")[1].split("## Metrics by slice")[0]


def test_card_shows_an_override():
    md = card_markdown(SPEC, facts(decision(), aliases=[],
                                   version_tags={"flywheel.override.action": "reject",
                                                 "flywheel.override.by": "admin via override__fraud run r9",
                                                 "flywheel.override.reason": "complaints from ops"}))
    assert "rejected by an override" in md and "complaints from ops" in md and "admin via override__fraud" in md


def test_html_is_self_contained_and_escapes_what_it_is_given():
    md = card_markdown(SPEC, facts(decision(reason_suffix=" <script>alert(1)</script> | pipe")))
    html = card_html(md, "flywheel-fraud v3")
    assert html.startswith("<!doctype html>") and "<table>" in html and "<h1>" in html
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<title>flywheel-fraud v3</title>" in html


def test_card_says_how_the_training_set_was_sampled_and_that_the_gate_judged_the_full_holdout():
    sampled = {"flywheel.sampling.rule": "negatives", "flywheel.sampling.fraction": "0.05",
               "flywheel.sampling.weight": "20", "flywheel.sampling.train_rows_before": "35000000",
               "flywheel.sampling.train_rows_after": "2450000"}
    base = facts(decision()).run_tags
    md = card_markdown(SPEC, facts(decision(), run_tags={**base, **sampled}))
    line = next(x for x in md.splitlines() if x.startswith("| sampling |"))
    assert "`negatives`: every positive and 5% of the negatives" in line and "seed 42" in line
    assert "weighted 20 in training and early stopping: 2,450,000 of 35,000,000 training rows kept" in line
    assert "The gate judged on the full holdout: 3,000 rows, none left out by sampling." in line
    assert "Trained on a sample of the negatives" in md.split("## Limitations")[1]
    # a version trained before sampling was recorded, or without it: every row
    md = card_markdown(SPEC, facts(decision()))
    assert "| sampling | none: every labelled row of the training window. The gate judged on the full holdout: " \
           "3,000 rows" in md
    assert "Trained on a sample" not in md
