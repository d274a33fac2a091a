"""The whole loop through the real scheduler, on the short scenario, in a private FLYWHEEL_HOME.

One demo run on the embedded default (real Airflow API server, scheduler, DAG processor,
triggerer; real MLflow server; real Feast stores; a real SMTP server on loopback) on free ports, so
it passes while a demo runs. The outcomes asserted (tests/loop_outcomes.py) are the ones the
scale-out layer (tests/services/test_scaleout.py) asserts on the native scale-out topology.
"""

from __future__ import annotations

import pytest
from loop_outcomes import OUTCOMES, demo_run

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    home = tmp_path_factory.mktemp("flywheel-home")
    with demo_run(home, {"FLYWHEEL_TOPOLOGY": "embedded"}) as d:
        yield d


@pytest.mark.parametrize("outcome", OUTCOMES, ids=lambda f: f.__name__)
def test_demo_outcome(demo, outcome):
    outcome(demo)


def test_embedded_topology_keeps_everything_in_flywheel_home(demo):
    home = demo["home"]
    assert (home / "airflow" / "airflow.db").is_file()       # Airflow metadata on SQLite
    assert (home / "mlflow" / "mlflow.db").is_file()         # MLflow backend store on SQLite
    assert any((home / "mlflow" / "artifacts").rglob("MLmodel"))
    assert any((home / "data" / "quarantine" / "transactions").glob("*.parquet"))


def test_every_listening_socket_is_on_loopback(demo):
    """What the README promises: the embedded default listens on 127.0.0.1 only (Airflow's log servers,
    which bind every interface, are not started)."""
    from flywheel.runtime import listening_sockets

    sockets = listening_sockets(demo["home"])
    ports = demo["ports"]
    assert {ports.airflow, ports.mlflow, ports.smtp} <= {port for _, port, _ in sockets}, sockets
    outside = [s for s in sockets if s[0] not in ("127.0.0.1", "::1")]
    assert not outside, f"listening outside loopback: {outside}"
