"""The files the page links to, served only from Flywheel's own folders.

A `FileRef` names a file by area and owner, never by a path of the host:

* `reports/<model>/<name>`: the monitor's Evidently reports and verdicts (`Layout.reports(model)`);
* `validation/<dataset>/<key>.json`: the gate's result of a batch (`Layout.validation_reports(dataset)`);
* `docs/<dataset>/<path>`: the dataset's GX Data Docs site (`Layout.data_docs(dataset)/site`);
* `cards/<model>/<version>`: the version's model card, an MLflow artifact of its run.

`resolve_file` turns a ref into a location only when the owner is declared (a spec or a contract)
and the path stays inside the area's folder: no empty, `.` or `..` segment, no absolute path, no
backslash, and, for local folders, the resolved file (symlinks followed) must lie under the
resolved folder. Anything else is None (the route answers 404 and never says why).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from pipelines import storage, tags

if TYPE_CHECKING:
    from collections.abc import Collection

    from pipelines.layout import Layout
    from pipelines.spec import ModelSpec

AREAS = ("reports", "validation", "docs", "cards")
_VERSION = re.compile(r"^[0-9]{1,9}$")


@dataclass(frozen=True)
class FileRef:
    area: str   # reports | docs | cards
    owner: str  # the model (reports, cards) or the dataset (docs)
    path: str   # relative, "/"-separated (cards: the version)

    def url(self, base: str) -> str:
        """The file's URL under the app's base (e.g. `/flywheel`)."""
        return f"{base.rstrip('/')}/files/{quote(self.area)}/{quote(self.owner)}/{quote(self.path)}"


def safe_parts(path: str) -> list[str] | None:
    """The path's segments, or None when it could leave a folder (absolute, `..`, `.`, empty, `\\`, NUL)."""
    if not path or path.startswith("/") or "\\" in path or "\x00" in path or ":" in path.split("/")[0]:
        return None
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return None
    return parts


def area_root(layout: Layout, area: str, owner: str) -> str | None:
    if area == "reports":
        return layout.reports(owner)
    if area == "validation":
        return layout.validation_reports(owner)
    if area == "docs":
        return str(layout.data_docs(owner) / "site")
    return None


def ref_for(location: str | None, layout: Layout, area: str, owner: str) -> FileRef | None:
    """The ref of a recorded location (a report's or a Data Docs page's path or URI), when it lies in its area."""
    root = area_root(layout, area, owner)
    if not location or root is None:
        return None
    loc = str(location).removeprefix("file://")
    root_s = root.rstrip("/") + "/"
    if not storage.is_remote(loc) and not storage.is_remote(root):
        try:
            rel = Path(loc).resolve().relative_to(Path(root).resolve())
        except ValueError:
            return None
        text = rel.as_posix()
    elif loc.startswith(root_s):
        text = loc[len(root_s):]
    else:
        return None
    return FileRef(area, owner, text) if safe_parts(text) else None


def resolve_file(layout: Layout, ref: FileRef, models: Collection[str], datasets: Collection[str]) -> str | None:
    """The location of a reports/docs file, or None when it is not one of Flywheel's files (cards: see
    `card_artifact`)."""
    if ref.area == "reports" and ref.owner in models or ref.area in ("validation", "docs") and ref.owner in datasets:
        root = area_root(layout, ref.area, ref.owner)
    else:
        return None
    parts = safe_parts(ref.path)
    if root is None or parts is None:
        return None
    if storage.is_remote(root):
        loc = storage.join(root, *parts)
        return loc if storage.is_file(loc) else None
    base = Path(root).resolve()
    target = base.joinpath(*parts).resolve()   # symlinks followed: one pointing out of the folder is refused
    if not target.is_relative_to(base) or not target.is_file():
        return None
    return str(target)


def card_artifact(client: Any, spec: ModelSpec, version: str, download_dir: Path) -> Path | None:
    """The model card HTML of a version, downloaded from its run (`flywheel.model_card`), or None."""
    from mlflow.exceptions import MlflowException

    if not _VERSION.match(version):
        return None
    try:
        mv = client.get_model_version(spec.registered_model_name, version)
    except MlflowException:
        return None
    artifact = (mv.tags or {}).get(tags.MODEL_CARD)
    if not artifact or safe_parts(artifact) is None:
        return None
    download_dir.mkdir(parents=True, exist_ok=True)
    try:
        path = Path(client.download_artifacts(mv.run_id, artifact, str(download_dir)))
    except (MlflowException, OSError):
        return None
    return path if path.is_file() else None
