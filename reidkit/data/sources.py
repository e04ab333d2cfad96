"""One ``--data`` argument for every kind of labelled source.

``orl`` (the ORL faces, optionally ``orl:1-30``), a ``metadata.csv`` (or a folder holding
one), or a folder-per-identity tree.
"""

from __future__ import annotations

from pathlib import Path

from reidkit.data.folders import read_identity_folders
from reidkit.data.orl import read_orl
from reidkit.data.samples import Sample
from reidkit.data.whaledo import read_metadata
from reidkit.errors import ReidkitError


def read_labelled(data: str | Path) -> list[Sample]:
    s = str(data)
    if s == "orl" or s.startswith("orl:"):
        people = None
        if s.startswith("orl:"):
            try:
                lo, hi = (int(x) for x in s[4:].split("-"))
            except ValueError:
                raise ReidkitError(f"--data {s!r}: write the ORL people as orl:FIRST-LAST, e.g. orl:1-30") from None
            if not 1 <= lo <= hi <= 40:
                raise ReidkitError(f"--data {s!r}: ORL people are numbered 1 to 40")
            people = range(lo, hi + 1)
        return read_orl(people)
    p = Path(s)
    if p.is_file() and p.suffix.lower() == ".csv":
        return read_metadata(p).samples()
    if p.is_dir() and (p / "metadata.csv").is_file():
        return read_metadata(p / "metadata.csv").samples()
    return read_identity_folders(p)
