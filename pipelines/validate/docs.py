"""GX Data Docs: each run's results stored in a file-backed GX project and rendered as a static site.

The project lives in docs_dir/gx, the site in docs_dir/site (index.html lists every run). The suite is
named after the dataset; one page per (interval, file content): a rerun of the same bytes overwrites
its page, a re-landed fix gets a page of its own next to the blocked one. The page shows observed
values and samples for the expectations that failed, and pass/fail for the row rules that passed
(they ran BOOLEAN_ONLY).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines import storage
from pipelines.validate.registry import locked

if TYPE_CHECKING:
    from pipelines.spec import DatasetContract, ModelSpec
    from pipelines.validate.gx import GXBatch

SITE = "flywheel"


def build_data_docs(
    docs_dir: Path,
    contract: DatasetContract,
    readers: Sequence[ModelSpec],
    key: str,
    start: datetime,
    end: datetime,
    batch_file: str,
    digest: str | None,
    parts: list[Any],
    blocked: bool,
    gx_batch: GXBatch,
) -> str:
    """Store this run's GX results and render its page; returns the page's local path."""
    import great_expectations as gx
    from great_expectations.core import ExpectationSuiteValidationResult
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )
    from great_expectations.util import convert_to_json_serializable

    suite_name = contract.name
    site_dir = docs_dir / "site"
    with locked(docs_dir):
        fresh = not (docs_dir / "gx" / "great_expectations.yml").exists()
        context = gx.get_context(mode="file", project_root_dir=str(docs_dir))
        if fresh or SITE not in (context.config.data_docs_sites or {}):
            for name in list(context.config.data_docs_sites or {}):
                context.delete_data_docs_site(name)
            context.add_data_docs_site(
                SITE,
                {
                    "class_name": "SiteBuilder",
                    "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(site_dir)},
                    "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                },
            )
        for r in parts:  # numpy scalars in some results (quantile checks) break GX's own JSON store
            r.success = bool(r.success)
            r.result = convert_to_json_serializable(r.result)
        configs = [r.expectation_config.to_domain_obj() for r in parts]
        context.suites.add_or_update(gx.ExpectationSuite(name=suite_name, expectations=configs))
        evaluated = len(parts)
        successful = sum(1 for r in parts if r.success)
        run_id = RunIdentifier(run_name=key, run_time=start)
        batch_id = f"{storage.stem(batch_file)}-{(digest or 'unread')[:12]}"
        meta = {
            "great_expectations_version": gx.__version__,
            "run_id": run_id,
            "batch_spec": {
                "path": batch_file,
                "interval": f"[{start.isoformat()}, {end.isoformat()})",
                "dataset": contract.name,
                "read_by": [m.name for m in readers],
                "verdict": "blocked" if blocked else "accepted",
            },
            "batch_markers": {
                "sha256": digest,
                **{
                    k: v
                    for k, v in (gx_batch.meta.get("batch_markers") or {}).items()
                    if k != "pandas_data_fingerprint"
                },
            },
            "active_batch_definition": gx_batch.meta.get("active_batch_definition") or {},
        }
        result = ExpectationSuiteValidationResult(
            success=not blocked,
            results=parts,
            suite_name=suite_name,
            statistics={
                "evaluated_expectations": evaluated,
                "successful_expectations": successful,
                "unsuccessful_expectations": evaluated - successful,
                "success_percent": 100.0 * successful / evaluated if evaluated else None,
            },
            meta=meta,
        )
        identifier = ValidationResultIdentifier(ExpectationSuiteIdentifier(suite_name), run_id, batch_id)
        context.validation_results_store.set(identifier, result)
        pages: list[Any] = [identifier, ExpectationSuiteIdentifier(suite_name)]  # this run's page + the suite's
        context.build_data_docs(site_names=[SITE], resource_identifiers=pages)
        urls = context.get_docs_sites_urls(resource_identifier=identifier, site_name=SITE)
    url = str((urls or [{}])[0].get("site_url") or "")
    return url.removeprefix("file://") or str(site_dir / "index.html")
