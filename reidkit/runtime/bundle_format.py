"""The bundle format: one place for the manifest schema, the artefact table and the typed
records that ``reid-export`` writes and the runtime reads.

Torch-free on purpose: the export side builds these records, the lean runtime parses them,
and neither keeps its own list of manifest keys, file suffixes or tolerances. Adding an
artefact (a new engine's model file) is one row in :data:`ARTEFACTS`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from reidkit.errors import ReidkitError
from reidkit.hashing import sha256_file
from reidkit.imaging import ResizePolicy

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
REEXPORT = "re-export it with `reid-export`"
PRECISIONS = ("fp32", "fp16", "int8", "bf16")
# Precisions an engine computes at from another precision's artefact, so a bundle holds no file
# of its own for them: bf16 runs the fp32 graph with bf16 arithmetic (OpenVINO's inference
# precision hint, on CPUs with AVX512-BF16 or AMX).
COMPUTED_FROM = {"bf16": "fp32"}


@dataclass(frozen=True)
class Tolerance:
    """How far an artefact may drift from PyTorch fp32 (judged per output, as polygraphy does)."""

    min_cosine: float
    max_abs: float | None = None


FP32 = Tolerance(min_cosine=0.99999, max_abs=1e-4)
FP16 = Tolerance(min_cosine=0.999)
# INT8 moves embeddings more than FP16 does; 0.99 keeps near-identical rankings of real matches
INT8 = Tolerance(min_cosine=0.99)
# bf16 keeps 8 significant bits to fp16's 11: on pretrained Lite0 its worst image among 300 fell
# below FP16's 0.999 (benchmarks/results/precision-cpu.md), so it is judged by INT8's bound
BF16 = Tolerance(min_cosine=0.99)
TOLERANCES = {"fp32": FP32, "fp16": FP16, "int8": INT8, "bf16": BF16}  # by precision, for every check that judges one


@dataclass(frozen=True)
class RankingTolerance:
    """How far INT8 may move the rankings a user sees, judged on labelled photos (``--int8-labels``).

    A cosine bound on the worst image refuses INT8 that ranks as fp32 does: near-tied neighbours
    swap places, which costs a reviewer nothing. What costs them is a true match leaving the list
    or falling down it, so this judges exactly that, each image querying all the others.
    """

    min_true_kept: float  # share of the true matches in fp32's top-k lists that INT8's lists keep
    max_map_drop: float  # Whale-do mAP@k of fp32 minus that of INT8
    k: int = 20


INT8_RANKING = RankingTolerance(min_true_kept=0.97, max_map_drop=0.01)


@dataclass(frozen=True)
class Int8Scheme:
    """How many levels an INT8 graph's weights use, and what a CPU needs to run it faithfully.

    x86 CPUs without VNNI multiply uint8 activations by int8 weights in pairs summed into a
    saturating int16, so 8-bit weights can overflow there (onnxruntime and OpenVINO agree; the
    embedding fell to cosine 0.17 in ``research/int8-lite0/``). 7-bit weights cannot,
    and run anywhere; 8-bit weights are the more faithful start where VNNI (or a GPU) is present.
    """

    name: str
    weight_levels: int  # symmetric weights in [-levels, levels]
    needs_vnni: bool


INT8_SCHEMES = {s.name: s for s in (Int8Scheme("w7a8", 63, False), Int8Scheme("w8a8", 127, True))}
DEFAULT_INT8_SCHEME = "w7a8"  # portable: a bundle may be run on other CPUs than the one that exported it


@dataclass(frozen=True)
class Artefact:
    """One kind of model file a member can carry in its bundle."""

    kind: str  # the artefact's name: fp32 | fp16 | int8 | mnn
    fmt: str  # what reads it: onnx | mnn (TensorRT engines are per-GPU records, see EngineRecord)
    precision: str
    file_key: str  # manifest member key holding the file name
    sha_key: str  # ... and its sha256
    suffix: str  # file name = member name + suffix
    export_flag: str | None  # the reid-export flag that writes it (None: always written)

    def filename(self, member: str) -> str:
        return f"{member}{self.suffix}"

    @property
    def label(self) -> str:
        """How messages name it: "int8 ONNX", "MNN model"."""
        return f"{self.precision} ONNX" if self.fmt == "onnx" else f"{self.fmt.upper()} model"


ARTEFACTS: dict[str, Artefact] = {a.kind: a for a in (
    Artefact("fp32", "onnx", "fp32", "onnx", "sha256", ".onnx", None),
    Artefact("fp16", "onnx", "fp16", "onnx_fp16", "sha256_fp16", ".fp16.onnx", "--fp16"),
    Artefact("int8", "onnx", "int8", "onnx_int8", "sha256_int8", ".int8.onnx", "--int8"),
    Artefact("mnn", "mnn", "fp32", "mnn", "sha256_mnn", ".mnn", "--mnn"),
)}


def artefact_for(fmt: str, precision: str) -> Artefact:
    """The artefact an engine of format ``fmt`` runs at ``precision``, or an error naming what exists."""
    stored = COMPUTED_FROM.get(precision, precision)
    for a in ARTEFACTS.values():
        if a.fmt == fmt and a.precision == stored:
            return a
    have = sorted(a.precision for a in ARTEFACTS.values() if a.fmt == fmt)
    raise ReidkitError(f"--precision {precision}: {fmt} models come in {', '.join(have)} only")


@dataclass(frozen=True)
class FileRef:
    file: str
    sha256: str


@dataclass
class MemberRecord:
    name: str
    input_height: int
    input_width: int
    resize: ResizePolicy
    embedding_dim: int
    weight: float = 1.0
    files: dict[str, FileRef] = field(default_factory=dict)  # artefact kind -> file; fp32 always present
    backbone: str | None = None
    checkpoint: dict[str, Any] | None = None
    parity: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name}
        for kind, ref in self.files.items():
            a = ARTEFACTS[kind]
            d[a.file_key], d[a.sha_key] = ref.file, ref.sha256
        d.update({"input_height": self.input_height, "input_width": self.input_width, "resize": self.resize.to_dict(),
                  "embedding_dim": self.embedding_dim, "weight": self.weight})
        if self.backbone is not None:
            d["backbone"] = self.backbone
        if self.checkpoint is not None:
            d["checkpoint"] = self.checkpoint
        d["parity"] = self.parity
        return d

    @classmethod
    def from_dict(cls, m: Mapping[str, Any]) -> "MemberRecord":
        files = {a.kind: FileRef(Path(str(m[a.file_key])).name, str(m[a.sha_key])) for a in ARTEFACTS.values() if m.get(a.file_key)}
        if "fp32" not in files:
            raise KeyError("onnx")
        return cls(str(m["name"]), int(m["input_height"]), int(m["input_width"]), ResizePolicy.from_dict(m["resize"]),
                   int(m["embedding_dim"]), float(m.get("weight", 1.0)), files, m.get("backbone"), m.get("checkpoint"),
                   list(m.get("parity") or []))


def _compute_capability(value: Any) -> tuple[int, int]:
    major, minor = (int(x) for x in value)
    return major, minor


@dataclass(frozen=True)
class EngineSidecar:
    """What a TensorRT plan was built for; the runtime checks it before trusting the plan."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: tuple[int, int]
    precision: str
    strongly_typed: bool
    profile: dict[str, list[int]]  # min/opt/max input shapes [N, H, W, 3]
    onnx: str
    onnx_sha256: str
    plan_sha256: str

    @property
    def max_batch(self) -> int:
        return int(self.profile["max"][0])

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["compute_capability"] = list(self.compute_capability)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "EngineSidecar":
        return cls(str(d["tensorrt_version"]), str(d["gpu_name"]), _compute_capability(d["compute_capability"]), str(d["precision"]), bool(d["strongly_typed"]),
                   {k: [int(x) for x in v] for k, v in d["profile"].items()}, str(d["onnx"]), str(d["onnx_sha256"]),
                   str(d["plan_sha256"]))


@dataclass(frozen=True)
class EngineRecord:
    """A manifest entry for one TensorRT plan; the manifest's sha256 covers plan and sidecar."""

    member: str
    file: str  # relative to the bundle: engines/<member>.<gpu>.<trt>.<precision>.plan
    sha256: str
    sidecar: str
    sidecar_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: tuple[int, int]
    precision: str = "fp16"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["compute_capability"] = list(self.compute_capability)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "EngineRecord":
        return cls(str(d["member"]), str(d["file"]), str(d["sha256"]), str(d["sidecar"]), str(d["sidecar_sha256"]),
                   str(d["tensorrt_version"]), str(d["gpu_name"]), _compute_capability(d["compute_capability"]),
                   str(d.get("precision", "fp16")))


@dataclass(frozen=True)
class CompiledRecord:
    """A member compiled ahead of time by PyTorch (AOTInductor) for one machine.

    The package is machine code for one GPU architecture (or one CPU's instruction set) and one
    torch build, with one fixed batch size, so the runtime uses it only where all of these match
    and pads a short batch up to ``batch``. Built by ``reid-export --aoti`` after the parity gate.
    """

    member: str
    file: str  # relative to the bundle: compiled/<member>.<target>.<precision>.pt2
    sha256: str
    precision: str  # fp32 | fp16
    device: str  # cuda | cpu
    target: str  # what it was compiled for: the GPU's name, or the CPU's model
    torch_version: str
    batch: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CompiledRecord":
        return cls(str(d["member"]), str(d["file"]), str(d["sha256"]), str(d["precision"]), str(d["device"]), str(d["target"]),
                   str(d["torch_version"]), int(d["batch"]))


@dataclass
class Manifest:
    members: list[MemberRecord]
    fusion: dict[str, Any] = field(default_factory=lambda: {"flip": "mean", "members": "concat", "normalize": True})
    parity: dict[str, Any] = field(default_factory=dict)
    engines: list[EngineRecord] = field(default_factory=list)
    compiled: list[CompiledRecord] = field(default_factory=list)
    tools: dict[str, str] = field(default_factory=dict)
    created_at: str = ""
    schema_version: int = SCHEMA_VERSION

    def member(self, name: str) -> MemberRecord:
        for m in self.members:
            if m.name == name:
                return m
        raise KeyError(name)

    @property
    def int8_scheme(self) -> Int8Scheme:
        """The INT8 graphs' scheme; bundles from before the choice existed used 7-bit weights."""
        name = str(self.parity.get("int8_scheme", DEFAULT_INT8_SCHEME))
        if name not in INT8_SCHEMES:
            raise ReidkitError(f"the manifest names INT8 scheme {name!r}, which this reidkit does not know "
                               f"({', '.join(INT8_SCHEMES)}); upgrade reidkit or {REEXPORT}")
        return INT8_SCHEMES[name]

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": self.schema_version, "created_at": self.created_at, "members": [m.to_dict() for m in self.members],
                "fusion": self.fusion, "parity": self.parity, "engines": [e.to_dict() for e in self.engines],
                "compiled": [c.to_dict() for c in self.compiled], "tools": self.tools}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: Path | str = MANIFEST) -> "Manifest":
        version = d.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ReidkitError(f"{source}: manifest schema_version {version!r} is not supported by this reidkit "
                               f"(supports {SCHEMA_VERSION}); upgrade reidkit or {REEXPORT}")
        try:
            members = [MemberRecord.from_dict(m) for m in d["members"]]
            engines = [EngineRecord.from_dict(e) for e in d.get("engines") or []]
            compiled = [CompiledRecord.from_dict(c) for c in d.get("compiled") or []]
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ReidkitError(f"{source}: malformed member or engine entry ({exc}); {REEXPORT}") from None
        if not members:
            raise ReidkitError(f"{source} lists no members; {REEXPORT}")
        return cls(members, dict(d.get("fusion") or {}), dict(d.get("parity") or {}), engines, compiled, dict(d.get("tools") or {}),
                   str(d.get("created_at", "")), int(version))

    @classmethod
    def read(cls, root: Path) -> "Manifest":
        path = root / MANIFEST
        if not root.is_dir():
            raise ReidkitError(f"bundle {root} does not exist; create it with `reid-export CKPT... -o {root}`")
        if not path.is_file():
            raise ReidkitError(f"{root} has no {MANIFEST}; it is not a reidkit bundle ({REEXPORT})")
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ReidkitError(f"{path} is not valid JSON ({exc}); {REEXPORT}") from None
        if not isinstance(doc, dict):
            raise ReidkitError(f"{path} is not a reidkit manifest (a JSON object); {REEXPORT}")
        return cls.from_dict(doc, path)

    def write(self, root: Path) -> None:
        from reidkit.atomic import atomic_write

        with atomic_write(root / MANIFEST, "w", encoding="utf-8") as fh:
            json.dump(self.to_dict(), fh, indent=2)


def verify_file(path: Path, expected: str, what: str) -> None:
    if not path.is_file():
        raise ReidkitError(f"{path} is missing from the bundle; {REEXPORT}")
    got = sha256_file(path)
    if got != expected:
        raise ReidkitError(f"{what} {path} does not match its manifest sha256 (expected {expected[:12]}..., found {got[:12]}...): "
                           f"the file was changed or corrupted after export; {REEXPORT}")
