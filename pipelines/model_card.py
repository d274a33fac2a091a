"""A model card per model version, as Markdown and HTML artifacts on the version's MLflow run.

Everything on the card is read back from MLflow (the run's tags, params and metrics, the version's
tags and aliases, the gate's JSON decision, the alias history), so the card shows what the registry
recorded, not what a task believed. `card_markdown` is pure; `write_model_card` does the I/O.
"""

from __future__ import annotations

import html
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines import tags

if TYPE_CHECKING:
    from pipelines.spec import ModelSpec

log = logging.getLogger(__name__)

ARTIFACT_DIR = "model_card"


@dataclass(frozen=True)
class CardFacts:
    version: str
    run_id: str
    version_tags: dict[str, str]
    run_tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]
    aliases: list[str]                       # aliases this version holds now
    decision: dict[str, Any] | None          # the gate's JSON decision (None: never gated)
    history: list[dict[str, Any]] = field(default_factory=list)   # alias moves touching this version
    features: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    importance: list[dict[str, Any]] = field(default_factory=list)   # explain/importance.json (release/explain.py)
    importance_rows: int = 0
    costs: dict[str, dict[int, dict[str, float]]] = field(default_factory=dict)   # release/cost.version_costs


def _num(x: Any, digits: int = 4) -> str:
    if isinstance(x, bool) or x is None:
        return "—" if x is None else str(x)
    if isinstance(x, (int, float)):
        if isinstance(x, float) and not math.isfinite(x):
            return "—"
        return str(int(x)) if float(x).is_integer() and abs(x) >= 1 else f"{x:.{digits}f}"
    return str(x)


def _cell(x: Any) -> str:
    """A Markdown table cell: pipes and newlines would break the row."""
    return str(x).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]
    return out + [""]


def card_markdown(spec: ModelSpec, f: CardFacts) -> str:
    """The model card of one version, as Markdown."""
    t, d = f.run_tags, f.decision or {}
    name = spec.registered_model_name
    window = {k.split(".")[-1]: v for k, v in t.items() if k.startswith(tags.WINDOW_PREFIX)}
    override = f.version_tags.get(tags.OVERRIDE_ACTION)
    if "champion" in f.aliases:
        status = "**champion** (serving)"
    elif override == "reject":
        status = "**rejected by an override**"
    elif d:
        status = f"**{'promoted' if d.get('promote') else 'rejected'} by the gate**"
    else:
        status = "not evaluated by the gate"
    lines = [f"# Model card: {name} v{f.version}", "",
             f"Status: {status}. Aliases now: {', '.join(f'`{a}`' for a in f.aliases) or 'none'}. "
             f"MLflow run `{f.run_id}`.", ""]

    lines += ["## Intended use", "", spec.description or "(no description in the spec)", "",
              f"- Task: {spec.task}; label `{spec.label.column}` ({spec.label.kind}"
              + (f", next {spec.label.horizon_days} days" if spec.label.horizon_days else "")
              + f"), known {spec.label.delay_days} days after the event.",
              f"- Primary metric: `{spec.primary_metric}` "
              f"({'higher' if spec.higher_is_better else 'lower'} is better).",
              f"- Served by `score__{spec.name}` from `models:/{name}@champion`, in batches on the spec's "
              f"schedule (`{spec.schedule}`).",
              "- Out of scope: decisions without a human or rule downstream, entities or categories absent from "
              "the training window, uses other than the one above.", ""]
    lines += ["## Owners", "", *[f"- {o}" for o in spec.owners], ""]

    lines += ["## Training data", ""]
    lines += _table(["what", "value"], [
        ["training window", f"{window.get('train_start', '?')} → {window.get('holdout_start', '?')}"],
        ["holdout (never trained on)", f"{window.get('holdout_start', '?')} → {window.get('labelled_until', '?')}"],
        ["rows", f"{f.params.get('train_rows', '?')} train / {f.params.get('holdout_rows', '?')} holdout"],
        ["sampling", sampling_line(f)],
        ["train data sha256", f"`{t.get(tags.TRAIN_SHA256, '?')}`"],
        ["holdout data sha256", f"`{t.get(tags.HOLDOUT_SHA256, '?')}`"],
        ["feature service", f"`{t.get(tags.FEATURE_SERVICE, spec.feature_service)}` (Feast, point in time)"],
        ["why it was trained", t.get(tags.REASON, "?")],
    ])
    lines += ["## Reproducibility", ""]
    libs = ", ".join(f"{k.split('.')[-1]} {v}" for k, v in sorted(t.items()) if k.startswith(tags.LIB_PREFIX))
    lines += _table(["what", "value"], [
        ["code version (git)", f"`{t.get(tags.CODE_VERSION, '?')}`"],
        ["seed", t.get(tags.SEED, f.params.get("seed", "?"))],
        ["spec sha256", f"`{t.get(tags.SPEC_SHA256, '?')}` (copy under `spec/` in the run)"],
        ["libraries", libs or "?"],
        ["boosted rounds kept", _num(f.metrics.get("boosted_rounds"), 0)],
        ["parameters", ", ".join(f"{k}={v}" for k, v in sorted(f.params.items())
                                 if k not in ("features", "train_rows", "holdout_rows", "seed"))],
    ])
    lines += ["## Features", ""]
    feats = f.features or [x for x in f.params.get("features", "").split(",") if x]
    lines += [", ".join(f"`{x}`" + (" (categorical)" if x in f.categorical else "") for x in feats) or "?", ""]

    lines += ["## Metrics on the holdout", ""]
    chal, champ = d.get("challenger_metrics") or {}, d.get("champion_metrics") or {}
    if not chal:
        chal = {k.removeprefix("holdout_"): v for k, v in f.metrics.items() if k.startswith("holdout_")}
    cv = d.get("champion_version")
    header = ["metric", f"v{f.version}"] + ([f"champion v{cv} (same rows)"] if champ else [])
    lines += _table(header, [[k, _num(v)] + ([_num(champ.get(k))] if champ else []) for k, v in sorted(chal.items())])
    iv = d.get("improvement")
    if iv:
        lines += [f"Improvement in `{spec.primary_metric}` over the champion: {_num(iv.get('estimate'))}, "
                  f"{_num((iv.get('confidence') or 0) * 100, 0)}% paired-bootstrap interval "
                  f"[{_num(iv.get('low'))}, {_num(iv.get('high'))}] ({iv.get('resamples')} resamples of "
                  f"{iv.get('units')} units, seed {iv.get('seed')}).", ""]
    if d.get("latency_p95_ms") is not None:
        lines += [f"Single-row prediction latency p95: {_num(d['latency_p95_ms'], 2)} ms.", ""]

    lines += ["## Metrics by slice", ""]
    slices = d.get("slices") or []
    if slices:
        rows = []
        for s in slices:
            siv = s.get("improvement") or {}
            band = f"{_num(siv.get('estimate'))} [{_num(siv.get('low'))}, {_num(siv.get('high'))}]" if siv else "—"
            rows.append([f"{s['column']}={s['value']}", s["rows"],
                         "—" if s.get("positives") is None else s["positives"],
                         _num(s.get("challenger")), _num(s.get("champion")), band, s["status"]])
        lines += _table(["slice", "rows", "positives", f"v{f.version}", "champion", "improvement [interval]", "status"],
                        rows)
    else:
        lines += ["No slices configured (`gate.slices` in the spec)." if not spec.slices
                  else "Slices were not evaluated.", ""]

    lines += release_sections(spec, f)
    lines += ["## Gate decision", ""]
    if d:
        lines += [f"**{'PROMOTED' if d.get('promote') else 'REJECTED'}** ({d.get('mode')}, "
                  f"{d.get('holdout_rows')} holdout rows). {d.get('reason', '')}", ""]
        lines += _table(["check", "result", "value", "threshold", "detail"],
                        [[c["name"], "pass" if c["passed"] else "**FAIL**", _num(c.get("value")),
                          _num(c.get("threshold")), c.get("detail", "")] for c in d.get("checks", [])])
    else:
        lines += ["The gate has not evaluated this version.", ""]
    if override:
        vt = f.version_tags
        lines += [f"**Override:** {override} by {vt.get(tags.OVERRIDE_BY, '?')} at "
                  f"{vt.get(tags.OVERRIDE_AT, '?')}: {vt.get(tags.OVERRIDE_REASON, '')}", ""]
    if f.history:
        lines += ["## Registry history of this version", ""]
        lines += _table(["when", "action", "moves", "by", "why"],
                        [[e.get("at"), e.get("action"),
                          ", ".join(f"{m['alias']}: {m['from']} → {m['to']}" for m in e.get("moves", [])) or "—",
                          e.get("actor"), e.get("reason")] for e in f.history])

    lines += ["## Limitations", "", *[f"- {x}" for x in limitations(spec, f)], ""]
    return "\n".join(lines)


def _count(x: Any) -> str:
    """A row count with thousands separators ("?" when it was not recorded)."""
    try:
        return f"{int(x):,}"
    except (TypeError, ValueError):
        return "?"


def sampling_line(f: CardFacts) -> str:
    """How the training rows were sampled (the run's `flywheel.sampling.*` tags), and the holdout the gate judged
    on: never sampled, with its row count."""
    t, d = f.run_tags, f.decision or {}
    rule = t.get(tags.SAMPLING_RULE, "none")   # a run from before sampling was recorded trained on every row
    before, after = _count(t.get(tags.SAMPLING_ROWS_BEFORE)), _count(t.get(tags.SAMPLING_ROWS_AFTER))
    try:
        share = f"{float(t.get(tags.SAMPLING_FRACTION, '?')) * 100:g}%"
    except ValueError:
        share = "?"
    how = (f"chosen by a hash of each row's id with seed {t.get(tags.SEED, '?')} (the same rows on a re-run), "
           f"each weighted {t.get(tags.SAMPLING_WEIGHT, '?')} in training and early stopping: {after} of {before} "
           "training rows kept")
    if rule == "negatives":
        text = f"`negatives`: every positive and {share} of the negatives, {how}."
    elif rule == "rows":
        text = f"`rows`: {share} of the training rows, {how}."
    else:
        text = "none: every labelled row of the training window."
    holdout = _count(d.get("holdout_rows", f.params.get("holdout_rows")))
    judged = "The gate judged on the full holdout" if d else "The holdout is never sampled"
    return f"{text} {judged}: {holdout} rows, none left out by sampling."


def release_sections(spec: ModelSpec, f: CardFacts) -> list[str]:
    """Golden sets, fairness parity, explanations and cost (pipelines/release/)."""
    from pipelines.release.cost import STAGES

    d = f.decision or {}
    release = d.get("release") or {}
    lines = ["## Golden sets", ""]
    golden = release.get("golden") or []
    if golden:
        lines += _table(["set", "rows", "positives", f"v{f.version}", "champion", "improvement [interval]",
                         "file sha256", "result"],
                        [[g["name"], g.get("rows"), "—" if g.get("positives") is None else g["positives"],
                          _num(g.get("challenger")), _num(g.get("champion")),
                          (f"{_num((g.get('improvement') or {}).get('estimate'))} "
                           f"[{_num((g.get('improvement') or {}).get('low'))}, "
                           f"{_num((g.get('improvement') or {}).get('high'))}]") if g.get("improvement") else "—",
                          f"`{(g.get('sha256') or '?')[:12]}…`", "pass" if g.get("passed") else "**FAIL**"]
                         for g in golden])
        lines += [f"- {g['name']}: {g.get('detail', '')}" for g in golden] + [""]
    else:
        lines += ["No golden sets declared (`golden:` in the spec)." if not spec.golden
                  else "The gate did not record golden-set results for this version.", ""]
    lines += ["## Fairness", ""]
    fairness = release.get("fairness") or []
    if fairness:
        for r in fairness:
            verdict = ("pass" if r.get("passed") else "**FAIL (blocking)**" if r.get("blocking")
                       else "breach (reported, not blocking)")
            lines += [f"**{r['metric']} by `{r['column']}`** ({r['parity']}, threshold {_num(r.get('threshold'))}): "
                      f"{_num(r.get('value'))} — {verdict}", ""]
            lines += _table(["group", "rows", "positives", r["metric"], "judged"],
                            [[g["group"], g["rows"], "—" if g.get("positives") is None else g["positives"],
                              _num(g.get("value")), "yes" if g.get("judged") else "too small"]
                             for g in r.get("groups", [])])
    else:
        lines += ["No fairness rules declared (`fairness:` in the spec)." if not spec.fairness
                  else "The gate did not record fairness results for this version.", ""]
    lines += ["## Explanations", ""]
    if f.importance:
        lines += [f"Global importance: mean |SHAP| contribution (margin units, exact TreeSHAP over "
                  f"{f.importance_rows} holdout rows) and XGBoost's total gain.", ""]
        lines += _table(["feature", "mean abs SHAP", "total gain"],
                        [[x["feature"], _num(x.get("mean_abs_shap")), _num(x.get("total_gain"), 1)]
                         for x in f.importance[:15]])
        if spec.explain is not None and spec.explain.top_k:
            lines += [f"Each scored row carries its {spec.explain.top_k} largest contributions "
                      "(`contribution_<i>_feature` / `_value` in the scoring log).", ""]
    else:
        lines += ["No explanations recorded (`explain:` in the spec).", ""]
    lines += ["## Cost", ""]
    if f.costs:
        rows = []
        for stage in STAGES:
            days = f.costs.get(stage) or {}
            if days:
                rows.append([stage, len(days), _num(sum(c.get("cpu_s", 0.0) for c in days.values()), 2),
                             _num(sum(c.get("wall_s", 0.0) for c in days.values()), 2),
                             _num(max(c.get("peak_mb", 0.0) for c in days.values()), 0)])
        lines += ["CPU seconds, wall seconds and peak memory of the task process (pipelines/release/cost.py), "
                  "as recorded on this version's run when the card was written.", ""]
        lines += _table(["stage", "runs", "CPU s", "wall s", "peak MB"], rows)
    else:
        lines += ["No cost recorded yet.", ""]
    return lines


def limitations(spec: ModelSpec, f: CardFacts) -> list[str]:
    d = f.decision or {}
    out = [f"Evaluated on {d.get('holdout_rows', f.params.get('holdout_rows', '?'))} rows of the newest "
           f"{spec.holdout_days} labelled days only; labels arrive {spec.label.delay_days} days late, so the most "
           "recent days are never in the evaluation.",
           f"Trained on {spec.window_days} days of history: patterns outside that window (a market shift, new "
           f"merchants or categories) are not covered; `monitor__{spec.name}` watches for drift and requests a "
           "retrain."]
    if f.run_tags.get(tags.SAMPLING_RULE) in ("negatives", "rows"):
        sampled = "negatives" if f.run_tags[tags.SAMPLING_RULE] == "negatives" else "training rows"
        out.append(f"Trained on a sample of the {sampled} (weighted to stand for the rest): a pattern carried by few "
                   "of them is seen fewer times than the window holds; the gate judged the whole holdout.")
    if d.get("mode") == "first_model":
        out.append("First model: there was no champion to compare with; judged on value thresholds only.")
    small = [f"{s['column']}={s['value']} ({s['rows']} rows)" for s in d.get("slices") or []
             if s["status"] == "too_small"]
    if small:
        out.append("Too few rows or positives to evaluate: " + ", ".join(small) + ".")
    if spec.task == "binary":
        chal = d.get("challenger_metrics") or {}
        out.append(f"Scores are probabilities; calibration on the holdout: Brier {_num(chal.get('brier'))}, "
                   f"ECE {_num(chal.get('ece'))}. Re-check calibration before using them as rates.")
    out.append("Latency was measured on the training host, one row at a time; a serving host differs.")
    return out


def card_html(markdown: str, title: str) -> str:
    """A self-contained HTML page of the card (raw HTML in the Markdown is escaped, not rendered)."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
             "font-size:13px;vertical-align:top}th{background:#f3f3f3}code{background:#f6f6f6;padding:0 3px}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{body}</body></html>")


def card_facts(spec: ModelSpec, version: str, download_dir: Path) -> CardFacts:
    """Everything the card shows, read from MLflow."""
    import json

    from pipelines import gate, model

    model.configure_mlflow_env()
    from mlflow import MlflowClient

    client = MlflowClient()
    name = spec.registered_model_name
    mv = client.get_model_version(name, version)
    run_id = str(mv.run_id)
    run = client.get_run(run_id)
    aliases = sorted(a for a, v in client.get_registered_model(name).aliases.items() if str(v) == str(version))
    decision = gate.read_decision(spec, version, download_dir)
    history = [e for e in gate.alias_history(spec, client)
               if any(str(version) in (m.get("from"), m.get("to")) for m in e.get("moves", []))
               or e.get("version") == str(version)]
    features, categorical = [], []
    try:
        meta = json.loads(Path(client.download_artifacts(run_id, "features.json", str(download_dir))).read_text())
        features, categorical = list(meta["features"]), sorted(meta.get("categorical", {}))
    except Exception:  # an old run without features.json: the params still list the features
        log.warning("features.json missing on run %s", run_id)
    from pipelines.release.cost import version_costs
    from pipelines.release.explain import IMPORTANCE_ARTIFACT

    importance: dict[str, Any] = {}
    if spec.explain is not None:
        try:
            importance = json.loads(Path(client.download_artifacts(run_id, IMPORTANCE_ARTIFACT,
                                                                   str(download_dir))).read_text())
        except Exception:   # a version trained before `explain:` was declared
            log.warning("%s missing on run %s", IMPORTANCE_ARTIFACT, run_id)
    return CardFacts(str(version), run_id, dict(mv.tags), dict(run.data.tags), dict(run.data.params),
                     dict(run.data.metrics), aliases, decision, history, features, categorical,
                     list(importance.get("features", [])), int(importance.get("rows", 0)),
                     version_costs(client, run_id))


def write_model_card(spec: ModelSpec, version: str, out_dir: Path) -> dict[str, str]:
    """Write the card of `version` (Markdown + HTML), log both to its run under `model_card/`."""
    from pipelines import model

    model.configure_mlflow_env()
    from mlflow import MlflowClient

    facts = card_facts(spec, version, out_dir / "card_inputs")
    md = card_markdown(spec, facts)
    out_dir.mkdir(parents=True, exist_ok=True)
    md_path = out_dir / f"model_card_v{version}.md"
    html_path = out_dir / f"model_card_v{version}.html"
    md_path.write_text(md)
    html_path.write_text(card_html(md, f"{spec.registered_model_name} v{version}"))
    client = MlflowClient()
    for p in (md_path, html_path):
        client.log_artifact(facts.run_id, str(p), artifact_path=ARTIFACT_DIR)
    client.set_model_version_tag(spec.registered_model_name, version, tags.MODEL_CARD,
                                 f"{ARTIFACT_DIR}/{html_path.name}")
    log.info("model card of %s v%s: %s", spec.registered_model_name, version, html_path)
    return {"markdown": str(md_path), "html": str(html_path), "artifact": f"{ARTIFACT_DIR}/{html_path.name}",
            "run_id": facts.run_id}
