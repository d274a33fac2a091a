"""`flywheel` — operate the embedded runtime: init, up, down, status, feast-apply, demo."""

from __future__ import annotations

import argparse
import logging
import sys

from pipelines.layout import Layout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flywheel", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("init", help="prepare FLYWHEEL_HOME (secrets, Airflow DB, Feast registry)")
    sub.add_parser("up", help="start Airflow, MLflow and the SMTP server in the background")
    sub.add_parser("down", help="stop everything `up` started")
    sub.add_parser("status", help="which services run, and the URLs")
    sub.add_parser("feast-apply", help="register feature_repo/ definitions (programmatic `feast apply`)")
    demo = sub.add_parser("demo", help="play the demo scenario through the real scheduler")
    demo.add_argument("--short", action="store_true", help="the short scenario used by the integration test")
    demo.add_argument("--resume", action="store_true", help="keep the previous state instead of resetting")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    lay = Layout.from_env()

    from flywheel import runtime

    ports = runtime.Ports.from_env()
    if args.cmd == "init":
        runtime.init(lay, ports)
    elif args.cmd == "up":
        env = runtime.init(lay, ports)
        runtime.up(lay, ports, env)
        _print_urls(lay, ports)
    elif args.cmd == "down":
        stopped = runtime.down(lay)
        print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    elif args.cmd == "status":
        procs = runtime.running(lay)
        for name in runtime.SERVICES:
            state = f"running (pid {procs[name]})" if name in procs else "stopped"
            print(f"{name:14s} {state}")
        _print_urls(lay, ports)
    elif args.cmd == "feast-apply":
        from pipelines.features import apply_feature_repo
        from pipelines.spec import REPO_ROOT

        print("applied: " + ", ".join(apply_feature_repo(REPO_ROOT / "feature_repo")))
    elif args.cmd == "demo":
        from flywheel.demo import run_demo

        return run_demo(lay, ports, short=args.short, resume=args.resume)
    return 0


def _print_urls(lay: Layout, ports: object) -> None:
    from flywheel.runtime import admin_password

    print(f"Airflow UI : http://127.0.0.1:{ports.airflow}/   login admin / {admin_password(lay)}")  # type: ignore[attr-defined]
    print(f"MLflow UI  : http://127.0.0.1:{ports.mlflow}/")  # type: ignore[attr-defined]
    print(f"Mail       : {lay.mail()}  (one file per message received by the local SMTP server)")


if __name__ == "__main__":
    sys.exit(main())
