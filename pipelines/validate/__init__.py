"""Data-validation gate of the `ingest_validate__<dataset>` stage, built on Great Expectations 1.x.

A landed batch is validated ONCE per dataset, against its contract `datasets/<dataset>.yaml`
(`DatasetContract`: columns and their rules, row id, event timestamp, cadence, and the `validation:`
limits), whichever models read the dataset. Model-specific checks of the label run where a model
reads the batch; here the readers only name the labels that must not leak into an extra column.

One landed batch file goes in; these come out, keyed by the interval start (`<key>`), in the
dataset's folders (`Layout.validated(dataset)`, `.quarantine(dataset)`, `.validation_reports(dataset)`,
`.data_docs(dataset)`):

- `validated_dir/<key>.parquet`: the clean rows, contract columns only, contract dtypes, the
  timestamps as UTC (only when the batch is accepted; a stale one is removed when blocked);
- `quarantine_dir/<key>.parquet`: the rows of an ACCEPTED batch that broke a row rule, as landed, plus
  `_quarantine_reasons` ("; "-joined `rule(column)` labels); removed when no row is bad, and when the
  batch is blocked (a blocked batch stays whole: the DAG keeps a byte-identical copy under `blocked/`,
  `preserve_blocked`), so the quarantine only ever holds rows that were taken out of published data;
- `reports_dir/<key>.json`: the `ValidationResult` as a dict, always written;
- `reports_dir/profiles/<key>.json`: the profile of an accepted batch's clean rows (the
  reference of the distribution check for the batches after it); removed when blocked;
- `reports_dir/accepted_batches.json`: sha256 of the file accepted for each interval (the
  duplicate-batch registry);
- `reports_dir/row_ids/<key>.parquet`: the row-id index of an accepted batch: the sorted, distinct 64-bit
  hashes of its clean rows' `row_id` (row_ids.py); removed when blocked;
- with `docs_dir`: a GX Data Docs site, `docs_dir/site/index.html` (suite: the dataset's name), one
  validation page per (interval, file content); `ValidationResult.data_docs_path` is the page of this
  run (None when the file could not be read: GX had nothing to validate; the report says why).

Locations. The landed file and the three output folders are locations of pipelines/storage.py: local
paths or `s3://` URIs (the Data Docs site is always a local folder). Every output is written whole, so
a rerun overwrites it atomically and the same input gives the same files (the Data Docs pages carry
GX's own load time). The landed file is only ever read. Everything that reads or writes the dataset's
history (the registry, the profiles, the row-id index), the verdict and the outputs happen under one lock
per dataset (registry.py says which), so two runs of a dataset cannot both accept the same row id.

Rules. Each failure is a `RuleFailure` with the GX expectation type as `rule` (or one of
Flywheel's own rules, `readable_file`, `duplicate_batch`, `leaked_label`, `max_quarantine_share`,
`unique_across_batches`),
a short `check` name, a severity and a message naming the file, the column, the rule, a sample of
offending values, their count, the contract key behind the limit and what to do next.

1. Batch rules (severity "batch": the batch is blocked, nothing is published):
   - `readable_file`: the file exists, is not empty, parses as parquet or CSV (UTF-8, commas);
   - `duplicate_batch`: the same bytes were accepted for another interval (an old file re-sent);
     the same bytes for the *same* interval are a rerun and give the same result again;
   - the columns match the contract exactly (`expect_table_columns_to_match_set`; a missing column
     with a similar extra one is reported as a rename), and no extra column carries the label of a
     model reading the dataset (`leaked_label`, see `rules.leak_reason`; with no readers, none);
   - each column has a compatible type (`expect_column_type_to_be` for strings,
     `expect_column_values_to_be_in_type_list` for numbers, `expect_column_values_to_be_of_type`
     for timestamps);
   - the row count lies in [validation.min_rows, validation.max_rows]
     (`expect_table_row_count_to_be_between`);
   - a nullable column with `max_null_share` is null in at most that share of the rows
     (`expect_column_values_to_not_be_null` with mostly = 1 - max_null_share, check `null_share`);
   - a column that is null in every row (check `all_null`): a non-nullable one (its rows would all be
     quarantined), and a nullable one too: nullable means "may be missing in some rows", and a column
     empty in the whole batch is a broken export (`expect_column_values_to_not_be_null`, mostly ~0);
   - more than validation.max_quarantine_share of the rows broke row rules (`max_quarantine_share`; the
     rows of other intervals below count as well);
   - distribution, when validation.distribution.severity is `block`.
2. Row rules (severity "row": the offending rows are quarantined, the rest proceeds), on the
   columns that passed 1: non-null (`nullable: false`), unique (the contract's `unique` and its
   `row_id`), allowed values, numeric min/max, and the event timestamp (the contract's `timestamp`):
   not in the future of the batch (`< interval end`, check `not_in_future`) and not before the
   interval start (check `in_interval`). A label is checked as the contract declares its column
   (e.g. `is_churned: {allowed: [0, 1], nullable: false}`).
   Row identity across batches (`unique_across_batches`, Flywheel's own rule): the `row_id` is unique
   across every accepted batch of the dataset, not only within this one. A row whose id was accepted for
   ANOTHER interval (last week's rows sent again, timestamps shifted or not) is quarantined with the reason
   `unique_across_batches(<row_id>, <interval key(s)>)`; the message names the file, the column, sample ids
   and the earlier batches, and says what to do (drop re-sent rows; or re-land the earlier interval if it
   was the wrong one). Many of them block the batch through `max_quarantine_share`. The batch's own
   interval never counts: a rerun, or a fixed file re-landed for the interval, replaces its ids. How:
   row_ids.py keeps one index file per accepted interval (the hashes of its clean ids, written when the
   batch is accepted, removed when the interval becomes blocked), screens the batch's ids against each
   of them one file at a time, and confirms every hash hit against that interval's validated rows, so a
   hash collision never quarantines a good row. An interval accepted before the index existed is read
   from its validated file (and its index written then: nothing is lost in the upgrade). Cost for a year
   of daily 1M-row batches: bench/row_ids.py.
3. Distribution (severity "warn" by default, or "batch"): per `validation.distribution.columns`, the
   mean (and p05/p50/p95 of float columns) of the clean rows lies within a factor `max_ratio` of
   the same statistic over the profiles of the last `reference_batches` batches accepted before
   this interval (`expect_column_mean_to_be_between`, `expect_column_quantile_values_to_be_between`).
   Without an accepted batch before this one there is no reference and the check is skipped (said
   in the result: `reference_batches` is empty). The accepted batches are what the next models
   train on; the drift monitor, not this gate, compares with a champion's training window.

How GX runs here (for speed: see bench/validation.py). Strings are read as pyarrow-backed
`string` columns and numbers as numpy dtypes, so GX's pandas metrics stay vectorised. The row
rules run twice at most: once with result_format BOOLEAN_ONLY over the whole suite (no lists are
built: the clean case stops here), then with COMPLETE only for the expectations that failed, on
the columns they need; the offending rows come from GX's `unexpected_index_list` (positions: the
frame keeps a RangeIndex). GX fingerprints every in-memory dataframe it is given (a pandas hash of
every cell, twice per validation); the batch is identified by the file's sha256 instead, so the
fingerprint is switched off (`HASH_THRESHOLD`).

Duplicated row ids within a batch: every row whose id occurs more than once is quarantined, the first
copy included. That is what `expect_column_values_to_be_unique` reports, and nothing downstream can tell
which copy is the right one; the producer must resend the batch with one row per id. Across batches the
copy accepted first stays published and only the later ones are quarantined (`unique_across_batches`).

Type compatibility: string <- any pandas string dtype (parquet strings, dictionary-encoded ones
included); int <- any (nullable) integer dtype, or a float column whose values are all whole numbers
(what pandas writes for an int column with a null); float <- any (nullable) float or integer dtype;
timestamp <- any datetime dtype. Naive timestamps are read as UTC and aware ones converted to UTC.

Nothing lost: for an accepted batch, the rows of the written clean and quarantine files (counted
back from their parquet metadata) must add up to the landed rows, else the clean file is removed
and the run fails. When a batch is blocked, `rows_clean` and `rows_quarantined` are 0: nothing is
published and nothing is quarantined (a stale clean or quarantine file of the interval is removed); the
batch stays whole under `blocked/`, and the report's row failures still count the rows that broke each
row rule that could be evaluated (their messages say the rows were not quarantined).

The modules, one concern each: batch (`validate_batch`, the order of things), reading (the landed
file into a frame), gx (the GX context), rules (batch and row rules, leaked labels), distribution
(profiles and the distribution check), row_ids (row identity across batches: the index and the check),
messages (every failure's words), registry (accepted batches, profiles, locks), outputs (clean and
quarantine files, the kept blocked copy), docs (Data Docs), results (`RuleFailure`, `ValidationResult`).
"""

from pipelines.validate.batch import validate_batch
from pipelines.validate.outputs import preserve_blocked
from pipelines.validate.results import REASONS, RuleFailure, ValidationResult

__all__ = ["REASONS", "RuleFailure", "ValidationResult", "preserve_blocked", "validate_batch"]
