"""ONNX -> MNN for the fastest fp32 CPU backend (``reid-export --mnn``).

Why MNN: on a CPU the fp32 networks are compute-bound and onnxruntime and OpenVINO already
run their convolutions near this CPU's measured SGEMM peak; MNN's 3x3 convolutions use
Winograd transforms, which do fewer multiplications for the same result (to ~1e-7 in
cosine), so it runs the same ensemble ~1.2-1.4x faster than onnxruntime on 2 AVX2 cores.

Three things about MNN this module works around, all measured:

- MNN's converter mishandles a negative-step ``Slice`` (our in-graph flip) followed by the
  batch ``Concat``: the embeddings came out at cosine 0.77 against onnxruntime. The graph
  handed to the converter flips with an equivalent ``Gather`` of reversed indices instead,
  and the export's parity gate checks the converted model against PyTorch like any other
  artefact, so a converter fault of this kind fails the export instead of shipping.
- The Python wrappers in ``MNN.tools`` run ``pip install`` and send usage logs to a remote
  server when imported. reidkit never imports them: it calls the converter's compiled
  entry point (``_tools.mnnconvert``) in a child process, which also keeps the
  converter's console chatter and any crash out of the export process.
- MNN's converter fuses the exact GELU that torch exports (``x * (1 + erf(x / sqrt 2)) * 0.5``)
  into its own GELU operator, which computes the tanh approximation: up to 5e-4 off per
  value, enough to fail the fp32 gate on MaxViT-class backbones. MNN's ``Erf`` itself is
  exact, so the graph handed to the converter multiplies in another order
  (``x * ((1 + erf(...)) * 0.5)``), which the fusion does not match, and the exact GELU runs.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from reidkit.errors import MissingDependencyError, ReidkitError

INSTALL = "pip install 'reidkit[mnn]'"


def require_mnn() -> None:
    """Fail before any work is done when MNN is not installed."""
    import importlib.util

    if importlib.util.find_spec("MNN") is None or importlib.util.find_spec("_tools") is None:
        raise MissingDependencyError(f"reid-export --mnn needs MNN; {INSTALL}")


def mnn_version() -> str | None:
    """The installed MNN's version from its package metadata (importing MNN prints a banner)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("MNN")
    except PackageNotFoundError:
        return None


def flip_as_gather(src: str | Path, dst: str | Path) -> int:
    """Copy an ONNX model with every reversing ``Slice`` (step -1 over a whole static axis)
    replaced by a ``Gather`` of reversed indices; returns how many were replaced."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.shape_inference.infer_shapes(onnx.load(str(src)))
    g = model.graph
    consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    for n in g.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    shapes = {}
    for vi in list(g.value_info) + list(g.input):
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    replaced = 0
    for n in list(g.node):
        if n.op_type != "Slice" or len(n.input) < 5 or any(x not in consts for x in n.input[1:5]):
            continue
        starts, ends, axes, steps = (consts[x].reshape(-1) for x in n.input[1:5])
        shape = shapes.get(n.input[0])
        if len(axes) != 1 or steps[0] != -1 or starts[0] != -1 or shape is None:
            continue
        axis = int(axes[0]) % len(shape)
        size = shape[axis]
        if size is None or ends[0] > -size - 1:
            continue  # not a whole-axis reversal of a static axis
        name = f"{n.output[0]}_reverse_indices"
        g.initializer.append(numpy_helper.from_array(np.arange(size - 1, -1, -1, dtype=np.int64), name=name))
        pos = list(g.node).index(n)
        g.node.remove(n)
        g.node.insert(pos, helper.make_node("Gather", [n.input[0], name], [n.output[0]], axis=axis, name=f"{n.name or 'flip'}_gather"))
        replaced += 1
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return replaced


def exact_gelu(src: str | Path, dst: str | Path) -> int:
    """Copy an ONNX model with each exact GELU's tail ``(x * (1 + erf(x / sqrt 2))) * 0.5``
    reordered to ``x * ((1 + erf(x / sqrt 2)) * 0.5)``, a form MNN's GELU fusion does not match;
    returns how many were reordered."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    g = model.graph
    consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    for n in g.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    readers: dict[str, list[Any]] = {}
    for n in g.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)

    def only_reader(name: str, op: str) -> Any:
        r = readers.get(name, [])
        return r[0] if len(r) == 1 and r[0].op_type == op else None

    reordered = 0
    for erf in [n for n in g.node if n.op_type == "Erf"]:
        add = only_reader(erf.output[0], "Add")
        mul = only_reader(add.output[0], "Mul") if add is not None else None
        half = only_reader(mul.output[0], "Mul") if mul is not None else None
        if add is None or mul is None or half is None:
            continue
        x = next((i for i in mul.input if i != add.output[0]), None)
        c = next((i for i in half.input if i != mul.output[0]), None)
        if x is None or c not in consts:
            continue
        name = f"{half.output[0]}_factor"  # an initializer: readable wherever the node now sits
        g.initializer.append(numpy_helper.from_array(consts[c], name=name))
        mul.input[:] = [add.output[0], name]  # (1 + erf) * 0.5
        half.input[:] = [x, mul.output[0]]  # x * that
        reordered += 1
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return reordered


def convert_mnn(onnx_path: str | Path, mnn_path: str | Path, timeout_s: float = 600.0) -> None:
    """Convert one member's fp32 ONNX to an MNN model file (see the module docstring)."""
    require_mnn()
    onnx_path, mnn_path = Path(onnx_path), Path(mnn_path)
    with tempfile.TemporaryDirectory(prefix="reidkit-mnn-") as tmp:
        src = Path(tmp) / "model.onnx"
        flip_as_gather(onnx_path, src)
        exact_gelu(src, src)
        argv = ["mnnconvert", "-f", "ONNX", "--modelFile", str(src), "--MNNModel", str(mnn_path), "--bizCode", "reidkit"]
        code = "import sys, _tools; _tools.mnnconvert(sys.argv[1:])"
        try:
            res = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise ReidkitError(f"MNN's converter did not finish {onnx_path.name} within {timeout_s:.0f}s") from None
        log = (res.stdout + res.stderr).strip()
        if res.returncode != 0 or not mnn_path.is_file() or mnn_path.stat().st_size == 0 or "Converted Success" not in log:
            tail = "\n".join(log.splitlines()[-8:])
            raise ReidkitError(f"MNN could not convert {onnx_path.name} (exit {res.returncode}):\n{tail}\n"
                               "export without --mnn, or report the graph to MNN")
