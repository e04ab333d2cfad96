"""The review page: a reviewer's view of ranked matches (``reid-infer --review``, ``reid-review``).

``model`` joins a matches CSV with where the images are and what is true; ``page`` writes
the self-contained ``index.html`` and ``thumbs``. Contract (stable for scripts and tests):
each query block carries ``data-query``, each candidate ``data-candidate``, ``data-rank``,
``data-score`` and, when the truth is known, ``data-correct="true|false"``.
"""

from __future__ import annotations

from pathlib import Path

from reidkit.review.model import Catalogue, build_review, folder_catalogue, scenario_catalogue
from reidkit.review.page import write_review

__all__ = ["Catalogue", "build_review", "folder_catalogue", "scenario_catalogue", "write_review", "review_page"]


def review_page(matches: Path, out_dir: Path, *, query: Path | None = None, gallery: Path | None = None,
                metadata: Path | None = None, scenarios: Path | None = None, labels: Path | None = None,
                top_k: int | None = None, thumb_height: int = 160, progress: bool = True) -> Path:
    """The one call both CLIs make: catalogue from folders or metadata, then the page."""
    from reidkit.errors import ReidkitError

    if query is not None and gallery is not None:
        cat = folder_catalogue(Path(query), Path(gallery), labels)
    elif metadata is not None:
        cat = scenario_catalogue(Path(metadata), scenarios, labels)
    else:
        raise ReidkitError("the review page needs --query and --gallery (folder mode) or --metadata [--scenarios] (scenario mode)")
    return write_review(build_review(Path(matches), cat, top_k), Path(out_dir), thumb_height, progress)
