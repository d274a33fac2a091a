"""What a prediction request holds, checked field by field against the dataset contract.

A request row holds the model's entity keys (the join keys of its FeatureService's views) and its row features
(`features.row` of the spec), typed as the dataset contract types them; optionally the dataset's row id (kept in
the scoring log so that delayed labels join it, as they join batch rows) and its event time (default: the time
of the request; the views' TTL and the features' freshness are measured from it). Other fields are ignored.

Every problem is reported at once, each naming the row, the field, what was found and what is expected, so a
client fixes its request in one go (HTTP 422; never a 500 for bad input).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipelines.spec import ModelSpec

MAX_ROWS = 1000          # rows per request: a bigger batch belongs to batch scoring


class RequestError(Exception):
    """A request the server cannot answer; `status` is its HTTP status, `body` the JSON answer."""

    def __init__(self, status: int, error: str, message: str, detail: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"error": error, "message": message}
        if detail:
            self.body["detail"] = detail


@dataclass(frozen=True)
class FieldRule:
    name: str
    kind: str                 # string | int | float | timestamp (the contract's column types)
    nullable: bool
    required: bool


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 time (a naive one is UTC), or None when it is not one."""
    if not isinstance(value, str):
        return None
    try:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


_EXPECTED = {"string": "a string", "int": "an integer", "float": "a number",
             "timestamp": "an ISO 8601 time such as 2026-03-02T10:15:00Z"}


def _problem(value: Any, rule: FieldRule) -> str | None:
    """What is wrong with `value` for `rule`, or None."""
    if value is None:
        return None if rule.nullable else "is null; the dataset contract says it is never null"
    kind = rule.kind
    if kind == "string":
        ok = isinstance(value, str)
    elif kind == "int":
        ok = (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer())
    elif kind == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))
    else:
        ok = parse_time(value) is not None
    return None if ok else f"is {value!r} ({type(value).__name__}); expected {_EXPECTED[kind]}"


@dataclass(frozen=True)
class RequestSchema:
    """The fields of one model's request rows."""
    model: str
    keys: tuple[FieldRule, ...]          # entity keys of the service's views
    row: tuple[FieldRule, ...]           # the spec's row features
    row_id: str                          # the dataset's row id (optional in a request)
    timestamp: str                       # the dataset's event time (optional; default: now)

    @classmethod
    def of(cls, spec: ModelSpec, join_keys: list[str]) -> RequestSchema:
        def rule(name: str, required: bool, key: bool = False) -> FieldRule:
            try:
                col = spec.dataset.column(name)
            except KeyError:
                raise ValueError(f"{spec.path}: `{name}` is not a column of datasets/{spec.dataset.name}.yaml; the "
                                 "online endpoint types every request field by the contract.") from None
            return FieldRule(name, col.type, nullable=col.nullable and not key, required=required)

        keys = tuple(rule(k, True, key=True) for k in join_keys)
        row = tuple(rule(f, True) for f in spec.row_features if f not in join_keys)
        return cls(spec.name, keys, row, spec.dataset.row_id, spec.dataset.timestamp)

    @property
    def required(self) -> list[str]:
        return [r.name for r in (*self.keys, *self.row)]

    def example(self) -> dict[str, Any]:
        """A row of the right shape (for error messages and docs)."""
        sample = {"string": "text", "int": 1, "float": 1.5, "timestamp": "2026-03-02T10:15:00Z"}
        return {r.name: sample[r.kind] for r in (*self.keys, *self.row)}

    def rows(self, body: Any) -> list[dict[str, Any]]:
        """The request's rows (`{"rows": [...]}`, or one row as `{"row": {...}}`), checked; raises RequestError."""
        if not isinstance(body, dict) or not ({"rows", "row"} & set(body)):
            raise RequestError(422, "invalid_request", 'the body must be a JSON object {"rows": [ {...}, ... ]} '
                               f'(or {{"row": {{...}}}}) whose rows hold {", ".join(self.required)}; e.g. '
                               f'{{"rows": [{_json(self.example())}]}}')
        rows = body.get("rows") if "rows" in body else [body.get("row")]
        if not isinstance(rows, list) or not rows:
            raise RequestError(422, "invalid_request", '`rows` must be a non-empty list of objects')
        if len(rows) > MAX_ROWS:
            raise RequestError(413, "too_many_rows", f"{len(rows)} rows in one request; at most {MAX_ROWS} "
                               "(score bigger sets with batch scoring, or split the request)")
        problems: list[dict[str, Any]] = []
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                problems.append({"row": i, "field": None, "problem": f"is {type(row).__name__}, not an object"})
                continue
            for rule in (*self.keys, *self.row):
                if rule.name not in row:
                    problems.append({"row": i, "field": rule.name, "problem": f"is missing; expected "
                                     f"{_EXPECTED[rule.kind]}"})
                    continue
                why = _problem(row[rule.name], rule)
                if why:
                    problems.append({"row": i, "field": rule.name, "problem": why})
            if self.timestamp in row and row[self.timestamp] is not None and parse_time(row[self.timestamp]) is None:
                problems.append({"row": i, "field": self.timestamp, "problem": f"is {row[self.timestamp]!r}; "
                                 f"expected {_EXPECTED['timestamp']} (or leave it out: the time of the request)"})
            rid = row.get(self.row_id)
            if rid is not None and not isinstance(rid, (str, int)) or isinstance(rid, bool):
                problems.append({"row": i, "field": self.row_id, "problem": f"is {rid!r}; expected a string or an "
                                 "integer (or leave it out: one is generated)"})
        if problems:
            first = problems[0]
            where = f"row {first['row']}, field `{first['field']}`" if first["field"] else f"row {first['row']}"
            more = f" (and {len(problems) - 1} more problem(s) in `detail`)" if len(problems) > 1 else ""
            raise RequestError(422, "invalid_request", f"{self.model}: {where} {first['problem']}{more}", problems)
        return rows


def _json(value: Any) -> str:
    import json

    return json.dumps(value)
