"""The Flywheel page's data and charts (pipelines/board): read from results written by the real pipelines
functions in a temporary home and a real MLflow registry on SQLite; charts parsed as XML."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from pipelines import gate, tags
from pipelines.board import charts, dataset_board, model_board, pages
from pipelines.board.files import FileRef, card_artifact, ref_for, resolve_file, safe_parts
from pipelines.layout import Layout
from pipelines.monitor import DriftResult, RetrainDecision, record_verdict
from pipelines.spec import load_datasets, load_specs
from pipelines.validate import RuleFailure, ValidationResult, preserve_blocked

pytestmark = pytest.mark.unit

SVG = "{http://www.w3.org/2000/svg}"
NOW = datetime(2026, 3, 1, tzinfo=UTC)
SPECS = load_specs()
CONTRACTS = load_datasets()
SPEC = next(s for s in SPECS.values() if s.task == "binary")   # any declared model: the board is generic


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture
def tracking(tmp_path, monkeypatch):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    exp = mlflow.create_experiment(f"flywheel/{SPEC.name}", artifact_location=(tmp_path / "artifacts").as_uri())
    yield mlflow.MlflowClient(tracking_uri=uri), exp
    # back to the environment's URI (None): a URI set here would outlive the test and override every later
    # MLFLOW_TRACKING_URI of the session (the integration tests' servers)
    mlflow.set_tracking_uri(None)


def _version(client, exp: str, value: float, promote: bool, checks: list[gate.Check], out: Path,
             as_of: str) -> str:
    run = client.create_run(exp)
    name = SPEC.registered_model_name
    try:
        client.get_registered_model(name)
    except Exception:
        client.create_registered_model(name)
    mv = client.create_model_version(name, f"{run.info.artifact_uri}/model", run.info.run_id)
    client.set_model_version_tag(name, mv.version, tags.TRAINED_AS_OF, as_of)
    client.set_model_version_tag(name, mv.version, tags.RUN_KEY, f"manual__{mv.version}")
    decision = gate.GateDecision(model=SPEC.name, challenger_version=str(mv.version), champion_version=None,
                                 promote=promote, reason=f"reason of v{mv.version} <b>", metric=SPEC.primary_metric,
                                 challenger_value=value, champion_value=None, holdout_rows=500,
                                 checks=tuple(checks))
    gate.record_decision(SPEC, decision, out)
    return str(mv.version)


@pytest.fixture
def registry(tracking, tmp_path):
    """v1 promoted, v2 promoted, v3 rejected, then a rollback v2 -> v1 (through pipelines.gate)."""
    client, exp = tracking
    ok = gate.Check("min_primary", True, 0.3, 0.1, "above the floor")
    bad = gate.Check("improvement", False, -0.02, 0.0, "within noise")
    v1 = _version(client, exp, 0.30, True, [ok], tmp_path / "g", "2026-01-26T00:00:00+00:00")
    gate.promote(SPEC, v1, "first model", datetime(2026, 1, 26, tzinfo=UTC), actor="tester via train__x run r1")
    v2 = _version(client, exp, 0.45, True, [ok], tmp_path / "g", "2026-02-09T00:00:00+00:00")
    gate.promote(SPEC, v2, "better", datetime(2026, 2, 9, tzinfo=UTC), actor="tester via train__x run r2")
    v3 = _version(client, exp, 0.40, False, [ok, bad], tmp_path / "g", "2026-02-16T00:00:00+00:00")
    client.set_registered_model_alias(SPEC.registered_model_name, "challenger", v3)
    gate.rollback(SPEC, "v2 pages on-call", f"alice via rollback__{SPEC.name} run manual__2026-02-20T10:00:00+00:00")
    return client


def _verdict(lay: Layout, key: str, start: datetime, scores: dict[str, float], version: str,
             perf: float | None) -> None:
    reports = lay.reports(SPEC.name)
    Path(reports).mkdir(parents=True, exist_ok=True)
    cols = {c: {"score": s, "threshold": 0.1, "drifted": s >= 0.1, "method": "wasserstein", "kind": "distance"}
            for c, s in scores.items()}
    share = sum(v["drifted"] for v in cols.values()) / len(cols)
    result = DriftResult(model=SPEC.name, interval_start=start.isoformat(),
                         interval_end=(start + timedelta(days=7)).isoformat(), champion_version=version,
                         rows_reference=100, rows_current=100, columns=cols, drifted_share=share,
                         drift_detected=share >= SPEC.drift.drift_share,
                         report_html=str(Path(reports) / f"{key}.html"),
                         verdict_json=str(Path(reports) / f"{key}.json"),
                         performance={"status": "ok", "metric": SPEC.primary_metric, "value": perf,
                                      "labelled_rows": 900} if perf is not None else {})
    (Path(reports) / f"{key}.html").write_text("<html>report</html>")
    record_verdict(reports, key, result, RetrainDecision(share >= 0.3, "policy says so", "requested"), SPEC)


# ---------------------------------------------------------------------------------------------- models


def test_model_board_shows_aliases_gate_timeline_and_moves(registry, tmp_path):
    lay = Layout(tmp_path / "home")
    b = model_board(SPEC, lay, registry, NOW)
    assert not b.problems
    # after the rollback: v1 is champion again, v3 the challenger, no previous champion
    assert (b.champion.version, b.challenger.version, b.previous) == ("1", "3", None)
    assert b.champion.metric_value == pytest.approx(0.30) and b.champion.decision == "promoted"
    assert b.champion.age(NOW).endswith("d") or b.champion.age(NOW).endswith(("h", "min", "s"))
    kinds = [e.kind for e in b.timeline]
    assert kinds.count("gate") == 3 and kinds.count("promote") == 2 and kinds[-1] == "rollback"
    rb = b.timeline[-1]
    assert rb.reason == "v2 pages on-call" and (rb.dag_id, rb.run_id) == (f"rollback__{SPEC.name}",
                                                                           "manual__2026-02-20T10:00:00+00:00")
    rejected = next(e for e in b.timeline if e.kind == "gate" and e.version == "3")
    assert "rejected" in rejected.headline
    assert {c.name: c.passed for c in rejected.checks} == {"min_primary": True, "improvement": False}


def test_metric_over_time_has_each_gate_holdout_and_each_labelled_window(registry, tmp_path):
    lay = Layout(tmp_path / "home")
    _verdict(lay, "2026-02-16", datetime(2026, 2, 16, tzinfo=UTC), {"a": 0.02, "b": 0.3}, "2", 0.41)
    _verdict(lay, "2026-02-23", datetime(2026, 2, 23, tzinfo=UTC), {"a": 0.5, "b": 0.01}, "1", None)
    b = model_board(SPEC, lay, registry, NOW)
    holdout = [(p.version, p.value) for p in b.metric_points if p.kind == "holdout"]
    live = [(p.version, p.value, p.at) for p in b.metric_points if p.kind == "live"]
    assert holdout == [("1", pytest.approx(0.30)), ("2", pytest.approx(0.45)), ("3", pytest.approx(0.40))]
    assert live == [("2", pytest.approx(0.41), datetime(2026, 2, 23, tzinfo=UTC))]   # the unlabelled window: none
    assert [w.key for w in b.drift] == ["2026-02-16", "2026-02-23"]
    assert b.drift[0].columns["b"]["drifted"] and not b.drift[0].columns["a"]["drifted"]
    assert b.drift[0].report == FileRef("reports", SPEC.name, "2026-02-16.html")


def test_model_page_renders_everything_escaped(registry, tmp_path):
    lay = Layout(tmp_path / "home")
    _verdict(lay, "2026-02-16", datetime(2026, 2, 16, tzinfo=UTC), {"<x>": 0.3}, "2", 0.41)
    b = model_board(SPEC, lay, registry, NOW)
    html = pages.model_page(b, pages.Urls("/flywheel", mlflow="http://m:5000",
                                          run_ids={f"train__{SPEC.name}": {"manual__3": "manual__3"}}), NOW)
    assert "reason of v3 <b>" not in html and "reason of v3 &lt;b&gt;" in html and "&lt;x&gt;" in html
    assert "<x>" not in html
    assert "<script" not in html.lower()
    assert f"/flywheel/models/{SPEC.name}/rollback" in html and "name='reason' required" in html
    assert "/flywheel/files/reports/" in html and "http://m:5000/#/models/" in html
    assert f"/dags/train__{SPEC.name}/runs/manual__3" in html   # the exact run of v3, resolved from its run key
    for svg in ("metric-chart", "drift-heatmap"):
        start = html.index(f"id='{svg}'>") + len(f"id='{svg}'>")
        ET.fromstring(html[start:html.index("</svg>", start) + 6])


def test_actions_the_role_may_not_trigger_are_disabled_and_say_why(registry, tmp_path):
    """A viewer sees the page with both action forms disabled and a line saying why; an on-call or admin (may both)
    gets working forms and no such line; a role with one right gets exactly that form."""
    import re

    b = model_board(SPEC, Layout(tmp_path / "home"), registry, NOW)

    def forms(may: frozenset[str]) -> dict[str, tuple[bool, bool]]:
        html = pages.model_page(b, pages.Urls("/flywheel"), NOW, may=may)
        out = {}
        for form_id in pages.ACTIONS:
            form = re.search(rf"<form class='action' id='{form_id}'.*?</form>", html, re.S).group(0)
            out[form_id] = ("<fieldset disabled>" in form,
                            f"may not trigger <code>{form_id}__{SPEC.name}</code>" in form)
        return out

    assert forms(frozenset()) == {"rollback": (True, True), "override": (True, True)}
    assert forms(frozenset(pages.ACTIONS)) == {"rollback": (False, False), "override": (False, False)}
    assert forms(frozenset({"rollback"})) == {"rollback": (False, False), "override": (True, True)}


def test_an_unregistered_model_says_so_and_still_renders(tracking, tmp_path):
    client, _ = tracking
    b = model_board(SPEC, Layout(tmp_path / "home"), client, NOW)
    assert b.champion is None and "not registered yet" in b.problems[0]
    assert "none" in pages.model_page(b, pages.Urls("/flywheel"), NOW)


def test_model_card_is_served_from_the_version_run(registry, tmp_path):
    from pipelines.model_card import write_model_card

    write_model_card(SPEC, "1", tmp_path / "card")
    path = card_artifact(registry, SPEC, "1", tmp_path / "dl")
    assert path is not None and "<html" in path.read_text() and "v1" in path.read_text()
    assert card_artifact(registry, SPEC, "2", tmp_path / "dl") is None        # no card written
    assert card_artifact(registry, SPEC, "../1", tmp_path / "dl") is None
    assert model_board(SPEC, Layout(tmp_path / "h"), registry, NOW).champion.card == FileRef("cards", SPEC.name, "1")


# ---------------------------------------------------------------------------------------------- datasets


def _result(lay: Layout, contract, key: str, verdict: str, landed: int, clean: int, quarantined: int,
            failures: tuple[RuleFailure, ...] = ()) -> None:
    reports = Path(lay.validation_reports(contract.name))
    reports.mkdir(parents=True, exist_ok=True)
    docs = lay.data_docs(contract.name) / "site" / "validations" / f"{key}.html"
    docs.parent.mkdir(parents=True, exist_ok=True)
    docs.write_text("<html>docs</html>")
    r = ValidationResult(dataset=contract.name, batch_file=f"/landing/{key}.parquet", interval_start=f"{key}T00:00:00",
                         interval_end=f"{key}T00:00:00", verdict=verdict, rows_landed=landed, rows_clean=clean,
                         rows_quarantined=quarantined, clean_path=None, quarantine_path=None,
                         report_path=str(reports / f"{key}.json"), failures=failures, data_docs_path=str(docs))
    (reports / f"{key}.json").write_text(json.dumps(r.to_dict()))


def test_dataset_board_counts_rows_and_blocked_files(tmp_path):
    contract = next(iter(CONTRACTS.values()))
    lay = Layout(tmp_path / "home")
    rule = RuleFailure("expect_column_values_to_not_be_null", "c", "row", 3, [None], "3 nulls in <c>")
    _result(lay, contract, "2026-01-05", "accepted", 100, 97, 3, (rule,))
    _result(lay, contract, "2026-01-12", "accepted", 50, 50, 0)     # re-landed after a block
    _result(lay, contract, "2026-01-19", "blocked", 40, 0, 0)
    bad = tmp_path / "bad.parquet"
    pd.DataFrame({"x": range(7)}).to_parquet(bad)
    preserve_blocked(str(bad), lay.blocked(contract.name), "2026-01-12")
    (Path(lay.validation_reports(contract.name)) / "accepted_batches.json").write_text("{}")   # not a batch
    d = dataset_board(contract, lay, ["m1"])
    assert [b.key for b in d.batches] == ["2026-01-05", "2026-01-12", "2026-01-19"]
    rows = {b.key: (b.verdict, b.rows_clean, b.rows_quarantined, b.rows_blocked, b.blocked_files) for b in d.batches}
    assert rows == {"2026-01-05": ("accepted", 97, 3, 0, 0), "2026-01-12": ("accepted", 50, 0, 7, 1),
                    "2026-01-19": ("blocked", 0, 0, 40, 0)}
    assert d.totals == {"batches": 3, "accepted": 2, "blocked": 2, "rows_clean": 147, "rows_quarantined": 3}
    assert d.batches[0].data_docs == FileRef("docs", contract.name, "validations/2026-01-05.html")
    html = pages.dataset_page(d, pages.Urls("/flywheel"))
    assert "3 nulls in &lt;c&gt;" in html and f"/dags/ingest_validate__{contract.name}/runs/batch__2026-01-19" in html
    start = html.index("id='rows-chart'>") + len("id='rows-chart'>")
    svg = ET.fromstring(html[start:html.index("</svg>", start) + 6])
    bars = {(r.get("data-category"), r.get("data-part")): int(r.get("data-value")) for r in svg.iter(f"{SVG}rect")
            if r.get("class") == "bar"}
    assert bars == {("2026-01-05", "clean"): 97, ("2026-01-05", "quarantined"): 3, ("2026-01-12", "clean"): 50,
                    ("2026-01-12", "blocked"): 7, ("2026-01-19", "blocked"): 40}


# ---------------------------------------------------------------------------------------------- files


@pytest.mark.parametrize("path", ["../x", "a/../../x", "/etc/passwd", "", "a//b", "./a", "a\\..\\b", "c:/x", "a\x00"])
def test_paths_that_could_leave_a_folder_are_refused(path):
    assert safe_parts(path) is None


def test_files_resolve_only_inside_flywheel_folders(tmp_path):
    lay = Layout(tmp_path / "home")
    model, dataset = SPEC.name, SPEC.dataset.name
    reports = Path(lay.reports(model))
    reports.mkdir(parents=True)
    (reports / "w.html").write_text("r")
    (tmp_path / "secret.txt").write_text("s")
    (reports / "link.html").symlink_to(tmp_path / "secret.txt")
    models, datasets = set(SPECS), set(CONTRACTS)
    assert resolve_file(lay, FileRef("reports", model, "w.html"), models, datasets) == str(reports / "w.html")
    for bad in ("../../secret.txt", str(tmp_path / "secret.txt"), "link.html", "missing.html", "."):
        assert resolve_file(lay, FileRef("reports", model, bad), models, datasets) is None, bad
    assert resolve_file(lay, FileRef("reports", "nobody", "w.html"), models, datasets) is None
    assert resolve_file(lay, FileRef("docs", model, "w.html"), models, datasets) is None   # a model is no dataset
    assert resolve_file(lay, FileRef("cards", model, "1"), models, datasets) is None     # cards: from MLflow
    assert ref_for(str(tmp_path / "secret.txt"), lay, "reports", model) is None
    assert ref_for(str(reports / "w.html"), lay, "reports", model).url("/flywheel") == \
        f"/flywheel/files/reports/{model}/w.html"
    assert ref_for(None, lay, "docs", dataset) is None


# ---------------------------------------------------------------------------------------------- charts


def test_line_chart_places_values_in_order_and_escapes():
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    live = charts.Series("live <a>", [(t0 + timedelta(days=i), v, f"w{i} & co") for i, v in enumerate([0.2, 0.5, 0.3])])
    gate_pts = charts.Series("holdout", [(t0, 0.4, "v1")], line=False)
    svg = ET.fromstring(charts.line_chart([live, gate_pts], "metric & time", "ap"))
    pts = [c for c in svg.iter(f"{SVG}circle")]
    assert len(pts) == 4 and svg.find(f"{SVG}title").text == "metric & time"
    by_value = {float(c.get("data-value")): (float(c.get("cx")), float(c.get("cy"))) for c in pts}
    # higher values are drawn higher (smaller y); later times further right
    assert by_value[0.5][1] < by_value[0.4][1] < by_value[0.3][1] < by_value[0.2][1]
    assert by_value[0.2][0] == by_value[0.4][0] < by_value[0.5][0] < by_value[0.3][0]
    assert any(c.get("data-series") == "live <a>" for c in pts)
    assert ET.fromstring(charts.line_chart([], "empty", "y")).find(f"{SVG}text").text == "no values recorded yet"


def test_heatmap_colours_by_threshold_and_outlines_drifted_cells():
    cells = {("a", "w1"): charts.Cell(0.05, 0.1, False), ("a", "w2"): charts.Cell(0.3, 0.1, True),
             ("<b>", "w1"): charts.Cell(0.01, 0.05, True, kind="p_value"), ("<b>", "w2"): charts.Cell(None, 0.1, False)}
    svg = ET.fromstring(charts.heatmap(["a", "<b>"], ["w1", "w2"], cells, "drift"))
    groups = {(g.get("data-row"), g.get("data-col")): g for g in svg.iter(f"{SVG}g")}
    assert set(groups) == set(cells)
    fills = {k: g.find(f"{SVG}rect").get("fill") for k, g in groups.items()}
    assert fills[("a", "w2")] != fills[("a", "w1")] and fills[("<b>", "w2")] == "#ddd"
    assert groups[("a", "w2")].find(f"{SVG}rect").get("stroke") == "#000"
    assert groups[("a", "w1")].find(f"{SVG}rect").get("stroke") is None
    assert charts.Cell(0.01, 0.05, True, kind="p_value").severity == pytest.approx(5.0)   # p-values: lower = worse
    assert math.isnan(charts.Cell(None, 0.1, False).severity)
    assert groups[("a", "w2")].get("data-score") == "0.3"


def test_stacked_bars_scale_to_the_tallest_bar():
    svg = ET.fromstring(charts.stacked_bars(["k1", "k2"], [("clean", "#0f0"), ("bad", "#f00")],
                                            {"k1": [90, 10], "k2": [50, 0]}, "rows"))
    bars = {(r.get("data-category"), r.get("data-part")): r for r in svg.iter(f"{SVG}rect") if r.get("class") == "bar"}
    assert set(bars) == {("k1", "clean"), ("k1", "bad"), ("k2", "clean")}   # a zero part draws nothing
    h = {k: float(r.get("height")) for k, r in bars.items()}
    assert h[("k1", "clean")] + h[("k1", "bad")] == pytest.approx(2 * h[("k2", "clean")], rel=0.02)
    assert h[("k1", "clean")] == pytest.approx(9 * h[("k1", "bad")], rel=0.02)


def test_index_lists_every_model_with_its_champion_and_every_dataset_with_its_rows(registry, tmp_path):
    lay = Layout(tmp_path / "home")
    contract = SPEC.dataset
    _result(lay, contract, "2026-01-05", "accepted", 100, 97, 3)
    models = [model_board(SPEC, lay, registry, NOW)]
    html = pages.index_page(models, [dataset_board(contract, lay, [SPEC.name])], pages.Urls("/flywheel"), NOW)
    assert f"data-model='{SPEC.name}'>v1</td>" in html
    assert f"/flywheel/datasets/{contract.name}" in html and f"/flywheel/models/{SPEC.name}" in html
    assert "href='/flywheel/runbooks/'>Runbooks" in html   # what to do when something is wrong, one click away
    start = html.index(f"data-dataset='{contract.name}'>") + len(f"data-dataset='{contract.name}'>")
    svg = ET.fromstring(html[start:html.index("</svg>", start) + 6])
    assert sorted(int(r.get("data-value")) for r in svg.iter(f"{SVG}rect") if r.get("class") == "bar") == [3, 97]


def test_model_page_lists_golden_verdicts_and_cost_per_week(registry, tmp_path):
    """Issue 18 on the page: each version's golden-set verdict (as the gate tagged it) and the model's cost per
    data week, summed from the cost metrics on its versions' runs (pipelines/release/cost.py)."""
    from pipelines.release.cost import Cost, record_cost

    name = SPEC.registered_model_name
    registry.set_model_version_tag(name, "3", f"{tags.GOLDEN_PREFIX}holiday_scam", "FAIL sha256=" + "ab" * 32)
    registry.set_model_version_tag(name, "2", f"{tags.GOLDEN_PREFIX}holiday_scam", "PASS sha256=" + "ab" * 32)
    runs = {v: registry.get_model_version(name, v).run_id for v in ("1", "2")}
    record_cost(registry, runs["1"], "train", Cost(4.0, 5.0, 700.0), datetime(2026, 1, 26, tzinfo=UTC))
    record_cost(registry, runs["1"], "score", Cost(1.0, 2.0, 400.0), datetime(2026, 2, 2, tzinfo=UTC))
    record_cost(registry, runs["2"], "score", Cost(1.5, 2.5, 450.0), datetime(2026, 2, 4, tzinfo=UTC))
    b = model_board(SPEC, Layout(tmp_path / "home"), registry, NOW)
    assert b.golden == (("2", "holiday_scam", "PASS sha256=" + "ab" * 32),
                        ("3", "holiday_scam", "FAIL sha256=" + "ab" * 32))
    assert [(w["week"], w["cpu_s"], w["runs"]) for w in b.costs] == [
        ("2026-01-26", 4.0, {"train": 1}), ("2026-02-02", 2.5, {"score": 2})]
    html = pages.model_page(b, pages.Urls("/flywheel"), NOW)

    def rows(table_id: str) -> list[list[str]]:
        start = html.index(f"<table id='{table_id}'>")
        table = ET.fromstring(html[start:html.index("</table>", start) + 8])
        return [["".join(td.itertext()) for td in tr.findall("td")] for tr in table.findall("tr")[1:]]

    assert [r[:3] for r in rows("golden")] == [["v3", "holiday_scam", "FAIL"], ["v2", "holiday_scam", "PASS"]]
    assert [r[:3] for r in rows("costs")] == [["2026-02-02", "score ×2", "2.5"], ["2026-01-26", "train ×1", "4.0"]]
