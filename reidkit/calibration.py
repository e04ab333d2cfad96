"""Scores -> P(same individual): a monotone map fitted by isotonic regression.

A cosine-derived score says which candidate is closer, not how likely it is to be the same
animal; a reviewer deciding "new individual or not" needs the latter. Isotonic regression
(scikit-learn) fits the most faithful monotone map without assuming a shape. Fitting needs
scikit-learn; applying the map needs only numpy: the file stores the fitted thresholds,
and ``np.interp`` between them is exactly what ``IsotonicRegression.predict`` computes
(linear between thresholds, clipped outside), so the lean runtime reads it.

Two levels, because they answer different questions: ``image`` (is this gallery photo the
same individual as the query?) and ``identity`` (is this individual, scored by its
aggregated best image, the query's?). An identity's aggregated score is the maximum over
several images and so runs higher than one image's for the same chance of being right.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from reidkit.atomic import atomic_write
from reidkit.errors import ReidkitError

LEVELS = ("image", "identity")
FORMAT = "reidkit-calibration/1"


@dataclass(frozen=True)
class Curve:
    x: np.ndarray  # score thresholds, increasing
    y: np.ndarray  # P(same) at each threshold, non-decreasing

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        return np.interp(np.asarray(scores, np.float64), self.x, self.y)

    def score_at(self, p: float) -> float:
        """The lowest score whose P(same) reaches ``p`` (1.0 above the curve's top, so nothing reaches it)."""
        if p <= self.y[0]:  # scores below the first threshold are clipped to y[0]
            return 0.0
        if p > self.y[-1]:
            return 1.0
        j = int(np.searchsorted(self.y, p, side="left"))  # y[j-1] < p <= y[j]
        x0, x1, y0, y1 = self.x[j - 1], self.x[j], self.y[j - 1], self.y[j]
        return float(x1 if y1 == y0 else x0 + (p - y0) * (x1 - x0) / (y1 - y0))


@dataclass(frozen=True)
class Calibration:
    curves: dict[str, Curve]
    info: dict[str, Any]  # what it was fitted on, and its held-out error when measured

    def curve(self, level: str) -> Curve:
        if level not in self.curves:
            raise ReidkitError(f"the calibration has no {level}-level map (it has {', '.join(self.curves) or 'none'}); "
                               "refit it with `reid eval --calibrate OUT.json`")
        return self.curves[level]

    def save(self, path: Path) -> None:
        doc = {"format": FORMAT, "levels": {k: {"x": c.x.tolist(), "y": c.y.tolist()} for k, c in self.curves.items()},
               "info": self.info}
        with atomic_write(path, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=1)


def load_calibration(path: str | Path) -> Calibration:
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReidkitError(f"--calibration {path} does not exist; write one with `reid eval --calibrate {path}`") from None
    except (OSError, ValueError) as exc:
        raise ReidkitError(f"--calibration {path} is not a calibration file ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ReidkitError(f"--calibration {path} is not a {FORMAT} file; write one with `reid eval --calibrate {path}`")
    curves = {}
    for level, c in doc.get("levels", {}).items():
        x, y = np.asarray(c["x"], np.float64), np.asarray(c["y"], np.float64)
        if len(x) == 0 or len(x) != len(y) or np.any(np.diff(x) < 0) or np.any(np.diff(y) < 0):
            raise ReidkitError(f"--calibration {path}: the {level} map is not monotone; refit it")
        curves[level] = Curve(x, y)
    return Calibration(curves, doc.get("info", {}))


def fit_curve(scores: np.ndarray, same: np.ndarray) -> Curve:
    """Isotonic P(same | score); needs scikit-learn (the eval extra)."""
    try:
        from sklearn.isotonic import IsotonicRegression
    except ImportError:
        raise ReidkitError("calibration needs scikit-learn; pip install 'reidkit[eval]'") from None
    scores, same = np.asarray(scores, np.float64), np.asarray(same, np.float64)
    if len(scores) < 2 or same.min() == same.max():
        raise ReidkitError("calibration needs both same-individual and different-individual pairs; give labelled data with repeat sightings")
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip").fit(scores, same)
    return Curve(np.asarray(iso.X_thresholds_, np.float64), np.asarray(iso.y_thresholds_, np.float64))


def expected_calibration_error(p: np.ndarray, same: np.ndarray, bins: int = 10) -> float:
    """ECE: |mean P - observed rate| per equal-width bin of P, weighted by the bin's share."""
    p, same = np.asarray(p, np.float64), np.asarray(same, np.float64)
    if len(p) == 0:
        return float("nan")
    b = np.minimum((p * bins).astype(int), bins - 1)
    err = 0.0
    for k in range(bins):
        m = b == k
        if m.any():
            err += m.mean() * abs(p[m].mean() - same[m].mean())
    return float(err)


def reliability(p: np.ndarray, same: np.ndarray, bins: int = 10) -> list[tuple[float, float, int]]:
    """(mean P, observed rate, count) per non-empty bin: the reliability diagram's points."""
    p, same = np.asarray(p, np.float64), np.asarray(same, np.float64)
    b = np.minimum((p * bins).astype(int), bins - 1)
    return [(float(p[b == k].mean()), float(same[b == k].mean()), int((b == k).sum())) for k in range(bins) if (b == k).any()]


# -- fitting from labelled embeddings (reid eval --calibrate) -----------------------------------

MAX_QUERIES = 4000  # query images per level: the pairs grow with the square, and a few thousand queries fit any curve


def _unit(cos: np.ndarray) -> np.ndarray:
    from reidkit.runtime.knn import to_unit_score

    return to_unit_score(cos)


def level_pairs(vectors: np.ndarray, labels: Sequence[str] | np.ndarray, level: str, rows: np.ndarray | None = None,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(scores, same) as the runtime would score them, among the images ``rows`` (default all):
    ``image``: every pair of distinct images; ``identity``: every (image, other identity or its
    own identity's other images) pair, the identity scored by its best image (``--aggregate max``)."""
    lab = np.asarray(labels, dtype=object).astype(str)
    rows = np.arange(len(lab)) if rows is None else np.asarray(rows)
    V, L = vectors[rows].astype(np.float32), lab[rows]
    q = np.arange(len(rows))
    if len(q) > MAX_QUERIES:
        q = np.sort(np.random.default_rng(seed).choice(len(rows), MAX_QUERIES, replace=False))
    S = V[q] @ V.T
    S[np.arange(len(q)), q] = -np.inf  # an image is never its own match
    if level == "image":
        keep = np.isfinite(S)
        return _unit(S[keep]), (L[q][:, None] == L[None, :])[keep]
    names, codes = np.unique(L, return_inverse=True)
    best = np.full((len(q), len(names)), -np.inf)
    for c in range(len(names)):
        best[:, c] = S[:, codes == c].max(axis=1)
    keep = np.isfinite(best)  # an identity whose only image is the query has nothing to score
    return _unit(best[keep]), (codes[q][:, None] == np.arange(len(names))[None, :])[keep]


def fit_calibration(vectors: np.ndarray, labels: Sequence[str], folds: int = 2, seed: int = 0) -> Calibration:
    """Curves fitted on every image, and their expected calibration error measured on held-out
    identities: the identities are split in ``folds``; each fold is scored by a curve fitted on the others."""
    lab = np.asarray(labels, dtype=object).astype(str)
    names = np.unique(lab)
    if len(names) < 2 * folds:
        raise ReidkitError(f"calibration needs at least {2 * folds} identities to hold some out; these embeddings have {len(names)}")
    fold_of = dict(zip(np.random.default_rng(seed).permutation(names).tolist(), np.arange(len(names)) % folds))
    fold = np.array([fold_of[x] for x in lab])
    curves: dict[str, Curve] = {}
    info: dict[str, Any] = {"images": int(len(lab)), "identities": int(len(names)), "folds": folds}
    for level in LEVELS:
        held_p, held_y = [], []
        for f in range(folds):
            curve = fit_curve(*level_pairs(vectors, lab, level, np.flatnonzero(fold != f), seed))
            s, y = level_pairs(vectors, lab, level, np.flatnonzero(fold == f), seed)
            held_p.append(curve(s))
            held_y.append(y)
        p, y = np.concatenate(held_p), np.concatenate(held_y)
        s_all, y_all = level_pairs(vectors, lab, level, None, seed)
        curves[level] = fit_curve(s_all, y_all)
        info[level] = {"pairs": int(len(s_all)), "positives": int(y_all.sum()), "held_out_ece": expected_calibration_error(p, y),
                       "reliability": reliability(p, y)}
    return Calibration(curves, info)


def evaluate_calibration(cal: Calibration, vectors: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """A fitted calibration judged on other labelled embeddings (ideally identities it never saw)."""
    out: dict[str, Any] = {}
    for level, curve in cal.curves.items():
        s, y = level_pairs(vectors, labels, level)
        p = curve(s)
        out[level] = {"pairs": int(len(s)), "ece": expected_calibration_error(p, y), "reliability": reliability(p, y)}
    return out
