"""`validate_batch`: one landed batch through the rules, then its outputs, history, report and Data Docs."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines import storage
from pipelines.util import as_utc, sha256_file
from pipelines.validate import distribution, messages, outputs, registry, row_ids, rules
from pipelines.validate.docs import build_data_docs
from pipelines.validate.gx import GXBatch
from pipelines.validate.reading import read_batch
from pipelines.validate.results import RuleFailure, ValidationResult

if TYPE_CHECKING:
    from pipelines.spec import DatasetContract, ModelSpec
    from pipelines.storage import Location

logger = logging.getLogger(__name__)


def validate_batch(
    batch_file: Location,
    contract: DatasetContract,
    interval_start: datetime,
    interval_end: datetime,
    validated_dir: Location,
    quarantine_dir: Location,
    reports_dir: Location,
    docs_dir: Path | None = None,
    readers: Sequence[ModelSpec] = (),
) -> ValidationResult:
    """Validate one landed batch of `contract`'s dataset for the interval [interval_start, interval_end).

    `readers` are the models that read the dataset: an extra column carrying one of their labels is a
    leaked label (with none, there is no label to leak). `batch_file` and the three folders are local
    paths or URIs (pipelines/storage.py); `docs_dir` is local.
    """
    import numpy as np

    from pipelines.layout import interval_key

    batch_file = os.fspath(batch_file)
    reports_dir = os.fspath(reports_dir)
    start, end = as_utc(interval_start), as_utc(interval_end)
    key = interval_key(start)
    clean_file = storage.join(validated_dir, f"{key}.parquet")
    quarantine_file = storage.join(quarantine_dir, f"{key}.parquet")
    report_file = storage.join(reports_dir, f"{key}.json")
    where = messages.show(batch_file)
    contract_file = messages.show(contract.path)

    digest = sha256_file(batch_file) if storage.is_file(batch_file) else None
    df, read_problem = read_batch(batch_file, contract)
    # an old file sent again explains everything else that is wrong with it: said first
    failures: list[RuleFailure] = registry.duplicate_failures(reports_dir, key, digest, where) if digest else []
    gx_parts: list[Any] = []  # GX results, for the Data Docs page
    n = 0
    bad_rows: Any = np.zeros(0, dtype=np.int64)
    reasons: Any = np.zeros(0, dtype=object)
    row_failures: list[RuleFailure] = []
    ok_columns: set[str] = set()
    references: list[dict[str, Any]] = []
    gx_batch: GXBatch | None = None
    if read_problem is not None:
        failures.append(messages.unreadable(read_problem))
    else:
        assert df is not None
        n = len(df)
        gx_batch = GXBatch()
        batch_failures, ok_columns, batch_results = rules.check_batch_rules(
            gx_batch, df, contract, readers, where, contract_file
        )
        failures += batch_failures
        gx_parts += batch_results
        row_failures, bad_rows, reasons, row_results = rules.check_row_rules(
            gx_batch, df, contract, ok_columns, start, end, where, contract_file, messages.show(quarantine_file)
        )
        failures += row_failures
        gx_parts += row_results

    # The rules that read the dataset's history (row ids of the accepted batches, their profiles), the verdict
    # and the history's update happen under one lock: two runs of the dataset cannot both accept the same id.
    with registry.locked(reports_dir):
        ids = row_ids.BatchIds.of(df, contract) if df is not None and contract.row_id in ok_columns else None
        if ids is not None:
            assert df is not None
            seen, seen_rows, seen_reasons = row_ids.check_unique_across_batches(
                df, ids, key, validated_dir, reports_dir, where, messages.show(quarantine_file)
            )
            if seen is not None:
                row_failures.append(seen)
                failures.append(seen)
                bad_rows, reasons = rules.merge_reasons(n, [(reasons, bad_rows), (seen_reasons, seen_rows)])
        share = len(bad_rows) / n if n else 0.0
        if n and share > contract.max_quarantine_share:
            assert df is not None
            failures.append(
                messages.quarantine_share(df, contract, bad_rows, row_failures, share, where, contract_file)
            )
        if df is not None and gx_batch is not None and contract.distribution.severity != "off":
            references = registry.reference_profiles(reports_dir, key, contract.distribution.reference_batches)
            cols = [c for c in contract.distribution.columns if c in ok_columns]
            if references and cols and n > len(bad_rows):
                dist_failures, dist_results = distribution.check_distribution(
                    gx_batch, outputs.without(df[cols], bad_rows), contract, references, where, contract_file
                )
                failures += dist_failures
                gx_parts += dist_results

        blocked = any(f.severity == "batch" for f in failures)
        if blocked:
            # a blocked batch stays whole (the DAG keeps a copy under blocked/): nothing published, nothing
            # quarantined; the failures still count the rows that broke each row rule
            rows_quarantined = rows_clean = 0
            failures = [
                messages.not_quarantined(f, messages.show(quarantine_file)) if f.severity == "row" else f
                for f in failures
            ]
            outputs.remove(clean_file)
            outputs.remove(quarantine_file)
            clean_path = quarantine_path = None
            row_ids.remove_index(reports_dir, key)
            registry.record(reports_dir, key, None)
            registry.remove_profile(reports_dir, key)
        else:
            assert df is not None and digest is not None and ids is not None
            rows_quarantined = len(bad_rows)
            rows_clean = n - rows_quarantined
            clean = outputs.without(df, bad_rows)
            storage.write_parquet(outputs.clean_table(clean, contract), clean_file)
            clean_path = clean_file
            if rows_quarantined:
                storage.write_parquet(outputs.quarantine_table(df, bad_rows, reasons), quarantine_file)
                quarantine_path = quarantine_file
            else:
                outputs.remove(quarantine_file)
                quarantine_path = None
            # nothing lost: the files on disk hold every landed row, once
            on_disk = storage.parquet_rows(clean_file) + (
                storage.parquet_rows(quarantine_file) if rows_quarantined else 0
            )
            if on_disk != n:
                outputs.remove(clean_file)
                row_ids.remove_index(reports_dir, key)
                raise RuntimeError(
                    f"{where}: {n} rows landed but the clean and quarantine files hold {on_disk}; nothing is "
                    "published (the validation run fails): rerun the task, and report this as a Flywheel bug."
                )
            row_ids.write_index(reports_dir, key, ids.clean_hashes(bad_rows), contract.row_id)
            registry.record(
                reports_dir,
                key,
                {
                    "sha256": digest,
                    "file": storage.name(batch_file),
                    "rows_landed": n,
                    "rows_clean": rows_clean,
                    "rows_quarantined": rows_quarantined,
                },
            )
            registry.write_profile(reports_dir, key, distribution.profile(clean, contract, key))

    docs_path = None
    if docs_dir is not None and gx_parts and gx_batch is not None:
        try:
            docs_path = build_data_docs(
                Path(docs_dir), contract, readers, key, start, end, batch_file, digest, gx_parts, blocked, gx_batch
            )
        except Exception:  # noqa: BLE001 - the docs are a view of the gate, never a reason to fail it
            logger.exception("could not build the Data Docs page for %s", where)

    result = ValidationResult(
        dataset=contract.name,
        batch_file=batch_file,
        interval_start=start.isoformat(),
        interval_end=end.isoformat(),
        verdict="blocked" if blocked else "accepted",
        rows_landed=n,
        rows_clean=rows_clean,
        rows_quarantined=rows_quarantined,
        clean_path=clean_path,
        quarantine_path=quarantine_path,
        report_path=report_file,
        failures=tuple(failures),
        batch_sha256=digest,
        data_docs_path=docs_path,
        reference_batches=tuple(p["key"] for p in references),
    )
    storage.write_text(json.dumps(result.to_dict(), indent=2, sort_keys=True) + "\n", report_file)
    for f in failures:
        logger.warning("%s", f.message)
    logger.log(logging.WARNING if blocked else logging.INFO, "%s", result.summary)
    return result
