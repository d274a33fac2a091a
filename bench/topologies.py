"""Wall time of the demo scenario on both topologies, same code, same machine, one after the other.

    .venv/bin/python bench/topologies.py [--full] [--json out.json]

Runs `flywheel demo --short` (or the full scenario with --full) first on the embedded default
(SQLite, LocalExecutor, local files), then on the native scale-out topology
(FLYWHEEL_TOPOLOGY=services: PostgreSQL, CeleryExecutor over Redis, MLflow on PostgreSQL with S3
artifacts, Feast on Redis, data in S3), each in its own temporary FLYWHEEL_HOME on free ports, and
prints, from each run's demo-summary.json: total wall time, service start-up, scenario time and
the wall time each stage's DAG runs took. Needs PostgreSQL and Redis on 127.0.0.1 for the second
run. The databases and Redis database it used are dropped and flushed afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest import mock

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))


def run(topology: str, full: bool) -> dict[str, Any]:
    from flywheel import runtime
    from pipelines.layout import Layout

    home = Path(tempfile.mkdtemp(prefix=f"flywheel-bench-{topology}-"))
    ports = runtime.Ports.free()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLFLOW_TRACKING", "FLYWHEEL_"))}
    env.update({"FLYWHEEL_HOME": str(home), "FLYWHEEL_TOPOLOGY": topology, **ports.env()})
    if topology == "services":
        env.update({"FLYWHEEL_DB_PREFIX": f"flywheel_bench_{os.getpid()}", "FLYWHEEL_REDIS_DB": "12"})
    cmd = [sys.executable, "-m", "flywheel.cli", "demo", *([] if full else ["--short"])]
    t = time.monotonic()
    try:
        proc = subprocess.run(cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True)
        wall = time.monotonic() - t
        if proc.returncode != 0:
            raise SystemExit(f"{topology}: demo failed\n{(proc.stdout + proc.stderr)[-4000:]}")
        summary = json.loads((home / "demo-summary.json").read_text())
        return {"topology": topology, "process_wall_s": round(wall, 1), **summary}
    finally:
        subprocess.run([sys.executable, "-m", "flywheel.cli", "down"], env=env, cwd=REPO_ROOT, capture_output=True)
        if topology == "services":
            with mock.patch.dict(os.environ, env, clear=True):
                runtime.reset_services(runtime.environment(Layout(home), ports))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="the full 13-week scenario instead of the short one")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    results = [run(t, args.full) for t in ("embedded", "services")]
    stages = sorted({s for r in results for s in r["stage_times"]})
    print(f"{'':28s}" + "".join(f"{r['topology']:>14s}" for r in results))
    for label, key in (("wall time (s)", "wall_time_s"), ("  services start (s)", "services_start_s"),
                       ("  scenario (s)", "scenario_s")):
        print(f"{label:28s}" + "".join(f"{r[key]:14.1f}" for r in results))
    for stage in stages:
        cells = [r["stage_times"].get(stage, {"wall_s": 0.0, "runs": 0}) for r in results]
        print(f"  {stage + ' (s / runs)':26s}" + "".join(f"{c['wall_s']:9.1f} /{c['runs']:3d}" for c in cells))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
