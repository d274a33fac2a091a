"""The pictures of Flywheel's emails, as PNG bytes: per-column drift scores against their thresholds, and the
rules a blocked batch failed. matplotlib (Agg backend) is imported inside each function.

Deterministic: the same input gives the same bytes (no date or software version in the PNG's metadata).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

DRIFTED, STABLE, THRESHOLD = "#d92d20", "#98a2b3", "#101828"
SEVERITY_COLOURS = {"batch": "#d92d20", "row": "#f79009", "warn": "#98a2b3"}
MAX_BARS = 25


def drift_chart(columns: Mapping[str, Mapping[str, Any]], order: Sequence[str], caption: str) -> bytes:
    """Horizontal bars of each column's drift score, its threshold marked on its bar (one line when every
    column shares it), drifted columns highlighted; `order` lists the columns top to bottom (at most
    MAX_BARS are drawn, the caption says how many more). p-value methods (drift when p < threshold) are
    labelled as such."""
    plt = _pyplot()
    shown = list(order)[:MAX_BARS]
    more = len(order) - len(shown)
    raw = [_number(columns[c]["score"]) for c in shown]
    thresholds = [float(columns[c]["threshold"]) for c in shown]
    labels = [c + (" (p-value)" if columns[c].get("kind") == "p_value" else "") for c in shown]
    colours = [DRIFTED if columns[c]["drifted"] else STABLE for c in shown]
    top = max([*(s for s in raw if math.isfinite(s)), *thresholds, 1e-9]) * 1.18
    scores = [s if math.isfinite(s) else top for s in raw]  # no score (a column gone empty): a full bar
    fig, ax = plt.subplots(figsize=(7.5, 1.2 + 0.32 * len(shown)), dpi=100)
    y = list(range(len(shown)))[::-1]
    ax.barh(y, [min(s, top) for s in scores], color=colours, height=0.62)
    if len(set(thresholds)) == 1:
        ax.axvline(thresholds[0], color=THRESHOLD, linestyle="--", linewidth=1.2,
                   label=f"threshold {thresholds[0]:.3g}")
    else:
        for yi, thr in zip(y, thresholds, strict=True):
            ax.plot([thr, thr], [yi - 0.42, yi + 0.42], color=THRESHOLD, linewidth=1.6)
        ax.plot([], [], color=THRESHOLD, linewidth=1.6, label="each column's threshold")
    for yi, s, r in zip(y, scores, raw, strict=True):
        ax.text(min(s, top) + top * 0.01, yi, f"{r:.3f}" if math.isfinite(r) else "n/a", va="center", fontsize=8)
    ax.set_yticks(y, labels, fontsize=9)
    ax.set_xlim(0, top * 1.08)
    ax.set_xlabel("drift score (red: drifted)")
    ax.bar(0, 0, color=DRIFTED, label="drifted")
    ax.bar(0, 0, color=STABLE, label="not drifted")
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    ax.set_title(caption + (f" (+{more} more columns)" if more else ""), fontsize=10, loc="left")
    _tidy(ax)
    return _png(fig)


def failed_rules_chart(bars: Sequence[Mapping[str, Any]], caption: str) -> bytes:
    """One bar per failed rule, top to bottom: `label`, `severity` (batch | row | warn: the colour), `share`
    (of the batch's rows breaking it; None: a rule about the whole batch, drawn as a full hatched bar),
    `allowed` (the share allowed, marked on the bar; None: none) and `text` (written next to the bar)."""
    plt = _pyplot()
    shown = list(bars)[:MAX_BARS]
    more = len(bars) - len(shown)
    fig, ax = plt.subplots(figsize=(8.5, 1.3 + 0.4 * len(shown)), dpi=100)
    y = list(range(len(shown)))[::-1]
    box = {"facecolor": "white", "edgecolor": "none", "alpha": 0.85, "pad": 1.5}
    for yi, bar in zip(y, shown, strict=True):
        colour = SEVERITY_COLOURS.get(str(bar.get("severity")), STABLE)
        share, allowed = bar.get("share"), bar.get("allowed")
        text = str(bar.get("text") or (f"{share:.1%}" if share is not None else "the whole batch"))
        if share is None:
            ax.barh(yi, 1.0, color="none", edgecolor=colour, hatch="///", height=0.62)
            ax.text(0.02, yi, text, va="center", fontsize=8, bbox=box)
            continue
        width = min(float(share), 1.0)
        ax.barh(yi, width, color=colour, height=0.62)
        if allowed is not None:
            ax.plot([allowed, allowed], [yi - 0.42, yi + 0.42], color=THRESHOLD, linewidth=1.8)
        ax.text(width + 0.015 if width < 0.45 else 0.02, yi, text, va="center", fontsize=8, bbox=box)
    ax.set_yticks(y, [str(b["label"]) for b in shown], fontsize=9)
    ax.set_xlim(0, 1.02)
    ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0], ["0%", "25%", "50%", "75%", "100%"])
    ax.set_xlabel("share of the batch's rows breaking the rule (black mark: allowed)\n"
                  "red: blocks the batch · orange: rows quarantined · grey: warning", fontsize=8)
    ax.set_title(caption + (f" (+{more} more)" if more else ""), fontsize=10, loc="left")
    _tidy(ax)
    return _png(fig)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _number(value: Any) -> float:
    return float(value) if value is not None else math.nan


def _tidy(ax: Any) -> None:
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.figure.tight_layout()


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()
