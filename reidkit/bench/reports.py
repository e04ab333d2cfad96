"""Writing a benchmark's report pair: what every tool in ``benchmarks/`` shares."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from reidkit.atomic import atomic_write


def write_report(out: Path, stem: str, doc: dict[str, Any], md: list[str]) -> None:
    """OUT/STEM.json and OUT/STEM.md, each written atomically (an interrupted run leaves the
    previous report, never half of one); the markdown is echoed."""
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / f"{stem}.json", "w", encoding="utf-8") as fh:
        fh.write(json.dumps(doc, indent=2) + "\n")
    with atomic_write(out / f"{stem}.md", "w", encoding="utf-8") as fh:
        fh.write("\n".join(md) + "\n")
    print("\n".join(md))
