"""Reading and writing the small CSV files of the Whale-do formats with clear errors.

Standard-library csv only (no pandas in the runtime). Readers check the header and name
the file, the row and the fix; writers quote ids that contain commas or quotes, and write
atomically.
"""

from __future__ import annotations

import csv
import itertools
from pathlib import Path
from typing import Iterable, Sequence

from reidkit.atomic import atomic_write
from reidkit.errors import ReidkitError


def read_rows(path: str | Path, required: Sequence[str]) -> list[dict[str, str]]:
    """All rows of a CSV as dicts; raises if the file or a required column is missing."""
    path = Path(path)
    if not path.is_file():
        raise ReidkitError(f"{path} does not exist or is not a file")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            missing = [c for c in required if c not in header]
            if missing:
                raise ReidkitError(
                    f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(header) or 'no header'}, expected at least {', '.join(required)}"
                )
            reader.fieldnames = header
            rows = []
            for row in reader:
                if None in row:
                    raise ReidkitError(f"{path}, line {reader.line_num}: more fields than the header has")
                rows.append({k: (v or "").strip() for k, v in row.items()})
            return rows
    except UnicodeDecodeError as exc:
        raise ReidkitError(f"{path}: not a UTF-8 text CSV ({exc.reason})") from None
    except csv.Error as exc:
        raise ReidkitError(f"{path}: malformed CSV ({exc})") from None


def write_rows(path: str | Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> int:
    """Write a CSV atomically and return how many rows (header excluded) it holds; ``rows``
    may be a generator that streams them. The csv module quotes ids that would break the format."""
    counter = itertools.count()
    with atomic_write(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
        w.writerow(header)
        w.writerows(row for row, _ in zip(rows, counter))
    return next(counter)
