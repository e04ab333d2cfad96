"""Open-set identity rankings: P(same individual) per row, and the ``new_individual`` row.

A photo-ID team's hardest call is "none of the known individuals". Rather than a separate
yes/no column, the answer is one more row in each query's ranking: ``new_individual`` sits
where the threshold falls, so "first row is new_individual" means "below the threshold for
every known individual", and a reviewer reads the ranking the same way as before. The
threshold is a probability when a calibration gives ``p_same``, otherwise a score.
"""

from __future__ import annotations

import csv
from itertools import groupby, islice
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from reidkit.calibration import Calibration, Curve
from reidkit.data import schemas
from reidkit.data.csvio import write_rows
from reidkit.errors import ReidkitError

Row = tuple[str, ...]


def with_p_same(rows: Sequence[Row], curve: Curve, score_col: int = 2) -> list[Row]:
    """Each row with its P(same individual) appended (the ``p_same`` column)."""
    p = curve(np.array([float(r[score_col]) for r in rows], np.float64)).tolist() if rows else []
    return [(*r, f"{v:.6f}") for r, v in zip(rows, p)]


def insert_new_individual(rows: Iterable[Row], threshold: float, curve: Curve | None = None) -> Iterator[Row]:
    """Identity rows (grouped by query, best first) with a ``new_individual`` row per query before
    the first row under ``threshold``: its ``p_same`` (last column) when ``curve`` is given, else its score."""
    row_score = schemas.IDENTITY_MATCHES.index("score")
    if curve is None:
        new_score, value = threshold, (lambda r: float(r[row_score]))
    else:
        new_score, value = curve.score_at(threshold), (lambda r: float(r[-1]))
    for qid, group in groupby(rows, key=lambda r: r[0]):
        placed = False
        for r in group:
            if not placed and value(r) < threshold:
                yield _new_row(qid, new_score, threshold, curve)
                placed = True
            yield r
        if not placed:
            yield _new_row(qid, new_score, threshold, curve)


def _new_row(qid: str, score: float, threshold: float, curve: Curve | None) -> Row:
    base = (qid, schemas.NEW_INDIVIDUAL, f"{score:.6f}", "")
    return base if curve is None else (*base, f"{threshold:.6f}")


def rewrite_matches(path: Path, by: str, calibration: Calibration | None, new_individual: float | None, chunk: int = 4096) -> int:
    """Add ``p_same`` (the calibration's level for ``by``) and the ``new_individual`` rows to a
    written matches CSV, in place and atomically; returns the rows now in it. A second pass over
    the file keeps the ranking jobs unaware of the open set; it streams (the rows are read while
    the new file is written, ``chunk`` rows calibrated at a time), so memory stays flat however
    many queries there are."""
    if calibration is None and new_individual is None:
        raise ValueError("nothing to rewrite")
    with open(path, newline="", encoding="utf-8") as fh:  # the file is replaced only once the new one is complete
        reader = csv.reader(fh)
        header = next(reader)
        rows: Iterable[Row] = (tuple(r) for r in reader)
        curve = None
        if calibration is not None:
            curve = calibration.curve(by)
            rows, header = _chunked_p_same(rows, curve, header.index("score"), chunk), [*header, schemas.P_SAME]
        if new_individual is not None:
            rows = insert_new_individual(rows, new_individual, curve)
        return write_rows(path, header, rows)


def _chunked_p_same(rows: Iterable[Row], curve: Curve, score_col: int, chunk: int) -> Iterator[Row]:
    it = iter(rows)
    while batch := list(islice(it, chunk)):
        yield from with_p_same(batch, curve, score_col)


def check_options(by: str, calibration: Calibration | None, new_individual: float | None) -> None:
    """Refuse what cannot work before any embedding is done."""
    if new_individual is not None and by != "identity":
        raise ReidkitError("--new-individual ranks 'none of these individuals' among individuals; add --by identity")
    if new_individual is not None and not 0.0 <= new_individual <= 1.0:
        raise ReidkitError(f"--new-individual {new_individual}: a {'probability' if calibration else 'score'} lies in [0, 1]")
    if calibration is not None:
        calibration.curve(by)
