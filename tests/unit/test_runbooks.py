"""The runbooks (docs/runbooks/) tell an on-call engineer what to type: every command, DAG and link in them exists."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.spec import REPO_ROOT

pytestmark = pytest.mark.unit
RUNBOOKS = sorted((REPO_ROOT / "docs" / "runbooks").glob("*.md"))
STAGES = {p.stem for p in (REPO_ROOT / "dags").glob("*.py")} | {"features"}


def test_every_runbook_is_listed_in_the_index():
    index = (REPO_ROOT / "docs" / "runbooks" / "README.md").read_text()
    names = {p.name for p in RUNBOOKS} - {"README.md"}
    assert len(names) >= 6
    assert {n for n in names if f"({n})" in index} == names


@pytest.mark.parametrize("path", RUNBOOKS, ids=lambda p: p.name)
def test_links_commands_and_dags_in_a_runbook_exist(path: Path):
    text = path.read_text()
    for link in re.findall(r"\]\(([^)#]+)\)", text):
        if "://" not in link:
            assert (path.parent / link).is_file(), f"{path.name}: broken link {link}"
    for stage in re.findall(r"`([a-z_]+)__<(?:model|dataset)>`", text):
        assert stage in STAGES, f"{path.name}: no DAG stage {stage!r} in dags/"
    for sub in sorted(set(re.findall(r"flywheel (\w[\w-]*)", text)) - {"page"}):
        out = subprocess.run([sys.executable, "-m", "flywheel.cli", sub, "--help"], capture_output=True, text=True,
                             cwd=REPO_ROOT, timeout=60)
        assert out.returncode == 0, f"{path.name}: `flywheel {sub}` is not a command: {out.stderr[-300:]}"
    for target in re.findall(r"^make (\w+)", text, flags=re.M):
        assert re.search(rf"^{target}:", (REPO_ROOT / "Makefile").read_text(), flags=re.M), target
