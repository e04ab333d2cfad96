"""One ``--data`` argument for every kind of labelled source.

``orl`` (the ORL faces, optionally ``orl:1-30`` or ``orl:1-10,21-30``), a metadata or wildlife-datasets CSV (or
a folder holding a ``metadata.csv``), a COCO JSON, or a folder-per-identity tree.
"""

from __future__ import annotations

from pathlib import Path

from reidkit.data.folders import read_identity_folders
from reidkit.data.orl import read_orl
from reidkit.data.samples import Sample
from reidkit.data.items import read_items, report_problems
from reidkit.errors import ReidkitError


def orl_people(spec: str) -> list[int]:
    """``1-30`` or ``1-10,21-30``: the ORL people an ``orl:`` spec names. Lists of ranges exist
    so that every ten of s1-s30 can be a development fold (research/orl-recipe/orl_pretrained.py)."""
    people: list[int] = []
    for part in spec.split(","):
        try:
            lo, hi = (int(x) for x in part.split("-")) if "-" in part else (int(part),) * 2
        except ValueError:
            raise ReidkitError(f"--data orl:{spec}: write the ORL people as orl:FIRST-LAST (several joined by commas), "
                               "e.g. orl:1-30 or orl:1-10,21-30") from None
        if not 1 <= lo <= hi <= 40:
            raise ReidkitError(f"--data orl:{spec}: ORL people are numbered 1 to 40, each range FIRST-LAST with FIRST <= LAST")
        twice = sorted(set(people) & set(range(lo, hi + 1)))
        if twice:
            raise ReidkitError(f"--data orl:{spec}: person s{twice[0]} is named twice")
        people += range(lo, hi + 1)
    return people


def read_labelled(data: str | Path, coco_identity: str | None = None) -> list[Sample]:
    """Identified samples from any layout :func:`reidkit.data.items.read_items` reads; images of
    no known individual (no label, or the wildlife-datasets ``unknown``) never train."""
    s = str(data)
    if s == "orl" or s.startswith("orl:"):
        people = orl_people(s[4:]) if s.startswith("orl:") else None
        return read_orl(people)
    p = Path(s)
    if p.is_dir() and (p / "metadata.csv").is_file():
        p = p / "metadata.csv"
    if p.is_dir():
        return read_identity_folders(p)
    found = read_items(p, coco_identity)
    report_problems(found.problems)
    kept = found.require_identified("training and evaluation")
    return [Sample(it.path, it.identity, it.extra.get("viewpoint"), it.id, it.bbox) for it in kept if it.identity is not None]
