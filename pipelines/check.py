"""`flywheel check`: every dataset contract, model spec and feature declaration, checked together.

Each file is loaded on its own by its own loader (`load_contract`, `load_spec`, `load_repo`), so one bad
file does not hide the others: a loader's SpecError becomes one `Problem` of its file, with the key it
names (`load_repo` lists every problem of the definitions, one per view). Then what no single loader
can see, each its own Problem of the model spec:

- `features.service` is not a FeatureService of the feature repo;
- a view of the service aggregates another dataset than the model's `dataset:` (its join keys are looked
  up in the model's rows), or is keyed by a column the model's dataset lacks;
- a view's lookback (its largest aggregation window) is longer than `training.window_days`;
- no view of the service is keyed by the model's `entity_key`;
- a `future_sum` label (one row per entity) with views keyed by other columns too;
- two specs declaring the same model name.

A spec that does not load still has its cross-checks run from its raw keys, so a wrong metric does not
hide a missing service. A dataset nobody reads is not a problem: it is a note (a dataset being onboarded).
The definitions are read fresh (`load_repo`), never through `view_index`'s cache.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pipelines.spec import CONTRACT_KEYS, MODEL_KEYS, SpecError

if TYPE_CHECKING:
    from pipelines.features.declarations import FeatureRepo
    from pipelines.spec import DatasetContract, ModelSpec

T = TypeVar("T")
FILE = "(file)"   # the key of a problem with the file as a whole


@dataclass(frozen=True)
class Problem:
    """One problem: the file to edit, the key in it (`metric.primary`, `columns.amount`, `view x`) and what is wrong."""
    file: Path
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.key}: {self.message}"


@dataclass(frozen=True)
class CheckReport:
    problems: tuple[Problem, ...]
    datasets: int          # contract files checked
    models: int            # spec files checked
    views: int             # feature views declared
    notes: tuple[str, ...]  # worth knowing, not wrong (a dataset nobody reads yet)


@dataclass(frozen=True)
class _View:
    name: str
    dataset: str | None
    join_keys: tuple[str, ...]
    lookback: timedelta


@dataclass(frozen=True)
class _Model:
    """What the cross-checks need of a spec: from the loaded ModelSpec, else from its raw keys (None: absent)."""
    path: Path
    name: str | None
    dataset: str | None
    entity_key: str | None
    service: str | None
    window_days: int | None
    label_kind: str | None
    golden: tuple[Any, ...] = ()     # the spec's golden sets (pipelines/release/specs.GoldenSpec)


def check_project(datasets_dir: Path, models_dir: Path, repo_path: Path) -> list[Problem]:
    """Every problem of the contracts, the specs and the feature declarations, each with its file and key."""
    return list(check_report(datasets_dir, models_dir, repo_path).problems)


def check_report(datasets_dir: Path, models_dir: Path, repo_path: Path) -> CheckReport:
    """`check_project` with what was checked (counts) and notes."""
    problems: list[Problem] = []
    contracts, broken = _load_contracts(Path(datasets_dir), problems)
    models = _load_models(Path(models_dir), Path(datasets_dir), broken, problems)
    views, services = _load_features(Path(repo_path), contracts, broken, problems)
    where = Path(repo_path) / "definitions.py"
    seen: dict[str, Path] = {}
    for m in models:
        if m.name is not None and m.name in seen:
            problems.append(Problem(m.path, "name", f"model name {m.name!r} is already declared in {seen[m.name]}; "
                                                    "each model needs its own name (it names its DAGs and its "
                                                    "registered model)."))
        elif m.name is not None:
            seen[m.name] = m.path
        if services is not None:
            problems += _cross_check(m, views, services, contracts, where)
        problems += _golden_problems(m)
    read = {m.dataset for m in models} | {v.dataset for v in views.values()}
    notes = tuple(f"{c.path}: no model or feature view reads dataset `{name}` yet (fine while it is onboarded)."
                  for name, c in sorted(contracts.items()) if name not in read)
    problems.sort(key=lambda p: str(p.file))   # grouped by file, in the order found within one
    specs = len(list(Path(models_dir).glob("*.yaml"))) if Path(models_dir).is_dir() else 0
    return CheckReport(tuple(problems), len(contracts) + len(broken), specs, len(views), notes)


# ------------------------------------------------------------------------------------------------
# one file at a time


def _load_contracts(directory: Path, problems: list[Problem]) -> tuple[dict[str, DatasetContract], dict[str, Path]]:
    """The contracts that load, by name; and the files that do not, by their stem (their problem is listed)."""
    from pipelines.spec import load_contract

    contracts: dict[str, DatasetContract] = {}
    broken: dict[str, Path] = {}
    if not directory.is_dir():
        problems.append(Problem(directory, FILE, "no such folder of dataset contracts; pass --datasets DIR."))
        return contracts, broken
    for path in sorted(directory.glob("*.yaml")):
        contract, problem = _loading(path, load_contract)
        if contract is not None:
            contracts[contract.name] = contract
        else:
            problems.append(problem or Problem(path, FILE, "does not load."))
            broken[path.stem] = path
    return contracts, broken


def _load_models(directory: Path, datasets_dir: Path, broken: dict[str, Path],
                 problems: list[Problem]) -> list[_Model]:
    import yaml

    from pipelines.spec import load_spec

    models: list[_Model] = []
    if not directory.is_dir():
        problems.append(Problem(directory, FILE, "no such folder of model specs; pass --models DIR."))
        return models
    for path in sorted(directory.glob("*.yaml")):
        spec, problem = _loading(path, lambda p: load_spec(p, datasets_dir))
        try:
            raw = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            raw = None
        model = _model(path, spec, raw)
        if problem is not None:
            contract = broken.get(model.dataset or "")
            if contract is not None and problem.file == contract:   # the contract's problem, not the spec's
                problem = Problem(path, "dataset", f"the contract {contract} of dataset `{model.dataset}` does not "
                                                   "load (its problem is listed under that file); this spec is "
                                                   "checked in full once it does.")
            problems.append(Problem(path, problem.key, problem.message) if problem.file != path else problem)
        if raw is not None or spec is not None:
            models.append(model)
    return models


def _loading(path: Path, load: Callable[[Path], T]) -> tuple[T | None, Problem | None]:
    """(what `load(path)` returns, None), or (None, the Problem it raised: the file its message names, the key)."""
    import yaml

    try:
        return load(path), None
    except SpecError as exc:
        return None, _problem(str(exc), path)
    except yaml.YAMLError as exc:
        return None, Problem(path, FILE, f"not valid YAML ({' '.join(str(exc).split())}); fix the syntax.")
    except Exception as exc:  # noqa: BLE001 - a loader tripping over a malformed value: said, with the file
        return None, Problem(path, FILE, f"cannot be loaded ({type(exc).__name__}: {exc}); a key probably has the "
                                         "wrong shape (a mapping where a list is expected, or the reverse): compare "
                                         "it with datasets/transactions.yaml or models/fraud.yaml.")


def _model(path: Path, spec: ModelSpec | None, raw: Any) -> _Model:
    if spec is not None:
        return _Model(path, spec.name, spec.dataset.name, spec.entity_key, spec.feature_service, spec.window_days,
                      spec.label.kind, spec.golden)
    raw = raw if isinstance(raw, dict) else {}

    def text(section: Any, key: str, default: str | None = None) -> str | None:
        value = section.get(key, default) if isinstance(section, dict) else None
        return value if isinstance(value, str) else None

    training = raw.get("training")
    days = training.get("window_days") if isinstance(training, dict) else None
    return _Model(path, text(raw, "name"), text(raw, "dataset"), text(raw, "entity_key"),
                  text(raw.get("features"), "service"),
                  days if isinstance(days, int) and not isinstance(days, bool) else None,
                  text(raw.get("label"), "kind", "column"))


# the key a loader's message is about: (pattern of the message after "<file>: ", key template)
_KEYS = (
    (r"required key `([^`]+)` is missing", "{0}"),
    (r"column `([^`]+)`", "columns.{0}"),
    (r"`([^`]+)`", "{0}"),
    (r"the label `[^`]+` cannot also be a row feature", "features.row"),
    (r"the file must be named after the dataset", "name"),
    (r"dataset contract .* not found", "dataset"),
    (r"([A-Za-z_]\w*(?:\.\w+)*)[ =]", "{0}"),
)


def _problem(message: str, path: Path) -> Problem:
    """A loader's message as a Problem: the file it names (the first thing it says), the key it is about."""
    file, text = path, message
    m = re.match(r"(\S+?\.ya?ml): ", message)
    if message.startswith(f"{path}: "):
        text = message[len(f"{path}: "):]
    elif m:   # another file's problem (the contract a spec reads)
        file, text = Path(m.group(1)), message[m.end():]
    unknown = re.match(r"unknown key\(s\) \[([^\]]*)\]( in `(\w+)`)?", text)
    if unknown:
        names = [n.removeprefix(f"{unknown.group(3)}.") for n in re.findall(r"'([^']+)'", unknown.group(1))]
        prefix = f"{unknown.group(3)}." if unknown.group(3) else ""
        return Problem(file, ", ".join(prefix + n for n in names) or FILE, text)
    for pattern, template in _KEYS:
        km = re.match(pattern, text)
        if km is None:
            continue
        key = template.format(*km.groups())
        if "{0}" in template and key.split(".")[0] not in (*MODEL_KEYS, *CONTRACT_KEYS, "columns"):
            continue
        said = re.match(rf"`?{re.escape(key)}`? ", text)   # "metric.primary 'x' does not fit": said once
        return Problem(file, key, text[said.end():] if said else text)
    return Problem(file, FILE, text)


# ------------------------------------------------------------------------------------------------
# feature declarations


def _load_features(repo_path: Path, contracts: dict[str, DatasetContract], broken: dict[str, Path],
                   problems: list[Problem]) -> tuple[dict[str, _View], dict[str, tuple[str, ...]] | None]:
    """The declared views and services (services None: the definitions cannot be read at all)."""
    from pipelines.features.declarations import DEFINITIONS, load_repo

    where = repo_path / DEFINITIONS
    if not where.is_file():
        problems.append(Problem(where, FILE, "not found; pass --feature-repo DIR, the folder of the Feast "
                                             "definitions (definitions.py)."))
        return {}, None
    try:
        return _index_of(load_repo(repo_path, contracts))
    except SpecError as exc:
        problems += _repo_problems(str(exc), where, broken)
    except Exception as exc:  # noqa: BLE001 - definitions that do not even import: said, with the file
        problems.append(Problem(where, FILE, f"cannot be imported ({type(exc).__name__}: {exc}); fix the Python "
                                             "(or the Feast objects it builds), then run `flywheel check` again."))
        return {}, None
    return _declared(repo_path)


def _index_of(repo: FeatureRepo) -> tuple[dict[str, _View], dict[str, tuple[str, ...]]]:
    views = {v.name: _View(v.name, v.dataset, v.join_keys, v.lookback) for v in repo.views.values()}
    return views, dict(repo.services)


def _declared(repo_path: Path) -> tuple[dict[str, _View], dict[str, tuple[str, ...]]]:
    """Views and services as declared, when `load_repo` found problems (it returns nothing then): the same
    dataset tag, entities' join keys and largest window it reads, without its checks."""
    from feast import Entity, FeatureService, FeatureView

    from pipelines.features.declarations import DATASET_TAG, _module

    objects = list(vars(_module(repo_path)).values())
    keys = {o.name: o.join_key for o in objects if isinstance(o, Entity)}
    views = {}
    for fv in (o for o in objects if isinstance(o, FeatureView)):
        windows = [a.time_window for a in getattr(fv, "aggregations", None) or [] if a.time_window]
        views[fv.name] = _View(fv.name, (fv.tags or {}).get(DATASET_TAG),
                               tuple(keys[e] for e in fv.entities if e in keys), max(windows, default=timedelta(0)))
    services = {s.name: tuple(p.name for p in s.feature_view_projections)
                for s in objects if isinstance(s, FeatureService)}
    return views, services


def _repo_problems(message: str, where: Path, broken: dict[str, Path]) -> list[Problem]:
    """`load_repo`'s one SpecError, one Problem per line: key `view <name>` or `FeatureService <name>`."""
    out = []
    for line in message.split("\n  - ")[1:]:
        text = line.removeprefix(f"{where}: ")
        m = re.match(r"(view|FeatureService) (\S+?):? ", text)
        key = f"{m.group(1)} {m.group(2)}" if m else FILE
        if m and m.group(1) == "view":
            text = text[m.end():]
        tag = re.search(r"must name a dataset of datasets/ .*, got '(\w+)'\.$", text)
        if tag and tag.group(1) in broken:
            text = (f"reads dataset `{tag.group(1)}`, whose contract {broken[tag.group(1)]} does not load (its "
                    "problem is listed under that file); the view is checked in full once it does.")
        out.append(Problem(where, key, text))
    return out


# ------------------------------------------------------------------------------------------------
# across files


def _cross_check(m: _Model, views: dict[str, _View], services: dict[str, tuple[str, ...]],
                 contracts: dict[str, DatasetContract], where: Path) -> list[Problem]:
    out: list[Problem] = []
    if m.service is None:
        return out   # load_spec says it is missing
    if m.service not in services:
        out.append(Problem(m.path, "features.service", f"{m.service!r} is not a FeatureService of {where} "
                                                       f"(declared: {', '.join(sorted(services)) or 'none'}); "
                                                       "declare it there or fix the name."))
        return out
    used = [views[v] for v in services[m.service] if v in views]
    contract = contracts.get(m.dataset or "")
    for v in used:
        if m.dataset and v.dataset and v.dataset != m.dataset:
            out.append(Problem(m.path, "features.service", f"view {v.name} of {m.service} aggregates dataset "
                                                           f"`{v.dataset}`, but the model reads `{m.dataset}`: a "
                                                           "view's features are joined to the model's rows by its "
                                                           f"keys; use views over `{m.dataset}` (tag "
                                                           "flywheel.dataset) or read that dataset."))
            for k in v.join_keys:
                if contract is not None and k not in contract.column_names:
                    out.append(Problem(m.path, "features.service",
                                       f"view {v.name} of {m.service} is keyed by `{k}`, which is not a column of "
                                       f"{contract.path.name} ({', '.join(contract.column_names)}): its features "
                                       "cannot be joined to the model's rows."))
        if m.window_days is not None and v.lookback > timedelta(days=m.window_days):
            days = math.ceil(v.lookback / timedelta(days=1))
            out.append(Problem(m.path, "training.window_days",
                               f"{m.window_days} days is shorter than the lookback of view {v.name} "
                               f"({_days(v.lookback)}, its largest aggregation window): the model would train on "
                               f"less history than one of its features summarises; make it at least {days} or "
                               "shorten the view's windows."))
    keys = sorted({k for v in used for k in v.join_keys})
    if m.entity_key and used and m.entity_key not in keys:
        out.append(Problem(m.path, "entity_key", f"`{m.entity_key}` keys none of the views of {m.service} (they "
                                                 f"are keyed by {', '.join(keys)}): the model would predict per "
                                                 f"`{m.entity_key}` from features of other entities; use a service "
                                                 f"with a view keyed by `{m.entity_key}`, or fix entity_key."))
    extra = [k for k in keys if k != m.entity_key]
    if m.label_kind == "future_sum" and m.entity_key in keys and extra:
        out.append(Problem(m.path, "label.kind", f"a future_sum label has one row per `{m.entity_key}`, but the "
                                                 f"views of {m.service} are also keyed by {', '.join(extra)}; use a "
                                                 f"service whose views are keyed by `{m.entity_key}` only."))
    return out


def _golden_problems(m: _Model) -> list[Problem]:
    """A golden set the gate would refuse: its file missing, or not the bytes the spec froze."""
    from pipelines.util import sha256_file

    out = []
    for i, g in enumerate(m.golden):
        if not g.file.is_file():
            out.append(Problem(m.path, f"golden[{i}].file", f"{g.file} does not exist; every challenger would be "
                                                            "refused (the gate fails closed on a missing golden set)."))
        elif sha256_file(g.file) != g.sha256:
            out.append(Problem(m.path, f"golden[{i}].sha256", f"{g.file} hashes to {sha256_file(g.file)}, not the "
                                                              "frozen value: restore the file, or declare the new one "
                                                              "on purpose (`flywheel golden hash FILE`)."))
    return out


def _days(d: timedelta) -> str:
    n = d / timedelta(days=1)
    return f"{n:g} day{'s' if n != 1 else ''}"
