"""Ensemble lists: a TOML file naming member checkpoints with optional per-member weights.

```toml
[[members]]
checkpoint = "m1.safetensors"   # relative to this file
weight = 1.0
```
Read with the standard library (tomllib); written by ``reid-train --config`` with tomli-w.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from reidkit.atomic import atomic_write
from reidkit.errors import ReidkitError


@dataclass(frozen=True)
class EnsembleEntry:
    checkpoint: Path
    weight: float = 1.0


def read_ensemble(path: str | Path) -> list[EnsembleEntry]:
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReidkitError(f"ensemble file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ReidkitError(f"{path}: invalid TOML ({exc})") from None
    members = doc.get("members")
    if not isinstance(members, list) or not members:
        raise ReidkitError(f"{path}: no [[members]] entries; each needs checkpoint = \"FILE.safetensors\"")
    out = []
    for i, m in enumerate(members, start=1):
        if "checkpoint" not in m:
            raise ReidkitError(f"{path}: member {i} has no checkpoint = \"...\"")
        w = m.get("weight", 1.0)
        if not isinstance(w, (int, float)) or w <= 0:
            raise ReidkitError(f"{path}: member {i} weight {w!r} must be a positive number")
        out.append(EnsembleEntry((path.parent / m["checkpoint"]).resolve(), float(w)))
    return out


def resolve_members(inputs: Sequence[str | Path]) -> list[EnsembleEntry]:
    """``reid-export CKPT...`` or ``reid-export ENSEMBLE.toml``: one list of members."""
    out: list[EnsembleEntry] = []
    for item in inputs:
        p = Path(item)
        if p.suffix == ".toml":
            out.extend(read_ensemble(p))
        elif p.suffix == ".safetensors":
            out.append(EnsembleEntry(p.resolve()))
        else:
            raise ReidkitError(f"{p}: expected a .safetensors checkpoint or an ensemble .toml")
    if not out:
        raise ReidkitError("no members given; pass checkpoints or an ensemble .toml")
    return out


def write_ensemble(path: str | Path, entries: Sequence[EnsembleEntry]) -> None:
    """Written with tomli-w, so any path (quotes, backslashes, unicode) reads back as written."""
    import tomli_w

    path = Path(path)
    members = []
    for e in entries:
        try:
            rel = e.checkpoint.resolve().relative_to(path.parent.resolve())
        except ValueError:
            rel = e.checkpoint.resolve()
        members.append({"checkpoint": rel.as_posix(), "weight": float(e.weight)})
    with atomic_write(path, "w", encoding="utf-8") as fh:
        fh.write("# reidkit ensemble: written by reid-train --config\n\n" + tomli_w.dumps({"members": members}))
