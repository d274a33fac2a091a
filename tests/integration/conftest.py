"""The one short-scenario demo run the integration tests share (minutes of play: once per session, started in the
background when collection ends, see tests/demo_runs.py)."""

from __future__ import annotations

import pytest
from demo_runs import embedded_run, played


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    """`flywheel demo --short` (both stories) on the embedded default, in its own FLYWHEEL_HOME on free ports.

    Tests that change what the loop left (a rollback, a killed scheduler) run after the ones that only read it:
    test files run in name order, and those tests say what they leave behind."""
    with played(embedded_run(tmp_path_factory.getbasetemp())) as d:
        yield d
