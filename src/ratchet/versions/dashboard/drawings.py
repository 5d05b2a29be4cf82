"""Server-side drawings (inline SVG, plain HTML) of what a strategy believes (:mod:`ratchet.core.belief`)
and of off-policy estimates: one function per kind, so the page needs no script to show them.

Each drawing carries ``data-`` attributes with its numbers (the tests and the browser test read them).
"""

from __future__ import annotations

import math
from typing import Any

from markupsafe import Markup, escape

from ratchet.core.belief import Intervals, Points, RulesTable

WIDTH = 820
LABEL = 170  # room for the item labels, left
TEXT = 280  # room for the numbers, right
ROW = 26


def fmt(v: float | None) -> str:
    if v is None or not math.isfinite(v):
        return "–"
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"


def ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round values that cover [low, high] in about ``count`` steps."""
    span = high - low
    raw = span / count
    step = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * step:
            step *= m
            break
    first = math.ceil(low / step) * step
    return [round(first + k * step, 10) for k in range(int((high - first) / step + 1e-9) + 1)]


def scale(values: list[float]) -> tuple[float, float]:
    """A padded range over ``values`` (one value, or equal ones, get a unit around them)."""
    lo, hi = min(values), max(values)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    pad = (hi - lo) * 0.05
    return lo - pad, hi + pad


def _axis(x, lo: float, hi: float, top: float, bottom: float) -> list[str]:
    out = []
    for t in ticks(lo, hi):
        out.append(f'<line class="grid" x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{top}" y2="{bottom}"/>'
                   f'<text class="tick" x="{x(t):.1f}" y="{bottom + 14}" text-anchor="middle">{escape(fmt(t))}</text>')
    return out


def intervals(belief: Intervals) -> Markup:
    """A forest plot: per item a bar from ``low`` to ``high`` and a dot at ``value``; the served item bold."""
    known = [v for i in belief.items for v in (i.value, i.low, i.high) if v is not None and math.isfinite(v)]
    if belief.reference is not None:
        known.append(belief.reference)
    height = ROW * len(belief.items) + 34
    if not known:
        return Markup('<p class="muted">no estimates yet</p>')
    lo, hi = scale(known)
    plot = WIDTH - LABEL - TEXT

    def x(v: float) -> float:
        return LABEL + (v - lo) / (hi - lo) * plot

    parts = _axis(x, lo, hi, 4, height - 26)
    if belief.reference is not None:
        parts.append(f'<line class="reference" x1="{x(belief.reference):.1f}" x2="{x(belief.reference):.1f}" '
                     f'y1="4" y2="{height - 26}"/>')
    for k, item in enumerate(belief.items):
        y = 4 + ROW * k + ROW / 2
        served = item.label == belief.highlight
        short = item.label if len(item.label) <= 24 else item.label[:23] + "…"
        label = escape(short) + (Markup(" ★") if served else "")
        row = [f'<text class="label{" served" if served else ""}" x="{LABEL - 8}" y="{y + 4:.1f}" '
               f'text-anchor="end">{label}</text>']
        if item.low is not None and item.high is not None:
            row.append(f'<line class="interval" x1="{x(item.low):.1f}" x2="{x(item.high):.1f}" y1="{y}" y2="{y}"/>')
        if item.value is not None:
            row.append(f'<circle class="estimate" cx="{x(item.value):.1f}" cy="{y}" r="4.5"/>')
        numbers = f"{fmt(item.value)}  [{fmt(item.low)}, {fmt(item.high)}]" if item.value is not None else "no data"
        if item.n is not None:
            numbers += f"  n {fmt(item.n)}"
        if item.note:
            numbers += f" · {item.note}"
        row.append(f'<text class="numbers" x="{WIDTH - TEXT + 8}" y="{y + 4:.1f}">{escape(numbers)}</text>')
        title = escape(item.label + (f": {item.note}" if item.note else ""))
        parts.append(f'<g class="item" data-label="{escape(item.label)}" data-value="{item.value}" '
                     f'data-low="{item.low}" data-high="{item.high}"><title>{title}</title>{"".join(row)}</g>')
    return Markup(f'<svg class="belief intervals" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" '
                  f'role="img" aria-label="{escape(belief.title)}">{"".join(parts)}</svg>')


def points(belief: Points) -> Markup:
    """One strip per dimension over its range: the spread around the centre as a band, the centre as a
    tick, each point as a dot (darker: higher score; grey: no score yet), the best as a red diamond."""
    scores = [p.score for p in belief.points if p.score is not None]
    if belief.best is not None and belief.best.score is not None:
        scores.append(belief.best.score)
    s_lo, s_hi = (min(scores), max(scores)) if scores else (0.0, 1.0)
    plot = WIDTH - LABEL - 30
    strip = 44
    parts = []
    for k, d in enumerate(belief.dimensions):
        top = 6 + strip * k
        y = top + strip / 2 - 6

        def x(v: float, d=d) -> float:
            return LABEL + (min(max(v, d.low), d.high) - d.low) / (d.high - d.low) * plot

        parts.append(f'<text class="label" x="{LABEL - 8}" y="{y + 4:.1f}" text-anchor="end">{escape(d.name)}</text>'
                     f'<line class="strip" x1="{LABEL}" x2="{LABEL + plot}" y1="{y}" y2="{y}"/>'
                     f'<text class="tick" x="{LABEL}" y="{y + 20:.1f}" text-anchor="middle">{escape(fmt(d.low))}</text>'
                     f'<text class="tick" x="{LABEL + plot}" y="{y + 20:.1f}" text-anchor="middle">{escape(fmt(d.high))}</text>')
        centre = (belief.center or {}).get(d.name)
        if centre is not None:
            half = (belief.spread or {}).get(d.name)
            if half is not None:
                parts.append(f'<rect class="spread" x="{x(centre - half):.1f}" y="{y - 9}" '
                             f'width="{x(centre + half) - x(centre - half):.1f}" height="18"/>')
            parts.append(f'<line class="center" x1="{x(centre):.1f}" x2="{x(centre):.1f}" y1="{y - 11}" y2="{y + 11}" '
                         f'data-dimension="{escape(d.name)}" data-value="{centre}"/>')
        for p in belief.points:
            if d.name not in p.values:
                continue
            if p.score is None:
                cls, shade = "point unscored", ""
            else:
                t = (p.score - s_lo) / (s_hi - s_lo) if s_hi > s_lo else 1.0
                cls, shade = "point", f' fill-opacity="{0.25 + 0.75 * t:.2f}"'
            tip = escape(f"{p.label or 'point'}: {fmt(p.values[d.name])}, score {fmt(p.score)}")
            parts.append(f'<circle class="{cls}" cx="{x(p.values[d.name]):.1f}" cy="{y}" r="4"{shade}>'
                         f'<title>{tip}</title></circle>')
        if belief.best is not None and d.name in belief.best.values:
            bx = x(belief.best.values[d.name])
            parts.append(f'<path class="best" d="M{bx:.1f},{y - 7} l6,7 l-6,7 l-6,-7 z">'
                         f'<title>{escape(f"best: {fmt(belief.best.values[d.name])}, score {fmt(belief.best.score)}")}'
                         f'</title></path>')
    height = 6 + strip * len(belief.dimensions)
    legend = ('<p class="legend muted">'
              + (f'<span class="swatch spread"></span> centre ± {escape(belief.spread_label or "spread")} · '
                 if belief.center else "")
              + '<span class="swatch point"></span> points (darker: higher score; grey: none yet)'
              + (f' · <span class="swatch best"></span> best, score {escape(fmt(belief.best.score))}' if belief.best else "")
              + "</p>")
    return Markup(f'<svg class="belief points" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" '
                  f'role="img" aria-label="{escape(belief.title)}">{"".join(parts)}</svg>{legend}')


def rules(belief: RulesTable) -> Markup:
    """A table of the rules, each confidence as a bar."""
    if not belief.rules:
        return Markup('<p class="muted">no rules mined yet</p>')
    rows = []
    for r in belief.rules:
        pct = max(0.0, min(r.confidence, 1.0)) * 100
        rows.append(f'<tr class="rule {"active" if r.status == "active" else "other"}"><td><code>{escape(r.text)}</code>'
                    f'</td><td>{escape(fmt(r.support))}</td><td><span class="bar"><span style="width:{pct:.0f}%">'
                    f'</span></span> {escape(fmt(r.confidence))}</td><td>{escape(r.status or "")}</td></tr>')
    return Markup('<table class="belief rules"><thead><tr><th>rule</th><th>support</th><th>confidence</th>'
                  f'<th>status</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')


DRAW = {"intervals": intervals, "points": points, "rules": rules}


def draw(belief: Any) -> Markup:
    return DRAW[belief.kind](belief)
