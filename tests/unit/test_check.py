"""`flywheel check`: every contract, spec and feature declaration together, every problem with its file and key."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from flywheel.cli import main
from pipelines.check import Problem, check_project, check_report
from pipelines.spec import REPO_ROOT

pytestmark = pytest.mark.unit


def copy_project(tmp_path: Path) -> Path:
    """datasets/, models/ and feature_repo/ of the repository, copied to be broken."""
    for folder in ("datasets", "models", "feature_repo"):
        shutil.copytree(REPO_ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__", "data"))
    return tmp_path


def run(root: Path) -> list[Problem]:
    return check_project(root / "datasets", root / "models", root / "feature_repo")


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def spec_like_fraud(root: Path, name: str, **replace: str) -> None:
    """models/<name>.yaml: models/fraud.yaml under another name, with some lines replaced."""
    text = (root / "models" / "fraud.yaml").read_text().replace("name: fraud\n", f"name: {name}\n", 1)
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new, 1)
    (root / "models" / f"{name}.yaml").write_text(text)


def found(problems: list[Problem], baseline: list[Problem]) -> dict[tuple[str, str], str]:
    """(file name, key) -> message, for the problems that the copy as it was did not have."""
    before = {(p.file.name, p.key, p.message) for p in baseline}
    return {(p.file.name, p.key): p.message for p in problems if (p.file.name, p.key, p.message) not in before}


def test_the_repository_declarations_have_no_problem():
    report = check_report(REPO_ROOT / "datasets", REPO_ROOT / "models", REPO_ROOT / "feature_repo")

    assert report.problems == (), "\n".join(map(str, report.problems))
    assert report.datasets >= 1 and report.models >= 2 and report.views >= 2


def test_every_mistake_is_listed_with_its_file_and_key_in_one_run(tmp_path, capsys):
    root = copy_project(tmp_path)
    baseline = run(root)
    # an entity with no view: merchant_risk predicts per merchant, from a service keyed by customer only
    spec_like_fraud(root, "merchant_risk", **{"entity_key: customer_id": "entity_key: merchant_id",
                                              "service: fraud_features": "service: spend_features"})
    # an unknown service
    spec_like_fraud(root, "ghost", **{"service: fraud_features": "service: ghost_features"})
    # a view window (customer_stats: 30 days) longer than the training window
    edit(root / "models" / "fraud.yaml", "window_days: 35", "window_days: 14")
    # a metric the task cannot use (spend is a regression)
    edit(root / "models" / "spend.yaml", "primary: mae", "primary: average_precision")
    # a column a view aggregates that the contract lacks
    edit(root / "feature_repo" / "definitions.py", 'Aggregation(column="amount", function="max"',
         'Aggregation(column="amount_usd", function="max"')

    problems = found(run(root), baseline)

    assert set(problems) == {
        ("definitions.py", "view customer_stats"),
        ("spend.yaml", "metric.primary"),
        ("fraud.yaml", "training.window_days"),
        ("merchant_risk.yaml", "entity_key"),
        ("ghost.yaml", "features.service"),
    }, problems
    assert "`amount_usd`, which is not a column of transactions.yaml" in problems[("definitions.py",
                                                                                   "view customer_stats")]
    assert "does not fit a regression model" in problems[("spend.yaml", "metric.primary")]
    assert "lookback of view customer_stats (30 days" in problems[("fraud.yaml", "training.window_days")]
    assert "at least 30" in problems[("fraud.yaml", "training.window_days")]
    assert "`merchant_id` keys none of the views of spend_features" in problems[("merchant_risk.yaml", "entity_key")]
    assert "'ghost_features' is not a FeatureService" in problems[("ghost.yaml", "features.service")]

    code = main(["check", "--datasets", str(root / "datasets"), "--models", str(root / "models"),
                 "--feature-repo", str(root / "feature_repo")])

    out = capsys.readouterr().out
    assert code == 1
    assert f"{root / 'models' / 'spend.yaml'}: metric.primary: 'average_precision' does not fit" in out
    assert f"{root / 'feature_repo' / 'definitions.py'}: view customer_stats: feature cust_amount_max_7d" in out
    assert re.search(rf"^{len(baseline) + 5} problem\(s\) in \d+ file\(s\)", out, re.MULTILINE), out


def test_a_contract_that_does_not_load_is_one_problem_and_hides_nothing_else(tmp_path):
    root = copy_project(tmp_path)
    baseline = run(root)
    edit(root / "datasets" / "transactions.yaml", "amount: {type: float,", "amount: {type: decimal,")
    spec_like_fraud(root, "ghost", **{"service: fraud_features": "service: ghost_features"})

    problems = found(run(root), baseline)

    assert "use one of string, int, float, timestamp" in problems[("transactions.yaml", "columns.amount")]
    for spec in ("fraud.yaml", "spend.yaml", "ghost.yaml"):   # their dataset: said once, where it is wrong
        assert "does not load (its problem is listed under that file)" in problems[(spec, "dataset")]
    for view in ("customer_stats", "merchant_stats"):
        assert "whose contract" in problems[("definitions.py", f"view {view}")]
    assert "is not a FeatureService" in problems[("ghost.yaml", "features.service")]   # still cross-checked


def test_views_over_another_dataset_names_and_per_file_keys(tmp_path):
    root = copy_project(tmp_path)
    # a second dataset (visitors, keyed by visitor_id) and a view over it
    clicks = (root / "datasets" / "transactions.yaml").read_text().replace("name: transactions", "name: clicks")
    (root / "datasets" / "clicks.yaml").write_text(clicks.replace("customer_id:", "visitor_id:"))
    with (root / "feature_repo" / "definitions.py").open("a") as fh:
        fh.write('''
visitor = Entity(name="visitor", join_keys=["visitor_id"], value_type=ValueType.INT64)
visitor_clicks = BatchFeatureView(
    name="visitor_clicks", entities=[visitor], source=table("visitor_clicks"),
    aggregations=[Aggregation(column="transaction_id", function="count", time_window=DAY, name="visits_1d")],
    schema=[Field(name="visitor_id", dtype=Int64), Field(name="visits_1d", dtype=Int64)],
    tags={"flywheel.dataset": "clicks", "flywheel.granularity": "daily"},
)
mixed_features = FeatureService(name="mixed_features", features=[customer_stats, visitor_clicks])
''')
    baseline = run(root)
    spec_like_fraud(root, "mixed", **{"service: fraud_features": "service: mixed_features"})
    spec_like_fraud(root, "fraud_again", **{"name: fraud_again": "name: fraud"})     # a name taken
    edit(root / "models" / "spend.yaml", "training:", "trainig:")                  # a typo in a key
    edit(root / "models" / "spend.yaml", "service: spend_features", "service: fraud_features")   # + merchant keys
    edit(root / "datasets" / "clicks.yaml", 'cadence: "0 0 * * 1"', 'cadence: "every monday"')

    problems = run(root)
    new = found(problems, baseline)

    mixed = [p.message for p in problems if p.file.name == "mixed.yaml" and p.key == "features.service"]
    assert any("view visitor_clicks of mixed_features aggregates dataset `clicks`, but the model reads "
               "`transactions`" in m for m in mixed), mixed
    assert any("keyed by `visitor_id`, which is not a column of transactions.yaml" in m for m in mixed), mixed
    assert "already declared in" in new[("fraud_again.yaml", "name")]
    assert "unknown key(s) ['trainig']" in new[("spend.yaml", "trainig")]
    assert "a future_sum label has one row per `customer_id`" in new[("spend.yaml", "label.kind")]
    assert "must be a cron expression" in new[("clicks.yaml", "cadence")]


def test_a_dataset_nobody_reads_yet_is_a_note_not_a_problem(tmp_path):
    root = copy_project(tmp_path)
    text = (root / "datasets" / "transactions.yaml").read_text()
    (root / "datasets" / "refunds.yaml").write_text(text.replace("name: transactions", "name: refunds"))

    report = check_report(root / "datasets", root / "models", root / "feature_repo")

    assert not [p for p in report.problems if p.file.name == "refunds.yaml"]
    assert any("refunds.yaml: no model or feature view reads dataset `refunds`" in n for n in report.notes)


def test_the_command_on_the_repository_says_no_problem(capsys):
    code = main(["check"])

    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0, "\n".join(out)
    assert re.fullmatch(r"\d+ datasets, \d+ models, \d+ views: no problem", out[-1])


def test_a_missing_folder_is_a_problem_not_a_crash(tmp_path):
    problems = check_project(tmp_path / "nope", tmp_path / "none", tmp_path / "no_repo")

    assert {(p.file.name, p.key) for p in problems} == {("nope", "(file)"), ("none", "(file)"),
                                                         ("definitions.py", "(file)")}
    assert str(problems[0]).startswith(f"{problems[0].file}: (file): ")


def test_a_golden_set_the_gate_would_refuse_is_a_problem_before_any_training(tmp_path):
    root = copy_project(tmp_path)
    baseline = run(root)
    frozen = "eff3c8fefd2cbf34f51ab368c7d8a7691b169670fbe42bb645dc70b47e677ab0"
    edit(root / "models" / "fraud.yaml", frozen, "a" * 64)
    spec_like_fraud(root, "fraud_gone",
                    **{"file: golden/fraud/holiday_scam.parquet": "file: golden/fraud/gone.parquet"})
    new = found(run(root), baseline)
    assert "not the frozen value" in new[("fraud.yaml", "golden[0].sha256")]
    assert "flywheel golden hash" in new[("fraud.yaml", "golden[0].sha256")]
    assert "does not exist" in new[("fraud_gone.yaml", "golden[0].file")]


def test_a_bad_sampling_rule_is_listed_with_its_file_and_key(tmp_path, capsys):
    root = copy_project(tmp_path)
    baseline = run(root)
    edit(root / "models" / "spend.yaml", "  seed: 7\n", "  seed: 7\n  sampling: {negatives: 0.1}\n")
    spec_like_fraud(root, "fraud_sampled", **{"  seed: 42\n": "  seed: 42\n  sampling: {negatives: 1.5}\n"})
    spec_like_fraud(root, "fraud_typo", **{"  seed: 42\n": "  seed: 42\n  sampling: {negative: 0.1}\n"})
    new = found(run(root), baseline)
    assert "binary models only" in new[("spend.yaml", "training.sampling.negatives")]
    assert "training.sampling.rows" in new[("spend.yaml", "training.sampling.negatives")]
    assert "(0, 1]" in new[("fraud_sampled.yaml", "training.sampling.negatives")]
    assert "known: negatives" in new[("fraud_typo.yaml", "training.sampling.negative")]
    assert main(["check", "--datasets", str(root / "datasets"), "--models", str(root / "models"),
                 "--feature-repo", str(root / "feature_repo")]) != 0
    out = capsys.readouterr().out
    assert "spend.yaml: training.sampling.negatives: " in out
