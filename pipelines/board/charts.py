"""Small SVG charts drawn on the server: the page needs no JavaScript and fetches nothing.

Each function returns one `<svg>` element as a string (valid XML, every text escaped), with a
`<title>` per mark for the browser's tooltip and `data-*` attributes holding the values drawn:

* `line_chart`: values over time, one or more series (a line, or points only);
* `heatmap`: a score per row per column, coloured by score relative to its threshold, a cell over its
  threshold outlined;
* `stacked_bars`: counts per category, stacked.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape

FONT = "font-family='system-ui,sans-serif' font-size='11'"
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def _num(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".") if math.isfinite(x) else "0"


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def _svg(width: int, height: int, label: str, body: list[str]) -> str:
    return (f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
            f"viewBox='0 0 {width} {height}' role='img' aria-label='{_e(label)}' {FONT}>"
            f"<title>{_e(label)}</title>{''.join(body)}</svg>")


def _empty(width: int, height: int, label: str, message: str) -> str:
    return _svg(width, height, label, [f"<text x='{width // 2}' y='{height // 2}' text-anchor='middle' "
                                       f"fill='#777'>{_e(message)}</text>"])


def _ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    if hi <= lo:
        return [lo]
    step = (hi - lo) / n
    return [lo + i * step for i in range(n + 1)]


@dataclass(frozen=True)
class Series:
    name: str
    points: Sequence[tuple[datetime, float, str]]   # (x, y, tooltip)
    line: bool = True                                # False: points only
    color: str | None = None


def line_chart(series: Sequence[Series], label: str, y_label: str, width: int = 640, height: int = 240) -> str:
    """Values over time; the y range spans the values (with a margin); x ticks at the first and last time."""
    pts = [p for s in series for p in s.points if math.isfinite(p[1])]
    if not pts:
        return _empty(width, height, label, "no values recorded yet")
    left, right, top, bottom = 66, 16, 24, 40
    xs = [p[0].timestamp() for p in pts]
    ys = [p[1] for p in pts]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    pad = (y1 - y0) * 0.1 or abs(y0) * 0.1 or 1.0
    y0, y1 = y0 - pad, y1 + pad
    span_x = (x1 - x0) or 1.0

    def px(t: datetime) -> float:
        return left + (t.timestamp() - x0) / span_x * (width - left - right) if x1 > x0 else (left + width - right) / 2

    def py(v: float) -> float:
        return top + (y1 - v) / (y1 - y0) * (height - top - bottom)

    body = [f"<line x1='{left}' y1='{height - bottom}' x2='{width - right}' y2='{height - bottom}' stroke='#999'/>",
            f"<line x1='{left}' y1='{top}' x2='{left}' y2='{height - bottom}' stroke='#999'/>",
            f"<text x='12' y='{(top + height - bottom) // 2}' transform='rotate(-90 12 {(top + height - bottom) // 2})'"
            f" text-anchor='middle' fill='#333'>{_e(y_label)}</text>"]
    for v in _ticks(y0, y1):
        y = _num(py(v))
        body.append(f"<line x1='{left - 4}' y1='{y}' x2='{width - right}' y2='{y}' stroke='#eee'/>"
                    f"<text x='{left - 6}' y='{y}' dy='3' text-anchor='end' fill='#555'>{_e(_fmt(v))}</text>")
    first, last = min(p[0] for p in pts), max(p[0] for p in pts)
    for t, anchor in ((first, "start"), (last, "end")) if last > first else ((first, "middle"),):
        body.append(f"<text x='{_num(px(t))}' y='{height - bottom + 14}' text-anchor='{anchor}' fill='#555'>"
                    f"{_e(t.strftime('%Y-%m-%d'))}</text>")
    legend_x = left + 8
    for i, s in enumerate(series):
        color = s.color or PALETTE[i % len(PALETTE)]
        ordered = sorted((p for p in s.points if math.isfinite(p[1])), key=lambda p: p[0])
        if s.line and len(ordered) > 1:
            path = " ".join(f"{'M' if j == 0 else 'L'}{_num(px(t))},{_num(py(v))}"
                            for j, (t, v, _) in enumerate(ordered))
            body.append(f"<path d='{path}' fill='none' stroke='{color}' stroke-width='2'/>")
        for t, v, tip in ordered:
            body.append(f"<circle class='point' cx='{_num(px(t))}' cy='{_num(py(v))}' r='{3.5 if s.line else 5}' "
                        f"fill='{color if s.line else '#fff'}' stroke='{color}' stroke-width='2' "
                        f"data-series='{_e(s.name)}' data-value='{_e(_fmt(v))}' data-at='{_e(t.isoformat())}'>"
                        f"<title>{_e(tip)}: {_e(_fmt(v))}</title></circle>")
        body.append(f"<rect x='{legend_x}' y='{height - 14}' width='10' height='10' fill='{color}'/>"
                    f"<text x='{legend_x + 14}' y='{height - 5}' fill='#333'>{_e(s.name)}</text>")
        legend_x += 24 + 7 * len(s.name)
    return _svg(width, height, label, body)


@dataclass(frozen=True)
class Cell:
    score: float | None
    threshold: float | None
    drifted: bool
    kind: str = "distance"    # distance (higher = more drift) | p_value (lower = more drift)
    method: str = ""

    @property
    def severity(self) -> float:
        """Score relative to the threshold: 1 at the threshold, above 1 past it (NaN: unknown)."""
        if self.score is None or not self.threshold or not math.isfinite(self.score):
            return math.nan
        if self.kind == "p_value":
            return self.threshold / max(self.score, 1e-300)
        return self.score / self.threshold


def _heat(severity: float) -> str:
    """White at 0, amber at the threshold, dark red at twice the threshold and beyond; grey when unknown."""
    if not math.isfinite(severity):
        return "#ddd"
    s = min(max(severity, 0.0), 2.0)
    if s <= 1:
        a, b, f = (255, 255, 255), (253, 174, 97), s
    else:
        a, b, f = (253, 174, 97), (165, 0, 38), s - 1
    r, g, bl = (round(a[i] + (b[i] - a[i]) * f) for i in range(3))
    return f"#{r:02x}{g:02x}{bl:02x}"


def heatmap(rows: Sequence[str], cols: Sequence[str], cells: Mapping[tuple[str, str], Cell], label: str,
            cell_w: int = 44, cell_h: int = 18) -> str:
    """One cell per (row, column); the cell's text is its score, its title says score, threshold and method."""
    if not rows or not cols:
        return _empty(480, 60, label, "no monitor window yet")
    left = 12 + 7 * max(len(r) for r in rows)
    top = 70
    width = max(left + cell_w * len(cols) + 70, 560)   # room for the last slanted label and the legend
    height = top + cell_h * len(rows) + 30
    body = []
    for j, c in enumerate(cols):
        x = left + j * cell_w + cell_w / 2
        body.append(f"<text x='{_num(x)}' y='{top - 6}' transform='rotate(-45 {_num(x)} {top - 6})' "
                    f"fill='#333'>{_e(c)}</text>")
    for i, r in enumerate(rows):
        y = top + i * cell_h
        body.append(f"<text x='{left - 6}' y='{y + cell_h - 5}' text-anchor='end' fill='#333'>{_e(r)}</text>")
        for j, c in enumerate(cols):
            x = left + j * cell_w
            cell = cells.get((r, c))
            if cell is None:
                body.append(f"<rect x='{x}' y='{y}' width='{cell_w - 1}' height='{cell_h - 1}' fill='#f6f6f6'/>")
                continue
            sev = cell.severity
            score = _fmt(cell.score) if cell.score is not None and math.isfinite(cell.score) else "n/a"
            thr = _fmt(cell.threshold) if cell.threshold is not None else "n/a"
            stroke = " stroke='#000' stroke-width='2'" if cell.drifted else ""
            tip = (f"{r} in {c}: {cell.method or 'score'} {score} vs threshold {thr}"
                   f" ({'drifted' if cell.drifted else 'not drifted'})")
            text_fill = "#fff" if math.isfinite(sev) and sev > 1.5 else "#222"
            body.append(f"<g class='cell' data-row='{_e(r)}' data-col='{_e(c)}' data-score='{_e(score)}' "
                        f"data-threshold='{_e(thr)}' data-drifted='{str(cell.drifted).lower()}'>"
                        f"<title>{_e(tip)}</title>"
                        f"<rect x='{x}' y='{y}' width='{cell_w - 1}' height='{cell_h - 1}' "
                        f"fill='{_heat(sev)}'{stroke}/>"
                        f"<text x='{x + cell_w / 2:.1f}' y='{y + cell_h - 5}' text-anchor='middle' font-size='9' "
                        f"fill='{text_fill}'>{_e(score if score == 'n/a' else f'{cell.score:.2f}')}</text></g>")
    legend_y = top + cell_h * len(rows) + 18
    body.append(f"<text x='{left}' y='{legend_y}' fill='#555'>colour: score ÷ its threshold (white 0, amber at the "
                "threshold, red at 2×); outlined: over its threshold (drifted)</text>")
    return _svg(width, height, label, body)


def stacked_bars(categories: Sequence[str], stacks: Sequence[tuple[str, str]],
                 values: Mapping[str, Sequence[int]], label: str, width: int = 640, height: int = 220) -> str:
    """One bar per category, its parts stacked in `stacks` order ((name, colour)); y from 0 to the tallest bar."""
    if not categories:
        return _empty(width, 60, label, "no batch yet")
    left, right, top, bottom = 56, 16, 16, 58
    tallest = max((sum(values.get(c, ())) for c in categories), default=0) or 1
    slot = (width - left - right) / len(categories)
    bar = max(4.0, min(40.0, slot * 0.7))

    def py(v: float) -> float:
        return top + (1 - v / tallest) * (height - top - bottom)

    body = [f"<line x1='{left}' y1='{height - bottom}' x2='{width - right}' y2='{height - bottom}' stroke='#999'/>"]
    for v in _ticks(0, tallest):
        body.append(f"<text x='{left - 6}' y='{_num(py(v))}' dy='3' text-anchor='end' fill='#555'>{int(v):,}</text>"
                    f"<line x1='{left}' y1='{_num(py(v))}' x2='{width - right}' y2='{_num(py(v))}' stroke='#eee'/>")
    for i, c in enumerate(categories):
        x = left + i * slot + (slot - bar) / 2
        base = 0
        parts = list(values.get(c, ()))
        for (name, color), v in zip(stacks, parts, strict=False):
            if v <= 0:
                continue
            y_top, y_bottom = py(base + v), py(base)
            body.append(f"<rect class='bar' x='{_num(x)}' y='{_num(y_top)}' width='{_num(bar)}' "
                        f"height='{_num(y_bottom - y_top)}' fill='{color}' data-category='{_e(c)}' "
                        f"data-part='{_e(name)}' data-value='{v}'><title>{_e(c)}: {v:,} {_e(name)}</title></rect>")
            base += v
        cx = x + bar / 2
        body.append(f"<text x='{_num(cx)}' y='{height - bottom + 10}' transform='rotate(45 {_num(cx)} "
                    f"{height - bottom + 10})' fill='#333' font-size='9'>{_e(c)}</text>")
    legend_x = left
    for name, color in stacks:
        body.append(f"<rect x='{legend_x}' y='{height - 12}' width='10' height='10' fill='{color}'/>"
                    f"<text x='{legend_x + 14}' y='{height - 3}' fill='#333'>{_e(name)}</text>")
        legend_x += 24 + 7 * len(name)
    return _svg(width, height, label, body)
