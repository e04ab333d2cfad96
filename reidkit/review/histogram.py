"""The score histogram of the review page, as inline SVG.

Written by hand (numpy's histogram plus a few rectangles) rather than with matplotlib:
the page must stay self-contained text, and ``reid-infer --review`` runs in the lean
runtime environment, which has no plotting stack. ``reid-eval --plots`` uses matplotlib.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

COLOURS = {"true": "#2e9d4f", "false": "#d0453a", "all": "#4a78c2"}
LABELS = {"true": "true matches", "false": "false matches", "all": "all candidates"}


def score_histogram_svg(series: dict[str, Sequence[float]], bins: int = 24, width: int = 420, height: int = 150) -> str:
    """Overlaid histograms (e.g. ``{"true": [...], "false": [...]}``) on shared bins, with a legend."""
    values = [np.asarray(v, np.float64) for v in series.values() if len(v)]
    if not values:
        return ""
    allv = np.concatenate(values)
    lo, hi = float(allv.min()), float(allv.max())
    if hi - lo < 1e-9:
        lo, hi = lo - 0.01, hi + 0.01
    edges = np.linspace(lo, hi, bins + 1)
    counts = {k: np.histogram(np.asarray(v, np.float64), edges)[0] for k, v in series.items()}
    top = max(1, max(int(c.max()) for c in counts.values()))
    pad_l, pad_b, pad_t = 34, 22, 18
    pw, ph = width - pad_l - 18, height - pad_b - pad_t
    bw = pw / bins
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="hist" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="score histogram">']
    for name, c in counts.items():
        colour = COLOURS.get(name, "#777")
        for i, n in enumerate(c.tolist()):
            if n:
                h = ph * n / top
                parts.append(f'<rect x="{pad_l + i * bw:.1f}" y="{pad_t + ph - h:.1f}" width="{max(bw - 1, 1):.1f}" '
                             f'height="{h:.1f}" fill="{colour}" fill-opacity="0.55"><title>{name}: {n} in '
                             f'[{edges[i]:.3f}, {edges[i + 1]:.3f})</title></rect>')
    axis_y = pad_t + ph
    parts.append(f'<line x1="{pad_l}" y1="{axis_y}" x2="{pad_l + pw}" y2="{axis_y}" stroke="#555"/>')
    for x, label in ((pad_l, f"{lo:.2f}"), (pad_l + pw, f"{hi:.2f}")):
        parts.append(f'<text x="{x:.0f}" y="{axis_y + 15}" font-size="11" text-anchor="middle">{label}</text>')
    parts.append(f'<text x="{pad_l - 4}" y="{pad_t + 4}" font-size="11" text-anchor="end">{top}</text>')
    parts.append(f'<text x="{pad_l + pw / 2:.0f}" y="{axis_y + 15}" font-size="11" text-anchor="middle">score</text>')
    for i, (name, c) in enumerate(counts.items()):
        x = pad_l + 8 + i * 150
        parts.append(f'<rect x="{x}" y="3" width="10" height="10" fill="{COLOURS.get(name, "#777")}" fill-opacity="0.7"/>'
                     f'<text x="{x + 14}" y="12" font-size="11">{LABELS.get(name, name)} ({int(c.sum())})</text>')
    parts.append("</svg>")
    return "".join(parts)
