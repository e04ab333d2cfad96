"""The review page of a catalogue match: the same page as ``reid infer --review``, its images
found through the catalogue (the last match's photos and the enrolled images)."""

from __future__ import annotations

from pathlib import Path

from reidkit.catalogue.store import Store


def catalogue_review(root: Path, matches: Path, out_dir: Path, progress: bool = True) -> Path:
    """The page for ``matches`` (``reid catalogue match`` output)."""
    from reidkit.review.model import Catalogue, build_review
    from reidkit.review.page import write_review

    with Store(root) as store:
        queries = {qid: Path(q.path) for qid, q in store.queries().items()}
        for q in store.queries().values():  # an encounter's ranking shows its first photo
            if q.encounter:
                queries.setdefault(q.encounter, Path(q.path))
        gal = store.gallery()
    cat = Catalogue(queries, dict(zip(gal.image_ids, gal.paths)), {}, dict(zip(gal.image_ids, gal.identities)), None)
    return write_review(build_review(matches, cat), Path(out_dir), progress=progress)
