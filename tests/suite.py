"""`make test`: the whole suite as two pytest sessions, so that both cores work until the end.

The suite is CPU-bound on 2 cores while the demo runs play beside the unit tests; once the unit and DAG tests
are done, the main session mostly waits for those runs and then checks them one test at a time, and one core
sits idle. So:

- the main session runs the unit and DAG tests, the integration tests that read the embedded demo run, then the
  scale-out tests (tests/services), which read the services run;
- the `beside` session runs the integration tests that start their own services (a promotion stack, a serving
  world, the feature store, S3, SMTP) and read no demo run. It starts when the main session's first test past the
  unit and DAG tests does (tests/conftest.py writes a marker file), not before: earlier, it would only take CPU
  from the demo runs everything else waits for.

Which session a test belongs to is decided from its fixtures at collection (tests/conftest.py `beside`), so a new
test file needs nothing here. Each session has its own --basetemp. The main session's report streams; the beside
session's is printed when both are done. The exit code is the first non-zero of the two.

Usage: python tests/suite.py [extra pytest arguments for both sessions]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAIN_PATHS = ["tests/unit", "tests/dags", "tests/integration", "tests/services"]
BESIDE_PATHS = ["tests/integration"]


def main(extra: list[str]) -> int:
    work = Path(tempfile.mkdtemp(prefix="flywheel-suite-"))
    marker, beside_log = work / "main-past-unit", work / "beside.log"
    pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    env = {**os.environ, "FLYWHEEL_SUITE_MARKER": str(marker)}
    t0 = time.monotonic()
    main_proc = subprocess.Popen([*pytest, *MAIN_PATHS, "--durations=30", f"--basetemp={work / 'main'}", *extra],
                                 cwd=REPO, env={**env, "FLYWHEEL_SUITE_PART": "main"})
    beside: subprocess.Popen[bytes] | None = None
    beside_started = 0.0
    try:
        while main_proc.poll() is None:
            if beside is None and marker.exists():
                beside_started = time.monotonic() - t0
                with beside_log.open("wb") as out:
                    beside = subprocess.Popen(
                        [*pytest, *BESIDE_PATHS, "--durations=15", f"--basetemp={work / 'beside'}", *extra],
                        cwd=REPO, env={**env, "FLYWHEEL_SUITE_PART": "beside"}, stdout=out, stderr=subprocess.STDOUT)
            time.sleep(1)
        if beside is None:   # the main session ended before its unit tests did (a failure, -x, or -k): run it now
            beside_started = time.monotonic() - t0
            with beside_log.open("wb") as out:
                beside = subprocess.Popen(
                    [*pytest, *BESIDE_PATHS, "--durations=15", f"--basetemp={work / 'beside'}", *extra],
                    cwd=REPO, env={**env, "FLYWHEEL_SUITE_PART": "beside"}, stdout=out, stderr=subprocess.STDOUT)
        beside.wait()
    finally:
        for proc in (main_proc, beside):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=60)
    print(f"\n======== the beside session (started {beside_started:.0f} s in): integration tests with their own "
          f"services ========", flush=True)
    sys.stdout.write(beside_log.read_text(errors="replace"))
    codes = {"main": main_proc.returncode, "beside": beside.returncode}
    print(f"\n======== suite: main session exit {codes['main']}, beside session exit {codes['beside']}; "
          f"{time.monotonic() - t0:.0f} s in all ========", flush=True)
    return next((c for c in codes.values() if c != 0), 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
