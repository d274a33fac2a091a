"""The champion held in memory, and its hot reload.

`LoadedChampion` is immutable: version, booster (one thread), input order and categories. A request takes the
current one once and answers with its version, so every answer carries the version that produced it. The
watcher polls `models:/<name>@champion` (every `poll_s`, 2 s by default; `wake()` asks for a look now) and, when
the alias moved, loads the new version completely (booster, features.json, categories.json) before swapping it
in with one assignment: requests in flight finish on the old one, the next ones get the new one, none fails.
A version that cannot be loaded (MLflow away, an artifact missing, inputs this service cannot provide) leaves
the current one serving, and the error is shown by /readyz and logged; the next poll tries again. When the
alias is removed (an override took it away) the model answers 503 until a champion exists again, as batch
scoring scores nothing without one.
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.serving.encode import MatrixEncoder

if TYPE_CHECKING:
    from pipelines.spec import ModelSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedChampion:
    model: str
    version: str
    run_id: str
    booster: Any
    features: tuple[str, ...]
    encoder: MatrixEncoder
    loaded_at: float                      # wall clock (epoch seconds)

    def predict(self, matrix: Any) -> Any:
        import numpy as np

        return np.asarray(self.booster.inplace_predict(matrix))


def load_champion(spec: ModelSpec, version: str, available: set[str]) -> LoadedChampion:
    """Version `version` of the spec's registered model, ready to predict on one thread. `available`: the inputs
    a request can provide (row features + the service's online features); a version needing others raises."""
    from mlflow import MlflowClient

    from pipelines import model as m

    name = spec.registered_model_name
    client = MlflowClient()
    mv = client.get_model_version(name, version)
    with tempfile.TemporaryDirectory(prefix="flywheel-serving-") as tmp:
        meta = json.loads(Path(client.download_artifacts(str(mv.run_id), "features.json", tmp)).read_text())
    features = list(meta["features"])
    missing = [f for f in features if f not in available]
    if missing:
        raise ValueError(f"{spec.name} v{version} needs inputs {missing} that neither the request's row features "
                         f"{list(spec.row_features)} nor {spec.feature_service}'s online features provide; it cannot "
                         "be served online (was it trained on another FeatureService?)")
    booster = m.load_version(name, version)
    booster.set_param({"nthread": 1})      # one row at a time: threads cost more than they save
    categories = m.load_categories(name, version)
    return LoadedChampion(spec.name, str(version), str(mv.run_id), booster, tuple(features),
                          MatrixEncoder.of(spec, features, categories), time.time())


class ChampionWatcher:
    """The current champion of one model, reloaded when its alias moves (see the module's docstring)."""

    def __init__(self, spec: ModelSpec, available: set[str], poll_s: float = 2.0) -> None:
        self.spec, self.available, self.poll_s = spec, available, poll_s
        self.current: LoadedChampion | None = None
        self.last_error: str | None = None
        self.last_check: float | None = None
        self.reloads = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> bool:
        """Look at the alias once; load and swap in a new champion. True when the champion changed."""
        from pipelines import model as m

        try:
            mv = m.champion(self.spec.registered_model_name)
            self.last_check = time.time()
            current = self.current
            if mv is None:
                if current is not None:
                    log.warning("%s: the champion alias is gone; answering 503 until there is one again",
                                self.spec.name)
                    self.current = None
                    self.reloads += 1
                    return True
                self.last_error = None
                return False
            if current is not None and current.version == str(mv.version):
                self.last_error = None
                return False
            loaded = load_champion(self.spec, str(mv.version), self.available)
            self.current = loaded            # the swap: one assignment
            self.reloads += 1
            self.last_error = None
            log.info("%s: serving v%s (was %s)", self.spec.name, loaded.version,
                     f"v{current.version}" if current else "none")
            return True
        except Exception as exc:  # noqa: BLE001 - keep serving what we have; /readyz shows the error
            message = f"{type(exc).__name__}: {exc}"
            if message != self.last_error:
                log.warning("%s: could not reload the champion (%s); still serving %s", self.spec.name, message,
                            f"v{self.current.version}" if self.current else "nothing")
            self.last_error = message
            return False

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        self.refresh()       # at once: the server answers /healthz meanwhile, /readyz once a champion is loaded
        while not self._stop.is_set():
            self._wake.wait(self.poll_s)
            self._wake.clear()
            if not self._stop.is_set():
                self.refresh()

    def start(self) -> ChampionWatcher:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"champion-{self.spec.name}", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
