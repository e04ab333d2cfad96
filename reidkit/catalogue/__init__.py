"""The growing gallery of a photo-ID team: identities, images, embeddings, a persisted index,
and the reviewed decisions that grow it, with an exact undo (``reid catalogue``).

No torch: a catalogue runs on the lean runtime (``reidkit.load_bundle(...).embedder(...)``).
"""

from __future__ import annotations

from reidkit.catalogue.core import ConflictError, apply_decisions, info, init_catalogue, match, undo

__all__ = ["ConflictError", "apply_decisions", "info", "init_catalogue", "match", "undo"]
