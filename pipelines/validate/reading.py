"""Reading a landed batch into a frame the rules can check, or saying why it cannot be read.

Strings become pyarrow-backed `string` columns and numbers numpy dtypes (GX's pandas metrics stay
vectorised); an int column that pandas wrote as float because of a null reads back as (nullable) int;
timestamps come out in UTC (naive ones are taken as UTC). CSV has no types: the contract's string
columns are read as strings and its timestamp columns parsed as ISO 8601 when they parse (if not, the
type rule blocks the batch and shows the values). The landed file is only ever read.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines import storage
from pipelines.validate.messages import show

if TYPE_CHECKING:
    import pandas as pd

    from pipelines.spec import DatasetContract

SUFFIXES = (".parquet", ".pq", ".csv")


class Unreadable(ValueError):
    """The file cannot be read, for a reason that is said better than by the reader's exception."""


def read_batch(path: str, contract: DatasetContract) -> tuple[pd.DataFrame | None, str | None]:
    """The landed frame (arrow strings, numpy numbers, timestamps in UTC), or a message saying why not."""
    import pandas as pd

    where = show(path)
    if not storage.is_file(path):
        return None, (
            f"{where}: file not found (rule readable_file); check that the producer "
            "landed the batch for this interval, then rerun the task."
        )
    suffix = storage.suffix(path).lower()
    if suffix not in SUFFIXES:
        return None, (
            f"{where}: unsupported file type `{storage.suffix(path)}` (rule readable_file); "
            "land the batch as .parquet (or .csv)."
        )
    if storage.size(path) == 0:
        return None, (
            f"{where}: the file is empty (0 bytes) (rule readable_file); the producer "
            "probably crashed while writing it: re-land the batch, then rerun the task."
        )
    try:
        df = read_csv(path, contract) if suffix == ".csv" else read_parquet(path, contract)
    except Unreadable as exc:
        return None, f"{where}: {exc} (rule readable_file); re-land the batch, then rerun the task."
    except Exception as exc:  # noqa: BLE001 - any reader error means "cannot read this file"
        kind = suffix.lstrip(".")
        return None, (
            f"{where}: cannot be read as {kind} ({type(exc).__name__}: {exc}) (rule readable_file); "
            f"the file is truncated or not {kind}: re-land a valid file, then rerun the task."
        )
    df = df.reset_index(drop=True)  # positions are row labels: GX's unexpected_index_list is used as positions
    if suffix == ".csv":
        wrong = wrong_delimiter(list(df.columns))
        if wrong is not None:
            return None, (
                f"{where}: {wrong} (rule readable_file); write it comma-separated (the contract "
                f"{show(contract.path)} expects one column per field), re-land it, then rerun the task."
            )
    for col in contract.columns:
        if col.name not in df.columns:
            continue
        s = df[col.name]
        if col.type == "int" and pd.api.types.is_float_dtype(s.dtype):
            # pandas writes an int column holding a null as float; whole numbers read back as
            # int so that the null is quarantined as a null instead of blocking the batch
            values = s.dropna()
            if bool((values == values.round()).all()) and bool(values.abs().lt(2**53).all()):
                df[col.name] = s.astype("Int64") if s.isna().any() else s.astype("int64")
            continue
        if col.type in ("int", "float") and isinstance(s.dtype, pd.api.extensions.ExtensionDtype):
            # nullable numbers: numpy where possible (GX's range metric is vectorised on numpy only)
            if col.type == "float" and pd.api.types.is_float_dtype(s.dtype):
                df[col.name] = s.astype("float64")
            elif pd.api.types.is_integer_dtype(s.dtype) and not s.isna().any():
                df[col.name] = s.astype("int64")
            continue
        if col.type != "timestamp":
            continue
        if pd.api.types.is_datetime64_any_dtype(s.dtype):
            df[col.name] = s.dt.tz_localize("UTC") if s.dt.tz is None else s.dt.tz_convert("UTC")
        elif suffix == ".csv":
            try:
                df[col.name] = pd.to_datetime(s, utc=True, format="ISO8601")
            except (ValueError, TypeError):
                pass  # left as text: the type rule reports it with examples
    return df, None


def wrong_delimiter(columns: list[str]) -> str | None:
    """'the CSV header is one column `a;b;c`: the file looks ;-delimited' when a CSV was read as one column
    whose name holds another delimiter; None otherwise."""
    if len(columns) != 1:
        return None
    header = str(columns[0])
    delimiter = next((d for d in (";", "\t", "|") if d in header), None)
    if delimiter is None:
        return None
    shown = {"\t": "tab"}.get(delimiter, delimiter)
    return f"the CSV header is one column `{header[:80]}`: the file looks {shown}-delimited"


def arrow_type(contract_type: str) -> Any:
    """The arrow type a contract type is written as (the clean file's schema)."""
    import pyarrow as pa

    return {"string": pa.string(), "int": pa.int64(), "float": pa.float64(), "timestamp": pa.timestamp("ns", tz="UTC")}[
        contract_type
    ]


def read_parquet(path: str, contract: DatasetContract) -> pd.DataFrame:
    import pandas as pd
    import pyarrow as pa

    table = storage.read_table(path)
    types = {c.name: c.type for c in contract.columns}
    for i, field in enumerate(table.schema):
        if pa.types.is_dictionary(field.type):  # a pandas categorical: its values
            table = table.set_column(i, field.name, table.column(i).cast(field.type.value_type))
        elif pa.types.is_null(field.type) and field.name in types:  # all-null: typed as the contract says
            table = table.set_column(i, field.name, table.column(i).cast(arrow_type(types[field.name])))
    arrow_strings = pd.StringDtype("pyarrow")
    mapping = {pa.string(): arrow_strings, pa.large_string(): arrow_strings}
    return table.to_pandas(types_mapper=mapping.get)


def read_csv(path: str, contract: DatasetContract) -> pd.DataFrame:
    with storage.local_copy(path) as local:  # pandas' own reader on a local file: the same errors everywhere
        return _read_local_csv(local, contract)


def _read_local_csv(path: Path, contract: DatasetContract) -> pd.DataFrame:
    import pandas as pd

    with path.open("rb") as fh:
        head = fh.read(4)
    if head[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise Unreadable(
            "the CSV is UTF-16 encoded (byte-order mark); the contract expects UTF-8: re-export it as UTF-8"
        )
    strings = {c.name: pd.StringDtype("pyarrow") for c in contract.columns if c.type == "string"}
    try:
        return pd.read_csv(path, dtype=strings, encoding="utf-8", encoding_errors="strict")  # type: ignore[arg-type]
    except UnicodeDecodeError as exc:
        bad = exc.object[exc.start : exc.start + 1]
        raise Unreadable(
            f"the CSV is not valid UTF-8 (byte 0x{bad.hex()} at offset {exc.start}; latin-1 or another "
            "encoding?): re-export it as UTF-8"
        ) from None
