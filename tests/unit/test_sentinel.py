"""The champion sentinel (pipelines/sentinel.py) against a real MLflow registry on SQLite: moves through the audited
path (the gate's promotion, a rollback, an override) are fine; `champion` set with a plain MLflow client is an
alarm, recorded once, emailed, shown on the models page, and restored when the spec says so; a person accepts it
through an audited override; a move in flight is not an alarm."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipelines import gate, sentinel
from pipelines.mail import Pages, html_to_text
from pipelines.spec import SpecError, load_specs

pytestmark = pytest.mark.unit

BASE = load_specs()["fraud"]
T0 = datetime(2026, 3, 2, tzinfo=UTC)


@pytest.fixture(scope="module")
def tracking(tmp_path_factory):
    """One MLflow registry on SQLite for the module."""
    from mlflow_sqlite import sqlite_tracking

    tmp = tmp_path_factory.mktemp("sentinel-mlflow")
    with sqlite_tracking(tmp) as client:
        yield client, client.create_experiment("sentinel", artifact_location=(tmp / "art").as_uri())


_count = iter(range(1000))


@pytest.fixture
def model(tracking):
    """A registered model of its own per test (the alias history lives on it): three versions, v1 then v2
    promoted by the gate."""
    client, exp = tracking
    spec = replace(BASE, name=f"sentinel{next(_count)}")
    client.create_registered_model(spec.registered_model_name)
    for _ in range(3):
        run = client.create_run(exp)
        client.create_model_version(spec.registered_model_name, f"{run.info.artifact_uri}/model", run.info.run_id)
    gate.promote(spec, "1", "first model", T0 - timedelta(days=28))
    gate.promote(spec, "2", "retrain", T0)
    return spec, client


def champion(spec, client) -> str:
    return str(client.get_model_version_by_alias(spec.registered_model_name, "champion").version)


def test_moves_through_the_audited_path_are_no_alarm(model):
    spec, client = model
    assert sentinel.check_champion(spec, client).status == "ok"
    gate.rollback(spec, "bad promotion", actor="oncall@example.com")
    verdict = sentinel.watch_champion(spec, "r1", client=client)
    assert (verdict.status, verdict.actual, verdict.audited) == ("ok", "1", "1")
    gate.override(spec, "3", "promote", "hotfix model", actor="oncall@example.com")
    assert sentinel.check_champion(spec, client).status == "ok"
    assert not any(e["action"] == sentinel.ACTION for e in gate.alias_history(spec, client))


def test_a_plain_client_move_is_an_alarm_recorded_once_and_nothing_moves(model):
    spec, client = model
    client.set_registered_model_alias(spec.registered_model_name, "champion", "3")     # bypassing the gate
    first = sentinel.watch_champion(spec, "monitor-1", client=client, settle_s=0)
    assert (first.status, first.actual, first.audited, first.new_alarm) == ("out_of_band", "3", "2", True)
    assert "moved outside Flywheel's audited path" in first.detail and "promote by gate" in first.detail
    assert champion(spec, client) == "3"                     # registry.out_of_band: alarm moves nothing
    again = sentinel.watch_champion(spec, "monitor-2", client=client, settle_s=0)
    assert again.status == "out_of_band" and not again.new_alarm       # the owners were told once
    retried = sentinel.watch_champion(spec, "monitor-1", client=client, settle_s=0)
    assert retried.new_alarm                                 # a retried task still sends its email
    alarms = [e for e in gate.alias_history(spec, client) if e["action"] == sentinel.ACTION]
    assert len(alarms) == 1 and alarms[0]["observed"] == "3" and alarms[0]["audited"] == "2"
    # moved again, to another version: a new alarm
    client.set_registered_model_alias(spec.registered_model_name, "champion", "1")
    assert sentinel.watch_champion(spec, "monitor-3", client=client, settle_s=0).new_alarm


def test_restore_puts_the_audited_champion_back_with_an_audited_move(model):
    spec, client = model
    spec = replace(spec, out_of_band="restore")
    client.set_registered_model_alias(spec.registered_model_name, "champion", "3")
    verdict = sentinel.watch_champion(spec, "monitor-1", actor="sentinel via monitor__x run r", client=client,
                                      settle_s=0)
    assert verdict.status == "restored" and verdict.new_alarm and champion(spec, client) == "2"
    entry = gate.alias_history(spec, client)[-1]
    assert entry["action"] == sentinel.RESTORE and entry["moves"] == [{"alias": "champion", "from": "3", "to": "2"}]
    assert entry["actor"] == "sentinel via monitor__x run r"
    assert sentinel.watch_champion(spec, "monitor-2", client=client).status == "ok"
    # retried: the restore is not recorded twice
    sentinel.watch_champion(spec, "monitor-1", client=client)
    assert sum(e["action"] == sentinel.RESTORE for e in gate.alias_history(spec, client)) == 1


def test_an_audited_override_accepts_the_out_of_band_version(model):
    spec, client = model
    client.set_registered_model_alias(spec.registered_model_name, "champion", "3")
    assert sentinel.check_champion(spec, client, settle_s=0).status == "out_of_band"
    gate.override(spec, "3", "promote", "hand-moved in an incident; keeping it", actor="oncall@example.com")
    verdict = sentinel.check_champion(spec, client)
    assert (verdict.status, verdict.actual, verdict.audited) == ("ok", "3", "3")


def test_a_move_in_flight_is_not_an_alarm(model):
    """`_move_aliases` writes its history entry before the alias moves: a sentinel reading in between waits."""
    spec, client = model
    history = gate.alias_history(spec, client)
    in_flight = {"at": datetime.now(UTC).isoformat(), "action": "rollback", "actor": "rollback",
                 "moves": [{"alias": "champion", "from": "2", "to": "1"}]}
    assert sentinel.judge(spec, [*history, in_flight], "2", datetime.now(UTC)).status == "settling"
    stale = {**in_flight, "at": (datetime.now(UTC) - timedelta(minutes=10)).isoformat()}
    assert sentinel.judge(spec, [*history, stale], "2", datetime.now(UTC)).status == "out_of_band"


def test_the_owners_email_says_what_moved_and_what_to_do(model):
    spec, client = model
    client.set_registered_model_alias(spec.registered_model_name, "champion", "3")
    verdict = sentinel.watch_champion(spec, "m", client=client, settle_s=0)
    pages = Pages(base_url="http://127.0.0.1:8080/")
    mail = sentinel.compose_sentinel_email(spec, verdict, pages, {"Airflow run": "http://127.0.0.1:8080/run"})
    assert mail.to == spec.owners
    assert mail.subject == (f"[Flywheel] {spec.name}: champion moved outside the audited path (v3, audited v2)")
    text = html_to_text(mail.html)
    assert "v3 scores and serves until a person decides" in text
    assert f"override__{spec.name}" in text and "version 2" in text and "version 3" in text
    assert 'href="http://127.0.0.1:8080/flywheel/runbooks/out-of-band-champion"' in mail.html
    restored = sentinel.compose_sentinel_email(replace(spec, out_of_band="restore"),
                                               replace(verdict, status="restored"), pages)
    assert restored.subject.endswith("(v3); restored v2")


def test_the_models_page_flags_the_out_of_band_champion(model, tmp_path):
    from pipelines.board.models import model_board
    from pipelines.board.pages import Urls, model_page
    from pipelines.layout import Layout

    spec, client = model
    lay = Layout(tmp_path)
    now = datetime.now(UTC)
    assert model_board(spec, lay, client, now).out_of_band is None
    client.set_registered_model_alias(spec.registered_model_name, "champion", "3")
    sentinel.watch_champion(spec, "m", client=client, settle_s=0)
    board = model_board(spec, lay, client, datetime.now(UTC))
    assert board.out_of_band and "v3" in board.out_of_band and "v2" in board.out_of_band
    assert any(ev.kind == sentinel.ACTION and "champion found on v3, audited v2" in ev.headline
               for ev in board.timeline)
    page = model_page(board, Urls("http://127.0.0.1:8080/flywheel/"), now)
    assert "champion moved outside the audited path" in page and "out-of-band" in page


@pytest.mark.parametrize("raw, message", [
    ({"out_of_band": "revert"}, "must be alarm"),
    ({"out_of_band": "restore", "extra": 1}, "takes one key"),
    ("restore", "takes one key"),
])
def test_a_wrong_registry_section_is_refused_with_what_to_write(raw, message, tmp_path):
    import yaml

    spec_file = Path(BASE.path)
    text = yaml.safe_load(spec_file.read_text())
    text["registry"] = raw
    models = tmp_path / "models"
    models.mkdir()
    (models / spec_file.name).write_text(yaml.safe_dump(text))
    with pytest.raises(SpecError, match=message):
        load_specs(models)
