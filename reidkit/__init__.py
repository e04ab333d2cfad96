"""reidkit: re-identification ensembles from PyTorch training to fast inference.

The public Python API (what notebooks and the CLIs call)::

    import reidkit
    bundle = reidkit.load_bundle("bundle/")
    with bundle.embedder(backend="auto", precision="fp32", cache=None) as emb:
        out = emb.embed(["a.jpg", pil_image, uint8_hwc_array])
    out.vectors, out.ids, out.skipped
    matches = reidkit.rank(queries, gallery, top_k=20)   # per query: [(gallery id, cosine), ...]

``import reidkit`` stays light on purpose: it imports no numpy, torch or engine; each
function imports the lean runtime when first called, and the runtime never imports torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["__version__", "load_bundle", "rank", "backends"]

if TYPE_CHECKING:
    from reidkit.runtime.bundle import Bundle


def load_bundle(path: str | Path, verify: bool = True) -> "Bundle":
    """Open a bundle written by ``reid-export`` (sha256-checked); ``.embedder(...)`` runs it."""
    from reidkit.runtime.bundle import load_bundle as _load

    return _load(path, verify)


def rank(queries: Any, gallery: Any, top_k: int = 20, qe: int = 0, dba: int = 0) -> list[list[tuple[Any, float]]]:
    """Per query, up to ``top_k`` (gallery id, cosine) pairs, best first (faiss, exact)."""
    from reidkit.runtime.knn import rank_embeddings

    return rank_embeddings(queries, gallery, top_k, qe, dba)


def backends() -> dict[str, str | None]:
    """Every engine in the backend table, and why it cannot run here (None: it can)."""
    from reidkit.runtime.backends.registry import BACKENDS

    return {name: spec.why_unavailable() for name, spec in BACKENDS.items()}
