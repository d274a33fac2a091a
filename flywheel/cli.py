"""`flywheel` — operate the embedded runtime (init, up, down, status, feast-apply, demo), serve online predictions
(serve) and run a dataset's data gate on one file (validate)."""

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
    ing.add_argument("file", type=Path, nargs="+", help="one or more batch files (.parquet or .csv)")
    ing.add_argument("--dataset", required=True, help="datasets/<name>.yaml")
    ing.add_argument("--wait", action="store_true", help="wait for each file's ingest run and print the gate's "
                     "verdict (exit 2 if any batch was blocked)")
    demo = sub.add_parser("demo", help="play the demo scenario through the real scheduler")
    length = demo.add_mutually_exclusive_group()
    length.add_argument("--short", dest="full", action="store_false",
                        help="the compact stories (the default; what the integration test plays): 8 weekly card "
                             "batches, a year of ratings and 2 live months")
    length.add_argument("--full", dest="full", action="store_true",
                        help="the long stories: 13 weekly card batches (a second retrain, more shifted weeks) and 3 "
                             "live months of ratings (about twice as long)")
    demo.set_defaults(full=None)   # --resume plays the length of the demo it resumes
    demo.add_argument("--resume", action="store_true", help="keep the previous state instead of resetting")
    demo.add_argument("--story", action="append", choices=["cards", "ratings"],
                      help="play only this story (repeatable; default: both, side by side)")
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
    _add_onboarding_commands(sub)
    trn = sub.add_parser("train", help="train a model now (train__MODEL through Airflow's API) and print the gate's "
                         "verdict", description="Trigger train__MODEL as the UI's Trigger form would, wait for it, and "
                         "print what the gate decided. Exit code: 0 the run succeeded (promoted or rejected), 1 "
                         "error or failed run.")
    trn.add_argument("model", help="models/<MODEL>.yaml")
    trn.add_argument("--as-of", help="train on labels known at this time, ISO 8601 (default: the end of the "
                     "newest validated batch of the model's dataset)")
    trn.add_argument("--reason", default="trained by hand (flywheel train)", help="recorded on the version")
    srv = sub.add_parser("serve", help="online predictions from every model's champion over HTTP (API key required)",
                         description="Answer POST /v1/models/<model>/predict with the champion held in memory and the "
                         "model's FeatureService read from the online store; reload when the champion alias moves. "
                         "The API key is $FLYWHEEL_HOME/secrets/serving_api_key (generated once) or "
                         "FLYWHEEL_SERVING_API_KEY. See README, Serving.")
    srv.add_argument("--host", default=os.environ.get("FLYWHEEL_SERVING_HOST", "127.0.0.1"),
                     help="address to bind (default 127.0.0.1, or FLYWHEEL_SERVING_HOST; 0.0.0.0 only in a container)")
    srv.add_argument("--port", type=int, help="port (default FLYWHEEL_SERVING_PORT or 8000)")
    srv.add_argument("--model", action="append", help="serve only this model (repeatable; default: every spec)")
    srv.add_argument("--poll-seconds", type=float, default=float(os.environ.get("FLYWHEEL_SERVING_POLL_SECONDS", 2)),
                     help="how often the champion alias is looked at (default 2, or FLYWHEEL_SERVING_POLL_SECONDS)")
    srv.add_argument("--feature-repo", type=Path, help="the Feast repo (default: feature_repo/)")
    srv.add_argument("--log-seconds", type=float, default=float(os.environ.get("FLYWHEEL_SERVING_LOG_SECONDS", 5)),
                     help="the online scoring log is written at least this often (default 5, or "
                     "FLYWHEEL_SERVING_LOG_SECONDS), and every 1,000 rows")
    args = parser.parse_args(argv)
    if args.cmd == "validate":
        return validate_command(args)
    if args.cmd == "contract":
        return contract_infer_command(args)
    if args.cmd == "check":
        return check_command(args)
    if args.cmd == "golden":
        return golden_hash_command(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    lay = Layout.from_env()

    from flywheel import runtime

    ports = runtime.Ports.from_env()
    if args.cmd == "ingest":
        return ingest_command(args, lay, ports)
    if args.cmd == "train":
        return train_command(args, lay, ports)
    if args.cmd == "serve":
        return serve_command(args, lay, ports)
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
            return run_demo(lay, ports, short=None if args.full is None else not args.full, resume=args.resume,
                            story_names=args.story)
        except AirflowUnreachable as exc:
            print(f"flywheel demo: stopped: {exc}. The services went away (`flywheel status` says which); "
                  "`make up` restarts them and `flywheel demo --resume` plays what was not played yet.",
                  file=sys.stderr)
            return 1
    return 0


def ingest_command(args: argparse.Namespace, lay: Layout, ports: Any = None) -> int:
    """`flywheel ingest FILE... --dataset NAME [--wait]`: copy the files into landing, say which interval each lands
    in; with --wait, wait for their ingest runs and print the gate's verdicts."""
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
    contract = contracts[args.dataset]
    placed = []
    for file in args.file:   # every file is placed before any is copied: a bad one lands nothing
        if not file.is_file():
            print(f"flywheel ingest: error: {file} is not a file", file=sys.stderr)
            return EXIT_ERROR
        try:
            placed.append((file, *interval_of(contract, str(file))))
        except ValueError as exc:
            print(f"flywheel ingest: error: {exc}", file=sys.stderr)
            return EXIT_ERROR
    from pipelines.landing import validated_sha256
    from pipelines.util import sha256_file

    # the same bytes already judged for the interval (an earlier landing, or `flywheel validate` into this home)
    # start no run: the watcher only reacts to bytes the gate has not judged
    judged = {interval_key(start) for file, start, _ in placed
              if validated_sha256(lay.validation_reports(contract.name), interval_key(start)) == sha256_file(file)}
    for file, start, end in placed:
        dest = storage.join(lay.landing(contract.name), file.name)
        storage.copy(str(file), dest)
        print(f"landed {dest} for {start.isoformat()} → {end.isoformat()}; land__{contract.name} starts "
              f"ingest_validate__{contract.name} run batch__{interval_key(start)} when its watcher sees it")
    for key in sorted(judged):
        print(f"batch__{key}: these bytes were already judged for {key} (an earlier landing, or `flywheel validate` "
              f"into this FLYWHEEL_HOME): no new ingest run; its report is {lay.validation_reports(contract.name)}/"
              f"{key}.json. To ingest it through Airflow anyway, clear that interval's run in the UI.")
    if not args.wait:
        return 0
    return _wait_for_ingestion(contract.name, [f"batch__{interval_key(start)}" for _, start, _ in placed
                                              if interval_key(start) not in judged], lay, ports)


def _wait_for_ingestion(dataset: str, run_ids: list[str], lay: Layout, ports: Any) -> int:
    """Wait until each ingest run has finished (after this landing), print its verdict; 2 if any was blocked."""
    import time

    from flywheel import runtime
    from flywheel.airflow_api import AirflowAPI, AirflowUnreachable
    from flywheel.demo import describe_run

    api = AirflowAPI(f"http://127.0.0.1:{ports.airflow}", "admin", runtime.admin_password(lay))
    dag_id, landed_at = f"ingest_validate__{dataset}", datetime.now(UTC)
    waiting, blocked = list(dict.fromkeys(run_ids)), 0
    deadline = time.monotonic() + 600 + 60 * len(waiting)
    try:
        while waiting and time.monotonic() < deadline:
            for run_id in list(waiting):
                run = api.finished_run(dag_id, run_id, since=landed_at)   # this landing's run, not an earlier one
                if run is not None:
                    line = describe_run(api, run)
                    blocked += line.startswith("BLOCKED")
                    print(f"{run_id}: {line}", flush=True)
                    waiting.remove(run_id)
            time.sleep(2)
    except AirflowUnreachable as exc:
        print(f"flywheel ingest: error: {exc}; the files are landed: start the services (`make up`)", file=sys.stderr)
        return EXIT_ERROR
    if waiting:
        print(f"flywheel ingest: error: still not ingested: {', '.join(waiting)}; is land__{dataset} unpaused and "
              "the triggerer running (`flywheel status`)?", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_BLOCKED if blocked else 0


def train_command(args: argparse.Namespace, lay: Layout, ports: Any) -> int:
    """`flywheel train MODEL`: trigger train__MODEL over Airflow's REST API, wait, print the gate's verdict."""
    import time

    from flywheel import runtime
    from flywheel.airflow_api import AirflowAPI, AirflowAPIError, AirflowUnreachable
    from flywheel.demo import describe_run
    from pipelines.features import validated_keys
    from pipelines.landing import next_tick
    from pipelines.layout import default_data_uri
    from pipelines.spec import SpecError, load_specs

    def error(message: str) -> int:
        print(f"flywheel train: error: {message}", file=sys.stderr)
        return EXIT_ERROR

    try:
        specs = load_specs()
    except SpecError as exc:
        return error(str(exc))
    if args.model not in specs:
        return error(f"unknown model {args.model!r}; known: {', '.join(sorted(specs))} (models/<name>.yaml)")
    spec = specs[args.model]
    env = runtime.environment(lay, ports)   # where this install keeps its data (a folder, or S3 when scaled out)
    os.environ.update({k: v for k, v in env.items() if k.startswith(("FLYWHEEL_", "AWS_"))})
    data = Layout(lay.home, default_data_uri())
    if args.as_of:
        as_of = _parse_time(args.as_of, "--as-of").isoformat()
    else:
        keys = validated_keys(data.validated(spec.dataset.name))
        if not keys:
            return error(f"no validated batch of dataset {spec.dataset.name} yet: land files first "
                         f"(`flywheel ingest FILE --dataset {spec.dataset.name}`), or pass --as-of.")
        newest = datetime.fromisoformat(keys[-1]).replace(tzinfo=UTC)
        as_of = next_tick(spec.dataset.cadence, newest).isoformat()
    api = AirflowAPI(f"http://127.0.0.1:{ports.airflow}", "admin", runtime.admin_password(lay))
    dag_id, run_id = f"train__{spec.name}", f"manual__{spec.name}__{int(time.time())}"
    try:
        api.trigger(dag_id, conf={"as_of": as_of, "reason": args.reason}, run_id=run_id)
        print(f"triggered {dag_id} run {run_id} (as of {as_of}); waiting for the gate...", flush=True)
        run = api.wait_run(dag_id, run_id, timeout=1800)
    except TimeoutError:
        return error(f"{dag_id} run {run_id} not finished after 30 minutes; see the Airflow UI.")
    except AirflowUnreachable as exc:
        return error(f"{exc}; start the services first (`make up`).")
    except AirflowAPIError as exc:
        return error(str(exc))
    print(f"{dag_id} {run['state']}: {describe_run(api, run)}")
    return 0 if run["state"] == "success" else EXIT_ERROR


def serve_command(args: argparse.Namespace, lay: Layout, ports: Any) -> int:
    """`flywheel serve`: the online endpoint of every model (or --model), until SIGINT/SIGTERM."""
    from flywheel import runtime
    from pipelines.layout import default_data_uri
    from pipelines.spec import REPO_ROOT, SpecError, load_specs

    def error(message: str) -> int:
        print(f"flywheel serve: error: {message}", file=sys.stderr)
        return EXIT_ERROR

    env = runtime.environment(lay, ports)   # the stores of this install (values already set win)
    os.environ.update({k: v for k, v in env.items() if k.startswith(("FLYWHEEL_", "MLFLOW_", "AWS_", "DO_NOT",
                                                                     "FEAST_"))})
    try:
        specs = load_specs()
    except SpecError as exc:
        return error(str(exc))
    unknown = sorted(set(args.model or ()) - set(specs))
    if unknown:
        return error(f"unknown model(s) {unknown}; known: {', '.join(sorted(specs))} (models/<name>.yaml)")
    chosen = [specs[n] for n in (args.model or sorted(specs))]
    port = args.port or ports.serving
    key = runtime.serving_api_key(lay)
    from pipelines.serving.server import build_endpoints, serve

    data = Layout(lay.home, default_data_uri())
    from pipelines.serving.server import BROKEN

    endpoints = build_endpoints(chosen, args.feature_repo or REPO_ROOT / "feature_repo", data,
                                poll_s=args.poll_seconds, log_seconds=args.log_seconds)
    where = "FLYWHEEL_SERVING_API_KEY" if os.environ.get("FLYWHEEL_SERVING_API_KEY") else \
        lay.secrets() / "serving_api_key"
    print(f"serving {', '.join(endpoints) or 'no model'} on http://{args.host}:{port}/v1/models/<model>/predict "
          f"(API key: {where}; champions reloaded every {args.poll_seconds:g} s)", flush=True)
    for name, why in BROKEN.items():
        print(f"not serving {name}: {why}", file=sys.stderr, flush=True)
    serve(endpoints, key, args.host, port)
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
    from flywheel.runtime import admin_login_hint, mlflow_login_hint

    print(f"Airflow UI : http://127.0.0.1:{ports.airflow}/   {admin_login_hint(lay)}")  # type: ignore[attr-defined]
    print(f"Flywheel   : http://127.0.0.1:{ports.airflow}/plugin/flywheel   (models and datasets)")  # type: ignore[attr-defined]
    print(f"MLflow UI  : http://127.0.0.1:{ports.mlflow}/   {mlflow_login_hint(lay)}")  # type: ignore[attr-defined]
    print(f"Serving    : http://127.0.0.1:{ports.serving}/v1/models/<model>/predict   "  # type: ignore[attr-defined]
          f"(API key in {lay.secrets() / 'serving_api_key'})")
    print(f"Mail       : {lay.mail()}  (one file per message received by the local SMTP server)")
    if os.environ.get("FLYWHEEL_TOPOLOGY") == "services":
        from kombu.utils.url import maybe_sanitize_url

        from flywheel.runtime import environment

        env = environment(lay, ports)  # type: ignore[arg-type]
        broker = maybe_sanitize_url(env["AIRFLOW__CELERY__BROKER_URL"])   # redis://:**@host/db: no password printed
        print(f"Topology   : services — Airflow on {env['AIRFLOW__DATABASE__SQL_ALCHEMY_CONN'].rsplit('/', 1)[-1]} "
              f"(PostgreSQL), Celery over {broker}")
        print(f"Data       : {env['FLYWHEEL_DATA_URI']}  (S3 API at {env['AWS_ENDPOINT_URL']})")


# ------------------------------------------------------------------------------------------------
# onboarding: `flywheel contract infer`, `flywheel check`


def _add_onboarding_commands(sub: Any) -> None:
    con = sub.add_parser("contract", help="dataset contracts: `contract infer` drafts one from sample files")
    con_sub = con.add_subparsers(dest="contract_cmd", required=True)
    inf = con_sub.add_parser(
        "infer", help="draft datasets/NAME.yaml from a sample batch file (or a folder of them), to review",
        description="Read SAMPLE (a .parquet/.csv batch, or a folder of them: several files also give the cadence) "
        "and write a DRAFT contract: column types, nullability, ranges and allowed values, row_id, timestamp, "
        "cadence, file_pattern and batch limits, each guess marked by a `# guessed:` comment and each open "
        "decision by `# REVIEW:`. Exit code: 0 written, 1 error.")
    inf.add_argument("sample", type=Path, help="a sample batch file (.parquet or .csv) or a folder of them")
    inf.add_argument("--name", help="the dataset's name (required): a Python identifier, e.g. ratings")
    inf.add_argument("--out", type=Path, help="where to write it (default: datasets/NAME.yaml; a folder: "
                     "FOLDER/NAME.yaml)")
    inf.add_argument("--owner", action="append", dest="owners", metavar="EMAIL",
                     help="an owner's email (repeatable; default: a placeholder to replace)")
    inf.add_argument("--force", action="store_true", help="overwrite an existing file")
    gold = sub.add_parser("golden", help="golden sets: `golden hash FILE` prints the sha256 to declare in a spec")
    gold_sub = gold.add_subparsers(dest="golden_cmd", required=True)
    gh = gold_sub.add_parser("hash", help="the sha256 that freezes a golden set file (models/<m>.yaml golden[].sha256)")
    gh.add_argument("file", type=Path, help="the golden set (.parquet or .csv: the model's inputs and the label)")
    chk = sub.add_parser(
        "check", help="check every dataset contract, model spec and feature declaration together",
        description="Load every contract, every model spec and the feature declarations, cross-check them "
        "(services, views' datasets, join keys, windows, entity keys, names) and list EVERY problem as "
        "`file: key: message`. Exit code: 0 no problem, 1 problems.")
    chk.add_argument("--datasets", type=Path, help="folder of dataset contracts (default: $FLYWHEEL_DATASETS_DIR "
                     "or datasets/)")
    chk.add_argument("--models", type=Path, help="folder of model specs (default: $FLYWHEEL_MODELS_DIR or models/)")
    chk.add_argument("--feature-repo", type=Path, help="the Feast repo holding definitions.py (default: "
                     "feature_repo/)")


def _shown(path: Path) -> str:
    """A path for people: relative to the working directory when inside it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def golden_hash_command(args: argparse.Namespace) -> int:
    """`flywheel golden hash FILE`: the hash a spec freezes a golden set with (pipelines/release/golden.py)."""
    from pipelines.util import sha256_file

    if not args.file.is_file():
        print(f"{args.file}: no such file", file=sys.stderr)
        return 1
    print(f"sha256: {sha256_file(args.file)}   # golden[].sha256 of {_shown(args.file)}")
    return 0


def contract_infer_command(args: argparse.Namespace) -> int:
    """`flywheel contract infer SAMPLE --name NAME`: write the draft, show what was guessed, say what is next."""
    from pipelines.contract_infer import InferError, draft_contract
    from pipelines.spec import datasets_dir

    def error(message: str) -> int:
        print(f"flywheel contract infer: error: {message}", file=sys.stderr)
        return EXIT_ERROR

    if not args.name:
        return error("--name NAME is required: the dataset's name (its contract is datasets/<NAME>.yaml).")
    out = Path(args.out) if args.out else datasets_dir() / f"{args.name}.yaml"
    if out.is_dir():
        out = out / f"{args.name}.yaml"
    if out.name != f"{args.name}.yaml":
        return error(f"--out {out}: a contract file is named after its dataset; use {out.parent / args.name}.yaml.")
    if out.exists() and not args.force:
        return error(f"{_shown(out)} already exists and was left as it is; pass --force to overwrite it, or --out "
                     "to write the draft elsewhere.")
    try:
        draft = draft_contract([args.sample], args.name, args.owners)
    except InferError as exc:
        return error(str(exc))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(draft.to_yaml())
    print(f"wrote {_shown(out)}: a DRAFT inferred from {len(draft.files)} file(s), {draft.rows} rows; review it "
          "(`# guessed:` says how, `# REVIEW:` needs a decision)")
    for label, guess in (("row_id", draft.row_id), ("timestamp", draft.timestamp), ("cadence", draft.cadence),
                         ("file_pattern", draft.file_pattern), ("owners", draft.owners)):
        value = ", ".join(guess.value) if isinstance(guess.value, tuple) else guess.value
        how = f"  ({guess.note.split(';')[0]})" if label == "cadence" else ""
        print(f"  {label:13s}{value}{how}{'   REVIEW' if guess.review else ''}")
    width = max(len("column"), *(len(c.name) for c in draft.columns))
    print(f"  {'column':{width}s}  {'type':9s}  {'nullable':8s}  rule")
    for c in draft.columns:
        print(f"  {c.name:{width}s}  {c.type:9s}  {'yes' if c.nullable else 'no':8s}  {c.rule_text}"
              + ("   REVIEW" if c.review else ""))
    where = "" if out.parent.resolve() == datasets_dir().resolve() else f" (once it is in {_shown(datasets_dir())}/)"
    print(f"next{where}:")
    print(f"  {'flywheel check':50s}  # the contract with every model spec and feature view")
    print(f"  {'flywheel validate ' + _shown(draft.files[-1]) + ' --dataset ' + args.name:50s}  # the gate on a "
          "sample file: it should be accepted")
    return 0


def check_command(args: argparse.Namespace) -> int:
    """`flywheel check`: every problem of the contracts, specs and feature declarations, as file: key: message."""
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    from pipelines.check import check_report
    from pipelines.spec import REPO_ROOT, datasets_dir, models_dir

    report = check_report(args.datasets or datasets_dir(), args.models or models_dir(),
                          args.feature_repo or REPO_ROOT / "feature_repo")  # as flywheel/dagkit.py's FEATURE_REPO
    for p in report.problems:
        print(f"{_shown(p.file)}: {p.key}: {p.message}")
    for note in report.notes:
        print(f"note: {note}")
    counted = f"{report.datasets} datasets, {report.models} models, {report.views} views"
    if report.problems:
        files = len({p.file for p in report.problems})
        print(f"{len(report.problems)} problem(s) in {files} file(s) ({counted} checked)")
        return EXIT_ERROR
    print(f"{counted}: no problem")
    return 0


if __name__ == "__main__":
    sys.exit(main())
