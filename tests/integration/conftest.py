"""The one short-scenario demo run the integration tests share (it takes ~10 minutes: played once per session)."""

from __future__ import annotations

import pytest
from loop_outcomes import demo_run


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    """`flywheel demo --short` (both stories) on the embedded default, in its own FLYWHEEL_HOME on free ports.

    Tests that change what the loop left (a rollback, a killed scheduler) run after the ones that only read it:
    test files run in name order, and those tests say what they leave behind."""
    home = tmp_path_factory.mktemp("flywheel-home")
    # a killed task is noticed after 30 s instead of Airflow's 300 (test_loop's crash test waits for it)
    with demo_run(home, {"FLYWHEEL_TOPOLOGY": "embedded", "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
                         "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5"}) as d:
        yield d
