"""`flywheel` — operate the embedded runtime (init, up, down, status, feast-apply, demo) and run a dataset's data
gate on one file (validate)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.layout import Layout

if TYPE_CHECKING:
    from pipelines.spec import DatasetContract

EXIT_ACCEPTED, EXIT_ERROR, EXIT_BLOCKED = 0, 1, 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flywheel", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("init", help="prepare FLYWHEEL_HOME (secrets, Airflow DB, Feast registry)")
    sub.add_parser("up", help="start Airflow, MLflow and the SMTP server in the background")
    sub.add_parser("down", help="stop everything `up` started")
    sub.add_parser("status", help="which services run, and the URLs")
    sub.add_parser("feast-apply", help="register feature_repo/ definitions (programmatic `feast apply`)")
    ing = sub.add_parser("ingest", help="land a file for a dataset (a copy): the landing watcher ingests it",
                         description="Copy FILE into the dataset's landing area, unchanged. The landing watcher of "
                         "land__<dataset> then starts ingest_validate__<dataset> for the interval the file's name "
                         "(or its earliest event) places it in. Past intervals are backfills.")
    ing.add_argument("file", type=Path)
    ing.add_argument("--dataset", required=True, help="datasets/<name>.yaml")
    demo = sub.add_parser("demo", help="play the demo scenario through the real scheduler")
    demo.add_argument("--short", action="store_true", help="the short scenario used by the integration test")
    demo.add_argument("--resume", action="store_true", help="keep the previous state instead of resetting")
    val = sub.add_parser(
        "validate",
        help="run a dataset's data gate on one batch file, outside Airflow",
        description="Run the same gate as ingest_validate__<dataset> on one parquet or CSV file, against the "
        "contract datasets/<dataset>.yaml, and write the same outputs under FLYWHEEL_HOME. Exit code: 0 accepted "
        "(maybe with quarantined rows), 2 blocked, 1 error.",
    )
    val.add_argument("file", type=Path, help="the batch file (.parquet or .csv)")
    # required: checked by the command itself, so that a usage mistake exits 1 (error), never 2 (blocked)
    val.add_argument("--dataset", metavar="NAME", help="the dataset contract, datasets/<NAME>.yaml (required)")
    val.add_argument("--model", help=argparse.SUPPRESS)  # gone: the error says which --dataset to use instead
    val.add_argument("--start", help="interval start, ISO 8601 (default: from the file name via the contract's "
                     "file_pattern, else the cadence interval holding the earliest event)")
    val.add_argument("--end", help="interval end, ISO 8601 (default: the next cadence tick after --start)")
    val.add_argument("--json", action="store_true", help="print the machine-readable result instead")
    val.add_argument("--home", type=Path, help="FLYWHEEL_HOME to write to (default: $FLYWHEEL_HOME or ./.flywheel)")
    args = parser.parse_args(argv)
    if args.cmd == "validate":
        return validate_command(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    lay = Layout.from_env()

    from flywheel import runtime

    ports = runtime.Ports.from_env()
    if args.cmd == "ingest":
        return ingest_command(args, lay)
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
        from flywheel.airflow_api import AirflowUnreachable
        from flywheel.demo import run_demo

        try:
            return run_demo(lay, ports, short=args.short, resume=args.resume)
        except AirflowUnreachable as exc:
            print(f"flywheel demo: stopped: {exc}. The services went away (`flywheel status` says which); "
                  "`make up` restarts them and `flywheel demo --resume` plays what was not played yet.",
                  file=sys.stderr)
            return 1
    return 0


def ingest_command(args: argparse.Namespace, lay: Layout) -> int:
    """`flywheel ingest FILE --dataset NAME`: copy the file into landing and say which interval it lands in."""
    from pipelines import storage
    from pipelines.landing import interval_of
    from pipelines.layout import interval_key
    from pipelines.spec import SpecError, load_datasets

    try:
        contracts = load_datasets()
    except SpecError as exc:
        print(f"flywheel ingest: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if args.dataset not in contracts:
        print(f"flywheel ingest: error: unknown dataset {args.dataset!r}; known: {', '.join(sorted(contracts))} "
              "(datasets/<name>.yaml)", file=sys.stderr)
        return EXIT_ERROR
    if not args.file.is_file():
        print(f"flywheel ingest: error: {args.file} is not a file", file=sys.stderr)
        return EXIT_ERROR
    contract = contracts[args.dataset]
    try:
        start, end = interval_of(contract, str(args.file))
    except ValueError as exc:
        print(f"flywheel ingest: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    dest = storage.join(lay.landing(contract.name), args.file.name)
    storage.copy(str(args.file), dest)
    print(f"landed {dest} for {start.isoformat()} → {end.isoformat()}; land__{contract.name} starts "
          f"ingest_validate__{contract.name} run batch__{interval_key(start)} when its watcher sees it")
    return 0


class CLIError(Exception):
    """A usage problem: the message says what to do; exit code 1."""


def validate_command(args: argparse.Namespace) -> int:
    """`flywheel validate`: the gate on one file; prints the verdict (or JSON) and returns the exit code."""
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:  # GX sets INFO on its own loggers: the verdict says it all
        handler.setLevel(logging.ERROR)
    try:
        result, kept = _run_validation(args)
    except CLIError as exc:
        return _error(args, str(exc))
    except Exception as exc:  # noqa: BLE001 - a crash is an error (1), never "accepted"
        logging.getLogger(__name__).debug("validate failed", exc_info=True)
        return _error(args, f"validation failed unexpectedly: {type(exc).__name__}: {exc}")
    code = EXIT_ACCEPTED if result.verdict == "accepted" else EXIT_BLOCKED
    if args.json:
        print(json.dumps({**result.to_dict(), "summary": result.summary, "blocked_copy": kept, "exit_code": code},
                         indent=2, sort_keys=True))
    else:
        _print_result(result, kept)
    return code


def _error(args: argparse.Namespace, message: str) -> int:
    if args.json:
        print(json.dumps({"verdict": "error", "error": message, "exit_code": EXIT_ERROR}, indent=2))
    print(f"flywheel validate: error: {message}", file=sys.stderr)
    return EXIT_ERROR


def _run_validation(args: argparse.Namespace) -> tuple[Any, str | None]:
    from pipelines.layout import interval_key
    from pipelines.spec import SpecError, load_datasets, load_specs, readers
    from pipelines.validate import preserve_blocked, validate_batch

    try:
        contracts = load_datasets()
        specs = load_specs()
    except SpecError as exc:
        raise CLIError(str(exc)) from None
    known = ", ".join(sorted(contracts)) or "none"
    if args.model:
        spec = specs.get(args.model)
        use = f"--dataset {spec.dataset.name}" if spec is not None else f"--dataset NAME (known: {known})"
        raise CLIError(f"--model is gone: a batch is validated once per dataset, whichever models read it; use {use}.")
    if not args.dataset:
        raise CLIError(f"--dataset NAME is required; known: {known} (datasets/<name>.yaml).")
    if args.dataset not in contracts:
        raise CLIError(f"unknown dataset {args.dataset!r}; known: {known} (datasets/<name>.yaml).")
    contract = contracts[args.dataset]
    file = Path(args.file)
    if not file.is_file():
        raise CLIError(f"{file}: no such file; pass the path of a landed batch (.parquet or .csv).")
    start, end = _interval(args, contract, file)
    lay = Layout(args.home.resolve()) if args.home else Layout.from_env()
    name = contract.name
    result = validate_batch(file, contract, start, end, lay.validated(name), lay.quarantine(name),
                            lay.validation_reports(name), docs_dir=lay.data_docs(name),
                            readers=readers(name, specs))
    kept = None
    if result.verdict == "blocked":
        kept = str(preserve_blocked(file, lay.blocked(name), interval_key(start)))
    return result, kept


def _parse_time(value: str, flag: str) -> datetime:
    try:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise CLIError(f"{flag} {value!r} is not an ISO 8601 date or time (e.g. 2026-01-05 or "
                       "2026-01-05T00:00:00Z).") from None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _interval(args: argparse.Namespace, contract: DatasetContract, file: Path) -> tuple[datetime, datetime]:
    """--start/--end, else the interval of the file's name or earliest event (pipelines/landing.py)."""
    from pipelines.landing import interval_of, next_tick

    if args.end and not args.start:
        raise CLIError("--end needs --start.")
    if args.start:
        start = _parse_time(args.start, "--start")
        end = _parse_time(args.end, "--end") if args.end else next_tick(contract.cadence, start)
    else:
        try:
            start, end = interval_of(contract, str(file))
        except ValueError as exc:
            raise CLIError(f"{exc} (--start and --end).") from None
    if end <= start:
        raise CLIError(f"the interval end {end.isoformat()} is not after its start {start.isoformat()}.")
    return start, end


def _print_result(result: Any, kept: str | None) -> None:
    blocked = result.verdict == "blocked"
    print(f"{result.verdict.upper()}  dataset {result.dataset}  {result.batch_file}")
    print(f"  interval  [{result.interval_start}, {result.interval_end})")
    print(f"  rows      {result.rows_landed} landed, {result.rows_clean} clean, {result.rows_quarantined} quarantined"
          + ("  (nothing published)" if blocked else ""))
    titles = {"batch": "BLOCKING", "row": "quarantined", "warn": "warning"}
    for severity in ("batch", "row", "warn"):
        for f in (f for f in result.failures if f.severity == severity):
            what = f"{f.rule}" + (f"({f.column})" if f.column else "")
            rows = f"  {f.count} row(s)" if f.count else ""
            print(f"  {titles[severity]:11s} {what}  [{f.check}]{rows}")
            print(f"              {f.message}")
    if result.reference_batches:
        print(f"  distribution reference: {', '.join(result.reference_batches)}")
    for label, path in (("clean", result.clean_path), ("quarantine", result.quarantine_path),
                        ("report", result.report_path), ("data docs", result.data_docs_path),
                        ("blocked copy", kept)):
        if path:
            print(f"  {label:12s} {path}")
    if blocked:
        print("  next: fix the batch upstream, land it again and rerun this command (or clear validate_batch in "
              "Airflow); exit code 2")


def _print_urls(lay: Layout, ports: object) -> None:
    from flywheel.runtime import admin_password

    print(f"Airflow UI : http://127.0.0.1:{ports.airflow}/   login admin / {admin_password(lay)}")  # type: ignore[attr-defined]
    print(f"MLflow UI  : http://127.0.0.1:{ports.mlflow}/")  # type: ignore[attr-defined]
    print(f"Mail       : {lay.mail()}  (one file per message received by the local SMTP server)")
    if os.environ.get("FLYWHEEL_TOPOLOGY") == "services":
        from flywheel.runtime import environment

        env = environment(lay, ports)  # type: ignore[arg-type]
        print(f"Topology   : services — Airflow on {env['AIRFLOW__DATABASE__SQL_ALCHEMY_CONN'].rsplit('/', 1)[-1]} "
              f"(PostgreSQL), Celery over {env['AIRFLOW__CELERY__BROKER_URL']}")
        print(f"Data       : {env['FLYWHEEL_DATA_URI']}  (S3 API at {env['AWS_ENDPOINT_URL']})")


if __name__ == "__main__":
    sys.exit(main())
