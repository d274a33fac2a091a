"""Platform code names no dataset: every column, entity, view, feature and feature service declared in
datasets/ and feature_repo/ is looked for, as a whole word, in pipelines/, dags/, flywheel/ and plugins/.

What belongs to one feed is declared; a platform module that needs the name of a demo column is a design
smell (shared/STYLE.md). The demo's generator lives in scenarios/, which no production module imports.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from pipelines.spec import REPO_ROOT, load_datasets, load_specs

pytestmark = pytest.mark.unit

PLATFORM = ("pipelines", "dags", "flywheel", "plugins")


def _platform_files() -> list[Path]:
    return sorted(p for d in PLATFORM for p in (REPO_ROOT / d).rglob("*.py"))


def declared_names() -> dict[str, str]:
    """name -> where it is declared."""
    from pipelines.features import load_repo

    names: dict[str, str] = {}
    for contract in load_datasets().values():
        for col in contract.columns:
            names.setdefault(col.name, f"column of {contract.path.name}")
    repo = load_repo(REPO_ROOT / "feature_repo")
    for view in repo.views.values():
        names.setdefault(view.name, "feature view in feature_repo/definitions.py")
        for f in view.features:
            names.setdefault(f, f"feature of view {view.name}")
        for k in view.join_keys:
            names.setdefault(k, f"join key of view {view.name}")
    for svc in repo.services:
        names.setdefault(svc, "FeatureService in feature_repo/definitions.py")
    from feast import Entity

    for obj in repo.objects:
        if isinstance(obj, Entity):
            names.setdefault(obj.name, "entity in feature_repo/definitions.py")
    return names


def test_the_declarations_give_names_to_look_for():
    names = declared_names()
    # the example's declarations are read, not listed here: at least its contract columns and views
    contract = next(iter(load_datasets().values()))
    assert set(contract.column_names) <= set(names)
    assert len(names) >= len(contract.column_names) + 2


# Ordinary English words that also name a column (e.g. a column `category`) are only flagged where code uses
# them as a name: an identifier (not an attribute, keyword argument or parameter) or a string literal equal to
# the word. Names with an underscore or a digit
# (`event_ts`, `customer_stats`) are flagged anywhere, comments and docstrings included.
ALLOWED: set[tuple[str, str]] = set()   # (file, line) exceptions, each with its reason: none today


def _is_word(name: str) -> bool:
    return name.isalpha() and name.islower()


def find_mentions(path: Path, names: dict[str, str]) -> list[str]:
    import io
    import tokenize

    specific = [n for n in names if not _is_word(n)]
    words = {n for n in names if _is_word(n)}
    anywhere = re.compile(r"(?<![A-Za-z0-9_])(" + "|".join(map(re.escape, sorted(specific, key=len, reverse=True)))
                          + r")(?![A-Za-z0-9_])") if specific else None
    rel = str(path.relative_to(REPO_ROOT))
    text = path.read_text()
    lines = text.splitlines()
    hits = []
    tokens = [t for t in tokenize.generate_tokens(io.StringIO(text).readline)
              if t.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT)]
    for i, tok in enumerate(tokens):
        found: list[tuple[str, int]] = []   # (name, line number)
        before = tokens[i - 1].string if i else ""
        after = tokens[i + 1].string if i + 1 < len(tokens) else ""
        # a word as an attribute (`dt.year`), a keyword argument or a parameter (`title=...`, `title: str`) is
        # the English word; as a bare name or a string literal it may be the column
        as_word = before == "." or (after in ("=", ":") and before in ("(", ","))
        if tok.type == tokenize.NAME and tok.string in words and not as_word:
            found.append((tok.string, tok.start[0]))
        if tok.type == tokenize.STRING:
            try:
                value = ast.literal_eval(tok.string)
            except (ValueError, SyntaxError):
                value = None
            if isinstance(value, str) and value in words:
                found.append((value, tok.start[0]))
        if tok.type in (tokenize.STRING, tokenize.COMMENT, tokenize.NAME) and anywhere:
            found += [(m.group(1), tok.start[0] + tok.string.count("\n", 0, m.start()))
                      for m in anywhere.finditer(tok.string)]
        for name, n in found:
            line = lines[n - 1].strip()
            if (rel, line) not in ALLOWED:
                hits.append(f"{rel}:{n}: `{name}` ({names[name]}): {line}")
    return hits


def test_platform_code_mentions_no_declared_name():
    names = declared_names()
    hits = [h for path in _platform_files() for h in find_mentions(path, names)]
    assert not hits, "platform code names dataset-specific things; declare them instead:\n" + "\n".join(hits)


def test_the_check_finds_a_hard_wired_name(tmp_path):
    """The search itself: a name in code, in a string, in a comment (specific names) is found."""
    mod = REPO_ROOT / "pipelines" / "_name_probe_tmp.py"
    mod.write_text('x = df["amount"]\n# uses customer_stats here\ny = "one category of things"\n')
    try:
        hits = find_mentions(mod, {"amount": "column", "customer_stats": "view", "category": "column"})
    finally:
        mod.unlink()
    assert [h.split(": ")[1] for h in hits] == ["`amount` (column)", "`customer_stats` (view)"]


def test_no_production_module_imports_the_demo_scenarios():
    offenders = []
    for path in _platform_files():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            mods = ([a.name for a in node.names] if isinstance(node, ast.Import)
                    else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(m == "scenarios" or m.startswith("scenarios.") for m in mods):
                offenders.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}")
    # the demo player (flywheel/demo.py) plays a scenario: it is the one allowed reader
    assert offenders == [o for o in offenders if o.startswith("flywheel/demo.py:")], offenders


def test_the_models_read_declared_views_and_columns():
    from pipelines.features import load_repo

    repo = load_repo(REPO_ROOT / "feature_repo")
    for spec in load_specs().values():
        for view in repo.service_views(spec.feature_service):
            assert repo.views[view].dataset in load_datasets()
