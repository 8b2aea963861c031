"""Small hand-written SVG charts for `broadcaster report`: bars, horizontal bars, a line.

Each function returns one self-contained `<svg>` element (a `<title>` for screen readers, a
visible title, labelled axes, no script, no external reference) sized by its viewBox, so the
HTML page scales it to the column width. Tick values are 1, 2 or 5 times a power of ten; where
there are more categories than fit, only every k-th label is written. Empty data draws the
axes and a message instead of failing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

WIDTH = 960
FONT = "font-family='system-ui, sans-serif'"
AXIS = "#444"
GRID = "#ddd"
BLUE = "#2b6cb0"
LIGHT = "#b7cde6"
ORANGE = "#dd6b20"
MAX_LABELS = 24


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float]
    color: str = BLUE


def _fmt(value: float) -> str:
    if value >= 10_000:
        return f"{value / 1000:,.0f}k"
    if value == int(value):
        return f"{int(value):,}"
    return f"{value:,.1f}"


def percent(value: float) -> str:
    return f"{value:.0%}"


def nice_ticks(top: float, count: int = 5) -> list[float]:
    """Ticks from 0 to at least `top`, a step of 1, 2 or 5 times a power of ten, and at least 1
    (every chart here counts things)."""
    if top <= 0:
        return [0.0, 1.0]
    raw = top / count
    power = 10 ** math.floor(math.log10(raw))
    step = max(1.0, next(m * power for m in (1, 2, 5, 10) if m * power >= raw))
    ticks = [0.0]
    while ticks[-1] < top - 1e-9:
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def _text(
    x: float, y: float, body: str, *, anchor: str = "middle", size: int = 12, extra: str = ""
) -> str:
    return (
        f"<text x='{x:.1f}' y='{y:.1f}' text-anchor='{anchor}' font-size='{size}' "
        f"fill='{AXIS}' {extra}>{escape(body)}</text>"
    )


def _frame(title: str, height: int, body: list[str], legend: Sequence[Series] = ()) -> str:
    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 {WIDTH} {height}' role='img' "
        f"aria-label='{escape(title)}' {FONT} class='chart'>",
        f"<title>{escape(title)}</title>",
        _text(WIDTH / 2, 22, title, size=16, extra="font-weight='600'"),
    ]
    x = WIDTH - 20.0
    for s in reversed(legend):
        label_width = 7 * len(s.name) + 24
        x -= label_width
        parts.append(f"<rect x='{x:.1f}' y='34' width='12' height='12' fill='{s.color}'/>")
        parts.append(_text(x + 16, 45, s.name, anchor="start", size=12))
    return "\n".join([*parts, *body, "</svg>"])


def _empty(width: float, top: float, height: float, left: float, message: str) -> str:
    return _text(left + width / 2, top + height / 2, message, size=15, extra="font-style='italic'")


def _every(n: int) -> int:
    return max(1, math.ceil(n / MAX_LABELS))


def bar_chart(
    title: str,
    categories: Sequence[str],
    bars: Sequence[Series],
    *,
    x_label: str,
    y_label: str,
    line: Series | None = None,
    line_label: str = "",
    line_format: Callable[[float], str] = percent,
    empty: str = "no data in this period",
    overlay: bool = True,
) -> str:
    """Vertical bars per category (`empty` written over the axes when there are none, or all
    are zero); several series overlap (drawn largest first, so the second
    is seen inside the first) when `overlay`, else stand side by side. `line`, a ratio from 0 to
    1 per category, is drawn in a band of its own above the bars, on the same x positions."""
    n = len(categories)
    rotate = n > 12
    band = 120 if line is not None else 0
    left, right, top, bottom = 80, 20, 56 + band, 90 if rotate else 50
    ph = 240
    height = top + ph + bottom
    pw = WIDTH - left - right
    body: list[str] = []
    peak = max((v for s in bars for v in s.values), default=0)
    ymax = _y_grid(body, peak, left, top, pw, ph)
    if n == 0 or peak == 0:
        body.append(_empty(pw, top, ph, left, empty))
    slot = pw / max(n, 1)
    gap = min(8.0, slot * 0.2)
    for i in range(n):
        x0 = left + i * slot + gap / 2
        width = slot - gap
        series = sorted(bars, key=lambda s: -s.values[i]) if overlay else list(bars)
        for j, s in enumerate(series):
            v = s.values[i]
            h = ph * v / ymax
            bx, bw = (x0, width) if overlay else (x0 + j * width / len(series), width / len(series))
            body.append(
                f"<rect x='{bx:.1f}' y='{top + ph - h:.1f}' width='{max(bw, 0.5):.1f}' "
                f"height='{h:.1f}' fill='{s.color}'><title>{escape(categories[i])}: "
                f"{escape(s.name)} {_fmt(v)}</title></rect>"
            )
    for i in range(0, n, _every(n)):
        x = left + (i + 0.5) * slot
        y = top + ph + 16
        extra = f"transform='rotate(-40 {x:.1f} {y:.1f})'" if rotate else ""
        body.append(_text(x, y, categories[i], anchor="end" if rotate else "middle", size=11,
                          extra=extra))  # fmt: skip
    if line is not None:
        body.extend(_ratio_band(line, categories, left, pw, top - band, band - 30, slot,
                                line_label, line_format))  # fmt: skip
    body.append(_axes(left, top, pw, ph))
    body.append(_text(left + pw / 2, height - 8, x_label, size=12))
    body.append(_vertical_label(18, top + ph / 2, y_label))
    legend = [*bars, line] if line is not None else list(bars)
    return _frame(title, height, body, legend if len(legend) > 1 else ())


def _ratio_band(
    line: Series,
    categories: Sequence[str],
    left: float,
    pw: float,
    top: float,
    ph: float,
    slot: float,
    label: str,
    fmt: Callable[[float], str],
) -> list[str]:
    body = []
    for t in (0.0, 0.5, 1.0):
        y = top + ph - ph * t
        body.append(
            f"<line x1='{left}' x2='{left + pw}' y1='{y:.1f}' y2='{y:.1f}' stroke='{GRID}'/>"
        )
        body.append(_text(left - 6, y + 4, fmt(t), anchor="end", size=11))
    xy = [
        (left + (i + 0.5) * slot, top + ph - ph * min(max(v, 0.0), 1.0))
        for i, v in enumerate(line.values)
    ]
    if xy:
        pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
        body.append(
            f"<polyline points='{pts}' fill='none' stroke='{line.color}' stroke-width='2'/>"
        )
    for (x, y), name, v in zip(xy, categories, line.values, strict=True):
        body.append(
            f"<circle cx='{x:.1f}' cy='{y:.1f}' r='3.5' fill='{line.color}'><title>"
            f"{escape(name)}: {escape(line.name)} {fmt(v)}</title></circle>"
        )
    body.append(_axes(left, top, pw, ph))
    body.append(_vertical_label(18, top + ph / 2, label))
    return body


def _vertical_label(x: float, y: float, label: str) -> str:
    return _text(x, y, label, size=12, extra=f"transform='rotate(-90 {x} {y:.1f})'")


def hbar_chart(
    title: str,
    categories: Sequence[str],
    values: Sequence[float],
    *,
    x_label: str,
    empty: str = "no data in this period",
    color: str = BLUE,
) -> str:
    """Horizontal bars, one row per category (for long labels: zones, reasons)."""
    row = 24
    left, right, top, bottom = 230, 60, 50, 50
    ph = max(len(categories), 3) * row
    height = top + ph + bottom
    pw = WIDTH - left - right
    body: list[str] = []
    ticks = nice_ticks(max(values, default=0))
    xmax = ticks[-1]
    for t in ticks:
        x = left + pw * t / xmax
        body.append(f"<line x1='{x:.1f}' x2='{x:.1f}' y1='{top}' y2='{top + ph}' stroke='{GRID}'/>")
        body.append(_text(x, top + ph + 16, _fmt(t), size=11))
    if not categories:
        body.append(_empty(pw, top, ph, left, empty))
    for i, (name, v) in enumerate(zip(categories, values, strict=True)):
        y = top + i * row
        w = pw * v / xmax
        label = name if len(name) <= 32 else name[:31] + "…"
        body.append(_text(left - 8, y + row / 2 + 4, label, anchor="end", size=12))
        body.append(
            f"<rect x='{left}' y='{y + 3}' width='{w:.1f}' height='{row - 6}' fill='{color}'>"
            f"<title>{escape(name)}: {_fmt(v)}</title></rect>"
        )
        body.append(_text(left + w + 4, y + row / 2 + 4, _fmt(v), anchor="start", size=11))
    body.append(_axes(left, top, pw, ph))
    body.append(_text(left + pw / 2, height - 10, x_label, size=12))
    return _frame(title, height, body)


def line_chart(
    title: str,
    labels: Sequence[str],
    values: Sequence[float],
    *,
    x_label: str,
    y_label: str,
    positions: Sequence[float] | None = None,
    empty: str = "no data in this period",
) -> str:
    """One series as a line with a point per value and its labels under the x axis; the points
    stand at `positions` (e.g. timestamps) on a linear x axis, or evenly spaced without them."""
    height, left, right, top, bottom = 340, 80, 30, 50, 90
    pw, ph = WIDTH - left - right, height - top - bottom
    body: list[str] = []
    ymax = _y_grid(body, max(values, default=0), left, top, pw, ph)
    n = len(values)
    if n == 0:
        body.append(_empty(pw, top, ph, left, empty))
    else:
        at = list(positions) if positions is not None else [float(i) for i in range(n)]
        span = (at[-1] - at[0]) or 1.0
        xy = [
            (left + pw * (p - at[0]) / span, top + ph - ph * v / ymax)
            for p, v in zip(at, values, strict=True)
        ]
        pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
        body.append(f"<polyline points='{pts}' fill='none' stroke='{BLUE}' stroke-width='2'/>")
        for (x, y), label, v in zip(xy, labels, values, strict=True):
            body.append(
                f"<circle cx='{x:.1f}' cy='{y:.1f}' r='3' fill='{BLUE}'>"
                f"<title>{escape(label)}: {_fmt(v)}</title></circle>"
            )
        last = -math.inf
        for i in range(0, n, _every(n)):
            x, y = xy[i][0], top + ph + 16
            if x - last < 28:  # a label closer than that to the previous one would overlap it
                continue
            last = x
            body.append(
                _text(
                    x,
                    y,
                    labels[i],
                    anchor="end",
                    size=11,
                    extra=f"transform='rotate(-40 {x:.1f} {y:.1f})'",
                )
            )
    body.append(_axes(left, top, pw, ph))
    body.append(_text(left + pw / 2, height - 8, x_label, size=12))
    body.append(_vertical_label(18, top + ph / 2, y_label))
    return _frame(title, height, body)


def _y_grid(body: list[str], peak: float, left: float, top: float, pw: float, ph: float) -> float:
    """Horizontal grid lines with their values for a y axis from 0 to above `peak`; the top."""
    ticks = nice_ticks(peak)
    for t in ticks:
        y = top + ph - ph * t / ticks[-1]
        body.append(
            f"<line x1='{left}' x2='{left + pw}' y1='{y:.1f}' y2='{y:.1f}' stroke='{GRID}'/>"
        )
        body.append(_text(left - 6, y + 4, _fmt(t), anchor="end", size=11))
    return ticks[-1]


def _axes(left: float, top: float, pw: float, ph: float) -> str:
    return (
        f"<polyline points='{left},{top} {left},{top + ph} {left + pw},{top + ph}' "
        f"fill='none' stroke='{AXIS}'/>"
    )
