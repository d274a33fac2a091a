"""A first dataset contract drafted from a sample of batch files (`flywheel contract infer`).

The draft is for an engineer to REVIEW, not to trust: every value it could only guess from the sample
carries a `# guessed:` comment saying how, and every decision the sample cannot make a `# REVIEW:`
one. It loads with `pipelines.spec.load_contract` as written, and the gate accepts the sample's own
files with it. How each key is guessed:

- columns: `type` from the file's types (parquet) or the values (CSV: ISO 8601 text is a timestamp); a
  float column whose values are all whole numbers is `int` (pandas writes an int column holding a null
  as float). `nullable` when the sample has a null; then `max_null_share` = the largest share of nulls in
  one file x NULL_FACTOR, at least + NULL_MARGIN (at most MAX_NULL_SHARE). `unique` for string and int
  columns without a repeated value. `allowed` for strings of at most ALLOWED_MAX_VALUES distinct values,
  each seen ALLOWED_MIN_REPEATS times on average, and for ints (codes, flags) of at most CODE_MAX_VALUES
  values seen CODE_MIN_REPEATS times each on average. Other numbers get `min`/`max`: the observed range
  widened by RANGE_MARGIN of its width on each side (never below 0 when no value was), rounded outward;
  identifiers (a name ending in `id`) get no range: new ids are beyond any range seen.
- row_id: a column that is unique and never null in the sample, an id-like name first (one starting
  with the dataset's singular name before the others). When none is unique the best candidate is
  written with a `# REVIEW:` comment: the draft loads, and the gate quarantines the rows sharing an id.
- timestamp: a timestamp column, one named like an event time (`*_ts`, `*_at`, `*time*`, `*date*`) first.
- file_pattern: the sample's file name with the date in it replaced by `{start:<format>}` when every
  sample name carries one; else `<name>_{start:%Y-%m-%d}.<ext>` (`%Y-%m-%dT%H` when hourly).
- cadence: from several files, the median spacing of their interval starts (the dates in their names,
  else their earliest events); from one file, the span of its events (<= 1 h hourly, <= 1 day daily,
  <= 7 days weekly, <= 31 days monthly, else yearly). The guess is then checked the way the gate
  places a file (`pipelines.landing`): one file whose events do not fit in its interval moves the guess
  to the next coarser cadence; several files that do not fit get a `# REVIEW:` comment.
- validation: min_rows = MIN_ROWS_SHARE of the smallest file, max_rows = MAX_ROWS_FACTOR x the largest,
  max_quarantine_share 0.05, distribution severity warn.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    import pandas as pd

SUFFIXES = (".parquet", ".csv")   # what the landing watcher picks up (pipelines/landing.py)
RANGE_MARGIN = 0.10          # min/max: the observed range widened by 10% of its width on each side
NULL_FACTOR, NULL_MARGIN, MAX_NULL_SHARE = 1.5, 0.05, 0.99
ALLOWED_MAX_VALUES, ALLOWED_MIN_REPEATS = 20, 5
CODE_MAX_VALUES, CODE_MIN_REPEATS = 5, 10
MIN_ROWS_SHARE, MAX_ROWS_FACTOR = 0.5, 10
MAX_QUARANTINE_SHARE = 0.05
PLACEHOLDER_OWNER = "owner@example.com"
HOURLY, DAILY, MONTHLY, YEARLY = "0 * * * *", "0 0 * * *", "0 0 1 * *", "0 0 1 1 *"
LEVELS = ("hourly", "daily", "weekly", "monthly", "yearly")
# dates in file names, most precise first: (regex, strptime format)
NAME_DATES = (
    (r"\d{4}-\d{2}-\d{2}T\d{2}", "%Y-%m-%dT%H"),
    (r"\d{4}-\d{2}-\d{2}", "%Y-%m-%d"),
    (r"\d{4}_\d{2}_\d{2}", "%Y_%m_%d"),
    (r"\d{8}", "%Y%m%d"),
    (r"\d{4}-\d{2}", "%Y-%m"),
)
ISO_8601 = r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}(:?\d{2})?)?"
EVENT_TIME_NAME = re.compile(r"(_ts$|^ts$|_at$|time|date)", re.IGNORECASE)


class _Kind(NamedTuple):
    type: str            # the contract type
    values: pd.Series    # the column as that type (CSV timestamps parsed, whole floats as Int64)
    note: str            # how the type was found, when worth saying
    review: bool = False


class InferError(ValueError):
    """The sample cannot be drafted from; the message names the file and says what to do."""


@dataclass(frozen=True)
class Guess:
    """A top-level value of the draft and its comment: `# <tag>: <note>` (guessed, REVIEW or given)."""
    value: Any
    note: str
    tag: str = "guessed"

    @property
    def review(self) -> bool:
        return self.tag == "REVIEW"


@dataclass(frozen=True)
class ColumnGuess:
    name: str
    type: str
    nullable: bool
    rules: dict[str, Any]   # unique, allowed, min, max, max_null_share: as written
    note: str
    review: bool = False

    @property
    def rule_text(self) -> str:
        """The rules in a few words, for the CLI's table."""
        parts = []
        if self.rules.get("unique"):
            parts.append("unique")
        if "allowed" in self.rules:
            shown = ", ".join(str(v) for v in self.rules["allowed"][:6])
            parts.append(f"allowed [{shown}{', ...' if len(self.rules['allowed']) > 6 else ''}]")
        if "min" in self.rules:
            parts.append(f"range [{self.rules['min']}, {self.rules['max']}]")
        if "max_null_share" in self.rules:
            parts.append(f"max_null_share {self.rules['max_null_share']}")
        return ", ".join(parts) or "-"


@dataclass(frozen=True)
class ContractDraft:
    name: str
    files: tuple[Path, ...]
    rows: int
    columns: tuple[ColumnGuess, ...]
    row_id: Guess
    timestamp: Guess
    cadence: Guess
    file_pattern: Guess
    min_rows: Guess
    max_rows: Guess
    owners: Guess

    def to_yaml(self) -> str:
        return _render(self)


def infer_contract(paths: list[Path], name: str, owners: list[str] | None = None) -> str:
    """The YAML text of a draft `datasets/<name>.yaml` for the sample files (or folders of them) `paths`."""
    return draft_contract(paths, name, owners).to_yaml()


def draft_contract(paths: list[Path], name: str, owners: list[str] | None = None) -> ContractDraft:
    """Every guess of the draft (see the module docstring), from the sample files (or folders of them)."""
    import pandas as pd

    if not name.isidentifier():
        raise InferError(f"--name {name!r} must be a Python identifier (it names DAGs and Assets), e.g. ratings.")
    bad = [o for o in owners or [] if "@" not in o]
    if bad:
        raise InferError(f"--owner {bad[0]!r} is not an email address; owners hear about blocked batches.")
    files = sample_files(paths)
    frames = [read_sample(f) for f in files]
    for f, df in zip(files[1:], frames[1:], strict=True):
        if list(df.columns) != list(frames[0].columns):
            missing, extra = set(frames[0].columns) - set(df.columns), set(df.columns) - set(frames[0].columns)
            raise InferError(f"{f}: its columns differ from {files[0].name}'s (missing {sorted(missing)}, extra "
                             f"{sorted(extra)}); a sample is batches of one dataset: pass files of one shape.")
    csv = any(f.suffix.lower() == ".csv" for f in files)
    union = pd.concat(frames, ignore_index=True)
    sizes = [len(df) for df in frames]
    where = files[0] if len(files) == 1 else files[0].parent
    kinds = {str(c): _kind(union[c], csv) for c in union.columns}
    timestamp = _timestamp(kinds, where)
    row_id = _row_id(kinds, name)
    offsets = [0, *accumulate(sizes)]
    columns = tuple(_column(c, k, [k.values.iloc[a:b] for a, b in zip(offsets, offsets[1:], strict=False)],
                            is_row_id=c == row_id.value) for c, k in kinds.items())
    ts = kinds[timestamp.value].values
    spans = []
    for i, f in enumerate(files):
        part = ts.iloc[offsets[i]:offsets[i + 1]].dropna()
        if part.empty:
            raise InferError(f"{f}: `{timestamp.value}` is null in every row; each row needs its event time: fix "
                             "the export (or leave this file out of the sample), then rerun.")
        spans.append((f, _utc(part.min()), _utc(part.max())))
    ext = files[0].suffix.lower() if len({f.suffix.lower() for f in files}) == 1 else ".parquet"
    named = _name_pattern(files, ext)
    cadence = _cadence(spans, named.value if named else None)
    if named is None:
        fmt = "%Y-%m-%dT%H" if cadence.value == HOURLY else "%Y-%m-%d"
        why = "the sample's names carry" if len(files) > 1 else f"the sample's name {files[0].name} carries"
        named = Guess(f"{name}_{{start:{fmt}}}{ext}", f"default: {why} no date of the interval start")
    smallest, largest = min(sizes), max(sizes)
    min_rows = max(1, math.floor(smallest * MIN_ROWS_SHARE))
    return ContractDraft(
        name=name, files=tuple(files), rows=len(union), columns=columns, row_id=row_id, timestamp=timestamp,
        cadence=cadence, file_pattern=named,
        min_rows=Guess(min_rows, f"{MIN_ROWS_SHARE:g} x the smallest sample file ({smallest} rows): fewer is a "
                                 "cut-short export"),
        max_rows=Guess(max(largest * MAX_ROWS_FACTOR, min_rows), f"{MAX_ROWS_FACTOR} x the largest sample file "
                                                                 f"({largest} rows): more is a runaway export"),
        owners=Guess(tuple(owners), "from --owner", tag="given") if owners else
        Guess((PLACEHOLDER_OWNER,), "placeholder: the owners hear about blocked batches", tag="REVIEW"),
    )


# ------------------------------------------------------------------------------------------------
# reading


def sample_files(paths: list[Path]) -> list[Path]:
    """The .parquet/.csv files of `paths` (a folder stands for its files, not recursively), sorted by name."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in SUFFIXES)
            if not found:
                raise InferError(f"{p}: no .parquet or .csv file in this folder; pass a sample batch file or a "
                                 "folder of them.")
            files += found
        elif not p.is_file():
            raise InferError(f"{p}: no such file or folder; pass a sample batch file (.parquet or .csv) or a "
                             "folder of them.")
        elif p.suffix.lower() not in SUFFIXES:
            raise InferError(f"{p}: unsupported file type `{p.suffix}`; a batch is .parquet or .csv.")
        else:
            files.append(p)
    if not files:
        raise InferError("no sample file given; pass a batch file (.parquet or .csv) or a folder of them.")
    return files


def read_sample(path: Path) -> pd.DataFrame:
    """One sample file as the gate reads it (UTF-8, comma-separated CSV; parquet), or InferError saying why not."""
    import pandas as pd

    from pipelines.validate.reading import wrong_delimiter

    kind = "csv" if path.suffix.lower() == ".csv" else "parquet"
    if path.stat().st_size == 0:
        raise InferError(f"{path}: the file is empty (0 bytes); export a sample with a header and rows, then rerun.")
    try:
        if kind == "csv":
            df = pd.read_csv(path, encoding="utf-8", encoding_errors="strict")
        else:
            df = pd.read_parquet(path)
    except UnicodeDecodeError as exc:
        raise InferError(f"{path}: not valid UTF-8 (byte at offset {exc.start}); re-export the sample as UTF-8 "
                         "(the gate reads UTF-8 only), then rerun.") from None
    except pd.errors.EmptyDataError:
        raise InferError(f"{path}: no header and no rows; export a sample with a header and rows, then rerun.") \
            from None
    except Exception as exc:  # noqa: BLE001 - any reader error means "cannot read this file"
        raise InferError(f"{path}: cannot be read as {kind} ({type(exc).__name__}: {exc}); the file is truncated "
                         f"or not {kind}: export a valid sample, then rerun.") from None
    wrong = wrong_delimiter([str(c) for c in df.columns]) if kind == "csv" else None
    if wrong is not None:
        raise InferError(f"{path}: {wrong}; the gate reads comma-separated CSV: re-export it with commas (or as "
                         "parquet), then rerun.")
    if df.empty:
        raise InferError(f"{path}: a header but no rows; a contract is inferred from values: export a sample "
                         "with rows, then rerun.")
    for c in df.columns:
        if isinstance(df[c].dtype, pd.CategoricalDtype):  # a pandas categorical: its values
            df[c] = df[c].astype(df[c].cat.categories.dtype)
    return df


# ------------------------------------------------------------------------------------------------
# columns


def _kind(s: pd.Series, csv: bool) -> _Kind:
    """The column's contract type, from its dtype (CSV: also its text)."""
    import pandas as pd

    values = s.dropna()
    if values.empty:
        return _Kind("string", s, "null in every sample row: the type is unknown and the gate blocks a batch "
                                  "whose column is all null; declare the real type", True)
    if pd.api.types.is_bool_dtype(s.dtype):
        return _Kind("int", s.astype("Int64"), "true/false values: the contract has no boolean type; export "
                                               "the column as 0/1 ints (the gate does not read booleans as int)", True)
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        return _Kind("timestamp", s, "")
    if pd.api.types.is_integer_dtype(s.dtype):
        return _Kind("int", s, "")
    if pd.api.types.is_float_dtype(s.dtype):
        if bool((values == values.round()).all()) and bool(values.abs().lt(2**53).all()):
            return _Kind("int", s.astype("Int64"), "int: every value is a whole number (pandas writes an int "
                                                   "column holding a null as float); if it is a measure, make it float")
        return _Kind("float", s, "")
    if all(isinstance(v, str) for v in values):
        if csv and bool(values.str.fullmatch(ISO_8601).all()):
            try:
                return _Kind("timestamp", pd.to_datetime(s, utc=True, format="ISO8601"), "ISO 8601 text")
            except (ValueError, TypeError):
                pass
        return _Kind("string", s, "")
    if all(isinstance(v, datetime) for v in values):
        return _Kind("timestamp", pd.to_datetime(s, utc=True), "")
    kinds = sorted({type(v).__name__ for v in values})
    return _Kind("string", s, f"values of kind(s) {kinds}: not text; declare the type the producer means", True)


def _id_like(name: str) -> bool:
    return name.lower().endswith("id")


def _column(name: str, kind: _Kind, per_file: list[pd.Series], is_row_id: bool) -> ColumnGuess:
    """The column's rules (see the module docstring); `per_file`: its values file by file (null shares)."""
    ctype, s, review = kind.type, kind.values, kind.review
    values = s.dropna()
    notes = [kind.note] if kind.note else []
    rules: dict[str, Any] = {}
    distinct = values.nunique()
    if ctype in ("string", "int") and len(values) >= 2 and distinct == len(values):
        rules["unique"] = True
        notes.append("unique in the sample")
    elif ctype == "string" and 0 < distinct <= ALLOWED_MAX_VALUES and len(values) >= ALLOWED_MIN_REPEATS * distinct:
        rules["allowed"] = sorted(str(v) for v in values.unique())
        notes.append(f"the {distinct} values seen")
    elif ctype == "int" and not _id_like(name) and 0 < distinct <= CODE_MAX_VALUES \
            and len(values) >= CODE_MIN_REPEATS * distinct:
        rules["allowed"] = sorted(int(v) for v in values.unique())
        notes.append(f"a code or flag: the {distinct} values seen")
    elif ctype == "string" and distinct:
        notes.append(f"{distinct} distinct values: too many for `allowed`")
    if ctype in ("int", "float") and "allowed" not in rules and not values.empty:
        if _id_like(name) or is_row_id:
            notes.append("an identifier: no range")
        else:
            lo, hi = float(values.min()), float(values.max())
            rules["min"], rules["max"] = _widen(lo, hi, ctype == "int")
            notes.append(f"observed [{_num(lo)}, {_num(hi)}] widened by {RANGE_MARGIN:.0%} of the range")
    nulls = [float(part.isna().mean()) for part in per_file if len(part)]
    nullable = bool(s.isna().any())
    if nullable and not values.empty:
        seen = max(nulls)
        wanted = max(seen * NULL_FACTOR, seen + NULL_MARGIN)
        share = min(MAX_NULL_SHARE, math.ceil(round(wanted * 100, 6)) / 100)   # up to the percent
        rules["max_null_share"] = share
        notes.append(f"null in {seen:.1%} of a file's rows at most, so max_null_share {share:g} "
                     f"(x{NULL_FACTOR:g}, at least +{NULL_MARGIN:g})")
        if share <= seen:
            notes.append("the sample has more nulls than any share below 1 allows")
            review = True
    elif nullable:
        notes.append("nullable")
    return ColumnGuess(name, ctype, nullable, rules, "; ".join(notes), review)


def _widen(lo: float, hi: float, integer: bool) -> tuple[float | int, float | int]:
    """[lo, hi] widened by RANGE_MARGIN of its width (of |value| when flat) each side, rounded outward."""
    margin = RANGE_MARGIN * (hi - lo) or RANGE_MARGIN * max(abs(lo), abs(hi)) or 1.0
    step = 10.0 ** math.floor(math.log10(margin))
    if integer:
        step = max(step, 1.0)
    low = math.floor((lo - margin) / step) * step
    high = math.ceil((hi + margin) / step) * step
    if lo >= 0:
        low = max(low, 0.0)
    digits = max(0, -math.floor(math.log10(step)))
    if integer:
        return int(low), int(high)
    return round(low, digits), round(high, digits)


def _num(v: float) -> str:
    return f"{v:.6g}"


# ------------------------------------------------------------------------------------------------
# row id, timestamp


def _timestamp(kinds: dict[str, _Kind], where: Path) -> Guess:
    candidates = [c for c, k in kinds.items() if k.type == "timestamp"]
    if not candidates:
        raise InferError(f"{where}: no timestamp column among {', '.join(map(str, kinds))}; a dataset needs the "
                         "event time of each row (the contract's `timestamp`): add one to the export, as a parquet "
                         "timestamp or ISO 8601 text in a CSV (e.g. 2026-01-05T10:00:00Z; epoch numbers: convert "
                         "them), then rerun.")

    def score(c: str) -> tuple[int, int, int]:
        return (kinds[c].values.isna().any(), not EVENT_TIME_NAME.search(c), "event" not in c.lower())

    best = sorted(candidates, key=score)[0]
    others = [c for c in candidates if c != best]
    why = "the only timestamp column" if not others else \
        f"named like an event time, of the timestamp columns {', '.join(candidates)}"
    return Guess(best, why, tag="REVIEW" if others else "guessed")


def _row_id(kinds: dict[str, _Kind], name: str) -> Guess:
    singular = name.lower().rstrip("s")
    typed = {c: k.values for c, k in kinds.items()}
    keyed = [c for c, k in kinds.items() if k.type in ("string", "int")]

    def rank(c: str) -> tuple[bool, bool]:
        return (not _id_like(c), not c.lower().startswith(singular))

    unique = [c for c in keyed if typed[c].notna().all() and typed[c].is_unique]
    if unique:
        best = sorted(unique, key=rank)[0]
        return Guess(best, "unique and never null in the sample" + (", an id-like name" if _id_like(best) else ""))
    pool = keyed or list(typed)
    best = sorted(pool, key=lambda c: (*rank(c), -typed[c].nunique()))[0]
    repeated = len(typed[best]) - typed[best].nunique()
    return Guess(best, f"no column is unique and never null in the sample; `{best}` is the best candidate but "
                       f"{repeated} of its rows repeat an id or are null: the gate quarantines them. Add a unique "
                       "id column to the export, or name the one that is", tag="REVIEW")


# ------------------------------------------------------------------------------------------------
# file pattern, cadence


def _name_pattern(files: list[Path], ext: str) -> Guess | None:
    """`x_{start:%Y-%m}.csv` from `x_2015-03.csv`, when every sample name carries a date in the same place."""
    from pipelines.landing import start_from_name

    stem = re.sub(r"\.[A-Za-z0-9]+$", "", files[0].name)
    for regex, fmt in NAME_DATES:
        for m in re.finditer(rf"(?<!\d){regex}(?!\d)", stem):
            try:
                datetime.strptime(m.group(0), fmt)
            except ValueError:
                continue
            pattern = f"{_braces(stem[:m.start()])}{{start:{fmt}}}{_braces(stem[m.end():])}{ext}"
            stub = _stub(pattern)
            if all(start_from_name(stub, f.name) is not None for f in files):
                return Guess(pattern, f"from the sample's name{'s' if len(files) > 1 else ''} "
                                      f"({files[0].name}: the date in it is the interval start)")
    return None


def _braces(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def _stub(pattern: str) -> Any:
    from pipelines.spec import DatasetContract

    return DatasetContract(name="draft", file_pattern=pattern, row_id="", columns=(), path=Path("draft.yaml"))


def _cadence(spans: list[tuple[Path, datetime, datetime]], pattern: str | None) -> Guess:
    from pipelines.landing import start_from_name

    stub = _stub(pattern) if pattern else None
    named = {f: start_from_name(stub, f.name) if stub else None for f, _, _ in spans}
    firsts = sorted({named[f] or first for f, first, _ in spans})
    from_names = all(named.values())
    if len(firsts) > 1:
        gaps = sorted(b - a for a, b in zip(firsts, firsts[1:], strict=False))
        spacing = gaps[len(gaps) // 2]
        level = _level(spacing, (timedelta(hours=1.5), timedelta(days=1.5), timedelta(days=10), timedelta(days=45)))
        how = (f"from {len(spans)} files whose {'names' if from_names else 'earliest events'} are "
               f"{_span(spacing)} apart (median)")
        levels = [level]   # coarser would put several files in one interval
    else:
        span = max(last for _, _, last in spans) - min(first for _, first, _ in spans)
        level = _level(span, (timedelta(hours=1), timedelta(days=1), timedelta(days=7), timedelta(days=31)))
        how = f"from one interval of events spanning {_span(span)}"
        levels = list(range(level, len(LEVELS)))
    name_start, first_event = named[spans[0][0]], spans[0][1]
    for lvl in levels:
        for cron in _crons(lvl, name_start, first_event):
            if _misfit(cron, spans, named) is None:
                bumped = "" if lvl == level else f" ({LEVELS[level]} did not hold the events in one interval)"
                tag = "REVIEW" if lvl == len(LEVELS) - 1 else "guessed"  # a year per file: unusual
                return Guess(cron, f"{LEVELS[lvl]}{_anchor(cron)}; {how}{bumped}", tag)
    cron = _crons(levels[0], name_start, first_event)[0]
    bad = _misfit(cron, spans, named)
    return Guess(cron, f"{LEVELS[levels[0]]}{_anchor(cron)}; {how}, but the events of {bad} do not fit in one "
                       "interval of it (rows outside their file's interval are quarantined): check the cadence "
                       "and the files", tag="REVIEW")


def _level(d: timedelta, bounds: tuple[timedelta, ...]) -> int:
    return next((i for i, b in enumerate(bounds) if d <= b), len(bounds))


def _crons(level: int, name_start: datetime | None, first_event: datetime) -> list[str]:
    """A level's cron expressions to try: the name's day first (it is the interval start), then the usual
    one (weeks from Monday, months from the 1st), then the earliest event's day."""
    if level in (0, 1, 4):
        return [(HOURLY, DAILY, "", "", YEARLY)[level]]
    out = []
    for day in (*([name_start] if name_start else []), None, first_event):   # None: the usual one
        if level == 2:  # cron weekdays: 0 is Sunday
            out.append("0 0 * * 1" if day is None else f"0 0 * * {(day.weekday() + 1) % 7}")
        elif day is None or day.day <= 28:
            out.append(MONTHLY if day is None else f"0 0 {day.day} * *")
    return list(dict.fromkeys(out))


def _misfit(cron: str, spans: list[tuple[Path, datetime, datetime]], named: dict[Path, datetime | None]) \
        -> str | None:
    """The first file whose events do not fit in the interval the gate gives it (None: they all fit)."""
    from pipelines.landing import next_tick, previous_tick

    for f, first, last in spans:
        start = named[f] or previous_tick(cron, first)
        if not (start <= first and last < next_tick(cron, start)):
            return f.name
    return None


def _anchor(cron: str) -> str:
    days = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
    fields = cron.split()
    if fields[4] != "*":
        return f" ({days[int(fields[4])]} to {days[int(fields[4])]}, UTC)"
    if fields[2] != "*" and fields[3] == "*":
        return f" (from day {fields[2]} of a month, UTC)"
    return " (UTC)"


def _span(d: timedelta) -> str:
    days = d / timedelta(days=1)
    if days >= 1:
        return f"{days:.3g} day{'s' if days != 1 else ''}"
    hours = d / timedelta(hours=1)
    return f"{hours:.3g} hour{'s' if hours != 1 else ''}"


def _utc(ts: Any) -> datetime:
    value: datetime = ts.to_pydatetime()
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# ------------------------------------------------------------------------------------------------
# the YAML text


def _scalar(value: Any) -> str:
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=1 << 20, allow_unicode=True)
    return text.strip().removesuffix("...").strip()


def _line(text: str, note: str = "", tag: str = "guessed", width: int = 44) -> str:
    if not note:
        return text
    return f"{text:<{width}}  # {tag}: {note}"


def _render(d: ContractDraft) -> str:
    shown = ", ".join(f.name for f in d.files[:4]) + (f" and {len(d.files) - 4} more" if len(d.files) > 4 else "")
    out = [
        f"# DRAFT contract of the dataset `{d.name}`, inferred by `flywheel contract infer` from",
        f"# {len(d.files)} sample file(s) ({shown}; {d.rows} rows).",
        "# Review it before relying on it: `# guessed:` says how the sample suggested a value, `# REVIEW:`",
        "# marks a decision the sample cannot make. Every key and rule is explained in datasets/transactions.yaml",
        "# and pipelines/validate/__init__.py. Then run `flywheel check`, and",
        f"# `flywheel validate FILE --dataset {d.name}` on a batch.",
        f"name: {d.name}",
        _line(f"description: {_scalar('TODO: what one row is, who exports it, how often')}",
              "say what the dataset is", "REVIEW"),
        "owners:",
        *(_line(f"  - {_scalar(o)}", d.owners.note if i == 0 else "", d.owners.tag)
          for i, o in enumerate(d.owners.value)),
        _line(f"file_pattern: {json.dumps(d.file_pattern.value)}", d.file_pattern.note, d.file_pattern.tag),
        _line(f"row_id: {_scalar(d.row_id.value)}", d.row_id.note, d.row_id.tag),
        _line(f"timestamp: {_scalar(d.timestamp.value)}", d.timestamp.note, d.timestamp.tag),
        _line(f"cadence: {json.dumps(d.cadence.value)}", d.cadence.note, d.cadence.tag),
        "columns:",
    ]
    for c in d.columns:
        rules = {"type": c.type, "nullable": c.nullable, **c.rules}
        out.append(_line(f"  {_scalar(c.name)}: {_scalar(rules)}", c.note, "REVIEW" if c.review else "guessed"))
    out += [
        "validation:",
        _line(f"  max_quarantine_share: {MAX_QUARANTINE_SHARE}", "more bad rows than 5% block a batch", "default"),
        _line(f"  min_rows: {d.min_rows.value}", d.min_rows.note, d.min_rows.tag),
        _line(f"  max_rows: {d.max_rows.value}", d.max_rows.note, d.max_rows.tag),
        "  distribution:",
        _line("    severity: warn", "the float columns vs the last accepted batches (not blocking)",
              "default"),
    ]
    return "\n".join(out) + "\n"
