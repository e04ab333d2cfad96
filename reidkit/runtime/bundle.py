"""Loading a bundle and refusing anything that does not match its manifest."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reidkit.errors import ReidkitError
from reidkit.imaging import ResizePolicy
from reidkit.runtime.bundle_format import ARTEFACTS, PRECISIONS, REEXPORT, EngineRecord, Manifest, artefact_for, verify_file

if TYPE_CHECKING:
    from reidkit.runtime.embedder import Embedder

__all__ = ["Bundle", "MemberSpec", "PRECISIONS", "REEXPORT", "load_bundle", "verify_file"]


@dataclass(frozen=True)
class MemberSpec:
    """A member as the runtime sees it: its input, and its artefacts as absolute paths."""

    name: str
    height: int
    width: int
    resize: ResizePolicy
    dim: int
    weight: float
    files: dict[str, tuple[Path, str]]  # artefact kind -> (file, sha256); fp32 always present

    @property
    def size_key(self) -> tuple[int, int, ResizePolicy]:
        """What the host resize depends on: members that share it share one resized array."""
        return (self.height, self.width, self.resize)

    @property
    def onnx(self) -> Path:
        return self.files["fp32"][0]

    @property
    def sha256(self) -> str:
        return self.files["fp32"][1]

    @property
    def mnn(self) -> tuple[Path, str] | None:
        return self.files.get("mnn")

    def artefact(self, kind: str) -> tuple[Path, str]:
        """One artefact's file and expected sha256, or an error that says how to get it."""
        if kind not in self.files:
            flag = ARTEFACTS[kind].export_flag if kind in ARTEFACTS else None
            fix = f"re-export with `reid-export ... {flag}`" if flag else f"choose one of {', '.join(PRECISIONS)}"
            raise ReidkitError(f"member {self.name!r} has no {kind} model in its bundle; {fix}")
        return self.files[kind]

    def onnx_for(self, precision: str) -> tuple[Path, str]:
        if precision not in PRECISIONS:
            raise ReidkitError(f"--precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
        return self.artefact(artefact_for("onnx", precision).kind)


@dataclass(frozen=True)
class Bundle:
    root: Path
    manifest: Manifest
    members: tuple[MemberSpec, ...]

    @property
    def dim(self) -> int:
        return sum(m.dim for m in self.members)

    @property
    def engines(self) -> list[EngineRecord]:
        return list(self.manifest.engines)

    def has(self, kind: str) -> bool:
        """Whether every member carries artefact ``kind``."""
        return all(kind in m.files for m in self.members)

    def key(self, precision: str = "fp32", backend: str = "ort-cpu") -> str:
        """Identity of what runs: the graphs (or TensorRT engines), weights, fusion, backend.

        Embedding-cache entries are valid only under the same key, so INT8 results are never
        served to an fp32 run, nor onnxruntime results to a TensorRT one.
        """
        from reidkit.runtime.backends.registry import get_backend

        fmt = get_backend(backend).fmt
        if fmt == "trt":  # engines are built from either ONNX, so they name themselves
            graphs: list[Any] = sorted(e.sha256 for e in self.engines)
        elif fmt == "aoti":  # packages are per machine: the ones this precision and device would load
            device = get_backend(backend).device
            graphs = sorted(c.sha256 for c in self.manifest.compiled if c.precision == precision and c.device == device)
        else:
            kind = artefact_for(fmt, precision).kind
            graphs = [m.files[kind][1] if kind in m.files else None for m in self.members]
        desc = [backend, precision, [(m.name, m.weight) for m in self.members], graphs, self.manifest.fusion]
        return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()

    def embedder(self, backend: str = "auto", precision: str | None = None, cache: str | Path | None = None,
                 batch_size: int = 32, workers: int | None = None, threads: int | None = None, decode: str = "auto") -> "Embedder":
        """An :class:`~reidkit.runtime.embedder.Embedder` on this bundle; use it as a context
        manager so its cache and engines are released."""
        from reidkit.runtime.embedder import Embedder

        return Embedder(self, backend=backend, batch_size=batch_size, workers=workers, threads=threads, cache=cache,
                        precision=precision, decode=decode)


def load_bundle(root: str | Path, verify: bool = True) -> Bundle:
    """Read and check a bundle directory written by ``reid-export`` (the fp32 graphs are
    sha256-checked now; every other artefact when an engine is about to load it)."""
    root = Path(root)
    manifest = Manifest.read(root)
    members = tuple(MemberSpec(m.name, m.input_height, m.input_width, m.resize, m.embedding_dim, m.weight,
                               {k: (root / ref.file, ref.sha256) for k, ref in m.files.items()}) for m in manifest.members)
    if verify:
        for spec in members:
            verify_file(spec.onnx, spec.sha256, f"member {spec.name!r} ONNX")
    return Bundle(root, manifest, members)
