"""Request metrics in Prometheus' text exposition format (version 0.0.4), written by hand: counts by model and
status, rows, latency quantiles over the last `window` requests (a summary), the version each model serves, its
reloads and the online log's state. Updated on the request path (the event loop's thread) with O(1) work."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

QUANTILES = (0.5, 0.9, 0.95, 0.99)


def _labels(**kv: Any) -> str:
    inner = ",".join(f'{k}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
                     for k, v in kv.items())
    return "{" + inner + "}"


@dataclass
class Metrics:
    window: int = 10_000
    started: float = field(default_factory=time.time)
    requests: collections.Counter[tuple[str, str, int]] = field(default_factory=collections.Counter)
    rows: collections.Counter[str] = field(default_factory=collections.Counter)
    latency_sum: dict[str, float] = field(default_factory=lambda: collections.defaultdict(float))
    latency_count: collections.Counter[str] = field(default_factory=collections.Counter)
    _recent: dict[str, collections.deque[float]] = field(default_factory=dict)

    def observe(self, route: str, model: str, status: int, seconds: float, rows: int = 0) -> None:
        self.requests[(route, model, status)] += 1
        if rows:
            self.rows[model] += rows
        if route == "predict":
            self.latency_sum[model] += seconds
            self.latency_count[model] += 1
            recent = self._recent.get(model)
            if recent is None:
                recent = self._recent[model] = collections.deque(maxlen=self.window)
            recent.append(seconds)

    def quantiles(self, model: str) -> dict[float, float]:
        import numpy as np

        recent = self._recent.get(model)
        if not recent:
            return {}
        values = np.percentile(np.fromiter(recent, dtype=np.float64), [q * 100 for q in QUANTILES])
        return dict(zip(QUANTILES, (float(v) for v in values), strict=True))

    def render(self, gauges: Callable[[], list[tuple[str, str, str, dict[str, Any], float]]]) -> str:
        """The exposition text; `gauges()` adds (name, type, help, labels, value) samples of the live state."""
        out = ["# HELP flywheel_serving_requests_total HTTP requests answered, by route, model and status code.",
               "# TYPE flywheel_serving_requests_total counter"]
        for (route, model, status), n in sorted(self.requests.items()):
            out.append(f"flywheel_serving_requests_total{_labels(route=route, model=model, status=status)} {n}")
        out += ["# HELP flywheel_serving_errors_total Requests answered with a 4xx or 5xx status, by model and class.",
                "# TYPE flywheel_serving_errors_total counter"]
        errors: collections.Counter[tuple[str, str]] = collections.Counter()
        for (_, model, status), n in self.requests.items():
            if status >= 400:
                errors[(model, f"{status // 100}xx")] += n
        for (model, klass), n in sorted(errors.items()):
            out.append(f"flywheel_serving_errors_total{_labels(model=model, code_class=klass)} {n}")
        out += ["# HELP flywheel_serving_rows_total Rows scored.", "# TYPE flywheel_serving_rows_total counter"]
        for model, n in sorted(self.rows.items()):
            out.append(f"flywheel_serving_rows_total{_labels(model=model)} {n}")
        out += ["# HELP flywheel_serving_request_seconds Prediction request latency in the server (quantiles over "
                f"the last {self.window} requests).", "# TYPE flywheel_serving_request_seconds summary"]
        for model in sorted(self.latency_count):
            for q, v in self.quantiles(model).items():
                out.append(f"flywheel_serving_request_seconds{_labels(model=model, quantile=q)} {v:.6f}")
            out.append(f"flywheel_serving_request_seconds_sum{_labels(model=model)} {self.latency_sum[model]:.6f}")
            out.append(f"flywheel_serving_request_seconds_count{_labels(model=model)} {self.latency_count[model]}")
        seen: set[str] = set()
        for name, kind, help_text, labels, value in gauges():
            if name not in seen:
                out += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
                seen.add(name)
            out.append(f"{name}{_labels(**labels)} {value:g}")
        out += ["# HELP flywheel_serving_start_time_seconds When the server started (epoch seconds).",
                "# TYPE flywheel_serving_start_time_seconds gauge",
                f"flywheel_serving_start_time_seconds {self.started:.3f}"]
        return "\n".join(out) + "\n"
