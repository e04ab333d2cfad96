"""The FP16 conversion reports the converter's warnings as one counted log line."""

import logging
import warnings

import numpy as np
import pytest


def test_fp16_converter_warnings_become_one_line(tmp_path, caplog):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from reidkit.export.onnx_export import convert_fp16

    # weights far below fp16's smallest value: the converter warns about each such tensor
    inits = [numpy_helper.from_array(np.full((4, 4), 1e-9, np.float32), f"w{i}") for i in range(5)]
    nodes = [helper.make_node("MatMul", ["x" if i == 0 else f"h{i - 1}", f"w{i}"], [f"h{i}" if i < 4 else "y"]) for i in range(5)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], inits)
    src = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(src))
    with warnings.catch_warnings(record=True) as leaked, caplog.at_level(logging.INFO, logger="reidkit"):
        warnings.simplefilter("always")
        convert_fp16(src, tmp_path / "m16.onnx")
    assert not leaked  # nothing reaches the user's terminal as a UserWarning
    lines = [r.getMessage() for r in caplog.records if "converter warnings" in r.getMessage()]
    assert len(lines) == 1 and "m.onnx: 5 converter warnings" in lines[0], lines
    assert (tmp_path / "m16.onnx").exists()


def test_fp16_of_a_tf_same_padding_backbone(tmp_path):
    """tf_efficientnet_lite0 computes its 'same' pads from the input shape in float: that
    shape arithmetic must stay fp32 or the FP16 graph does not type-check."""
    import onnxruntime as ort

    from conftest import make_member
    from reidkit.export.graph import ExportGraph
    from reidkit.export.onnx_export import convert_fp16, export_onnx
    from reidkit.train.checkpoint import load_member

    model, _ = load_member(make_member(tmp_path / "l0.safetensors", size=(64, 56), backbone="tf_efficientnet_lite0"))
    export_onnx(ExportGraph(model, "mean").eval(), tmp_path / "l0.onnx")
    convert_fp16(tmp_path / "l0.onnx", tmp_path / "l0.fp16.onnx")
    x = np.random.default_rng(0).integers(0, 256, (3, 64, 56, 3), dtype=np.uint8)
    outs = []
    for name in ("l0.onnx", "l0.fp16.onnx"):
        sess = ort.InferenceSession(str(tmp_path / name), providers=["CPUExecutionProvider"])
        outs.append(sess.run(None, {sess.get_inputs()[0].name: x})[0])
    cos = (outs[0] * outs[1]).sum(1) / np.linalg.norm(outs[1], axis=1)
    assert cos.min() > 0.99


@pytest.mark.slow
def test_fp16_lite0_casts_only_where_fp32_meets_fp16(tmp_path):
    """Only preprocessing, GeM and the L2 norms stay fp32, chosen by node name: ReLU6 (Clip)
    runs in fp16, so the FP16 Lite0 graph gains a handful of casts, not one pair per clip
    (397 before the nodes were chosen by name), and still returns float32."""
    import onnx
    import onnxruntime as ort

    from conftest import make_member
    from reidkit.export.graph import ExportGraph
    from reidkit.export.onnx_export import convert_fp16, export_onnx
    from reidkit.train.checkpoint import load_member

    model, _ = load_member(make_member(tmp_path / "l0.safetensors", size=(64, 56), backbone="tf_efficientnet_lite0"))
    export_onnx(ExportGraph(model, "mean").eval(), tmp_path / "l0.onnx")
    convert_fp16(tmp_path / "l0.onnx", tmp_path / "l0.fp16.onnx")
    fp32, fp16 = (onnx.load(str(tmp_path / n)) for n in ("l0.onnx", "l0.fp16.onnx"))
    own = {n.name for n in fp32.graph.node}  # the fp32 graph's own casts: scalar 'same'-padding arithmetic
    added = [n.name for n in fp16.graph.node if n.op_type == "Cast" and n.name not in own]
    assert len(added) <= 6, added  # measured: 4 (into the backbone, into GeM, out of GeM, into the L2 norm)
    types = {v.name: v.type.tensor_type.elem_type for v in onnx.shape_inference.infer_shapes(fp16).graph.value_info}
    relu6 = [n.input[0] for n in fp16.graph.node if n.op_type == "Clip" and "/act/" in n.name]
    assert len(relu6) > 30 and {types[i] for i in relu6} == {onnx.TensorProto.FLOAT16}
    sess = ort.InferenceSession(str(tmp_path / "l0.fp16.onnx"), providers=["CPUExecutionProvider"])
    assert sess.get_outputs()[0].type == "tensor(float)"
