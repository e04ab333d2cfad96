"""Loading a bundle and refusing anything that does not match its manifest."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reidkit.errors import ReidkitError
from reidkit.hashing import sha256_file
from reidkit.imaging import ResizePolicy

SUPPORTED_SCHEMA = 1
REEXPORT = "re-export it with `reid-export`"
PRECISIONS = ("fp32", "fp16", "int8")
# manifest keys of each precision's ONNX and its sha256; fp32 is the member's own graph
_VARIANT_KEYS = {"fp32": ("onnx", "sha256"), "fp16": ("onnx_fp16", "sha256_fp16"), "int8": ("onnx_int8", "sha256_int8")}


@dataclass(frozen=True)
class MemberSpec:
    name: str
    height: int
    width: int
    resize: ResizePolicy
    dim: int
    weight: float
    variants: dict[str, tuple[Path, str]]  # precision -> (ONNX file, sha256); fp32 always present
    mnn: tuple[Path, str] | None = None  # MNN model converted from the fp32 ONNX (reid-export --mnn), and its sha256

    @property
    def onnx(self) -> Path:
        return self.variants["fp32"][0]

    @property
    def sha256(self) -> str:
        return self.variants["fp32"][1]

    def onnx_for(self, precision: str) -> tuple[Path, str]:
        """The ONNX of one precision and its expected sha256, or an error that says how to get it."""
        if precision not in self.variants:
            flag = {"fp16": "--fp16", "int8": "--int8"}.get(precision)
            fix = f"re-export with `reid-export ... {flag}`" if flag else f"choose one of {', '.join(PRECISIONS)}"
            raise ReidkitError(f"member {self.name!r} has no {precision} ONNX in its bundle; {fix}")
        return self.variants[precision]


@dataclass(frozen=True)
class Bundle:
    root: Path
    manifest: dict[str, Any]
    members: tuple[MemberSpec, ...]

    @property
    def dim(self) -> int:
        return sum(m.dim for m in self.members)

    def key(self, precision: str = "fp32", backend: str = "ort-cpu") -> str:
        """Identity of what runs: the graphs (or TensorRT engines), weights, fusion, backend.

        Embedding-cache entries are valid only under the same key, so INT8 results are never
        served to an fp32 run, nor onnxruntime results to a TensorRT one.
        """
        if backend == "trt":  # engines are built from either ONNX, so they name themselves
            graphs = sorted(str(e.get("sha256")) for e in self.engines())
        elif backend == "mnn":
            graphs = [m.mnn[1] if m.mnn else None for m in self.members]
        else:
            graphs = [m.onnx_for(precision)[1] for m in self.members]
        desc = [backend, precision, [(m.name, m.weight) for m in self.members], graphs, self.manifest.get("fusion")]
        return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()

    def engines(self) -> list[dict[str, Any]]:
        return list(self.manifest.get("engines") or [])


def verify_file(path: Path, expected: str, what: str) -> None:
    if not path.is_file():
        raise ReidkitError(f"{path} is missing from the bundle; {REEXPORT}")
    got = sha256_file(path)
    if got != expected:
        raise ReidkitError(f"{what} {path} does not match its manifest sha256 (expected {expected[:12]}..., found {got[:12]}...): "
                           f"the file was changed or corrupted after export; {REEXPORT}")


def load_bundle(root: str | Path, verify: bool = True) -> Bundle:
    root = Path(root)
    mpath = root / "manifest.json"
    if not root.is_dir():
        raise ReidkitError(f"bundle {root} does not exist; create it with `reid-export CKPT... -o {root}`")
    if not mpath.is_file():
        raise ReidkitError(f"{root} has no manifest.json; it is not a reidkit bundle ({REEXPORT})")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ReidkitError(f"{mpath} is not valid JSON ({exc}); {REEXPORT}") from None
    version = manifest.get("schema_version")
    if version != SUPPORTED_SCHEMA:
        raise ReidkitError(f"{mpath}: manifest schema_version {version!r} is not supported by this reidkit (supports {SUPPORTED_SCHEMA}); "
                           f"upgrade reidkit or {REEXPORT}")
    members = []
    try:
        for m in manifest["members"]:
            variants = {p: (root / Path(m[f]).name, str(m[h])) for p, (f, h) in _VARIANT_KEYS.items() if m.get(f)}
            if "fp32" not in variants:
                raise KeyError("onnx")
            mnn = (root / Path(m["mnn"]).name, str(m["sha256_mnn"])) if m.get("mnn") else None
            members.append(MemberSpec(m["name"], int(m["input_height"]), int(m["input_width"]), ResizePolicy.from_dict(m["resize"]),
                                      int(m["embedding_dim"]), float(m.get("weight", 1.0)), variants, mnn))
    except (KeyError, TypeError, ValueError) as exc:
        raise ReidkitError(f"{mpath}: malformed member entry ({exc}); {REEXPORT}") from None
    if not members:
        raise ReidkitError(f"{mpath} lists no members; {REEXPORT}")
    if verify:
        for spec in members:
            verify_file(spec.onnx, spec.sha256, f"member {spec.name!r} ONNX")
    return Bundle(root, manifest, tuple(members))
