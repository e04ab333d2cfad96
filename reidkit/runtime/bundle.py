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


@dataclass(frozen=True)
class MemberSpec:
    name: str
    onnx: Path
    onnx_fp16: Path | None
    height: int
    width: int
    resize: ResizePolicy
    dim: int
    weight: float
    sha256: str
    sha256_fp16: str | None


@dataclass(frozen=True)
class Bundle:
    root: Path
    manifest: dict[str, Any]
    members: tuple[MemberSpec, ...]

    @property
    def dim(self) -> int:
        return sum(m.dim for m in self.members)

    @property
    def key(self) -> str:
        """Identity of what the bundle computes: member graphs, weights and fusion."""
        desc = [(m.name, m.sha256, m.weight) for m in self.members], self.manifest.get("fusion")
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
            onnx = root / Path(m["onnx"]).name
            fp16 = root / Path(m["onnx_fp16"]).name if m.get("onnx_fp16") else None
            members.append(MemberSpec(m["name"], onnx, fp16, int(m["input_height"]), int(m["input_width"]),
                                      ResizePolicy.from_dict(m["resize"]), int(m["embedding_dim"]), float(m.get("weight", 1.0)),
                                      m["sha256"], m.get("sha256_fp16")))
    except (KeyError, TypeError, ValueError) as exc:
        raise ReidkitError(f"{mpath}: malformed member entry ({exc}); {REEXPORT}") from None
    if not members:
        raise ReidkitError(f"{mpath} lists no members; {REEXPORT}")
    if verify:
        for spec in members:
            verify_file(spec.onnx, spec.sha256, f"member {spec.name!r} ONNX")
    return Bundle(root, manifest, tuple(members))
