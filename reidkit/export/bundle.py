"""``reid-export``: members -> a bundle directory that passed the parity gate.

Everything is built in a temporary sibling directory and renamed into place only after
every member passed, so a failed export leaves no bundle behind.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import platform
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from reidkit import __version__
from reidkit.atomic import atomic_dir, atomic_write
from reidkit.ensemble import EnsembleEntry
from reidkit.errors import ParityError
from reidkit.export.parity import (FP16, FP32, INT8, TOLERANCES, ParityResult, batch_for, calibration_images, compare, format_table,
                                    parity_images)
from reidkit.hashing import sha256_file
from reidkit.imaging import ResizePolicy

log = logging.getLogger("reidkit")
SCHEMA_VERSION = 1


@dataclass
class ExportOptions:
    flip: str = "mean"
    opset: int = 17
    fp16: bool = False
    int8: bool = False
    trt: bool = False
    mnn: bool = False
    min_batch: int = 1
    opt_batch: int = 32
    max_batch: int = 64
    workspace_gb: float = 4.0
    timing_cache: Path | None = None
    parity_images: Path | None = None
    overwrite: bool = False


def _member_names(entries: Sequence[EnsembleEntry]) -> list[str]:
    names: list[str] = []
    for e in entries:
        base = re.sub(r"[^A-Za-z0-9_.-]", "_", e.checkpoint.stem) or "member"
        name, k = base, 2
        while name in names:
            name, k = f"{base}_{k}", k + 1
        names.append(name)
    return names


def _ort_embed(onnx_path: Path, batch: np.ndarray) -> np.ndarray:
    from reidkit.runtime.backends.ort import OrtBackend

    return OrtBackend(onnx_path, device="cpu").run(batch)


def export_bundle(entries: Sequence[EnsembleEntry], out_dir: str | Path, opts: ExportOptions) -> dict[str, Any]:
    import torch

    from reidkit.export.graph import ExportGraph
    from reidkit.export.onnx_export import convert_fp16, export_onnx
    from reidkit.train.checkpoint import load_member

    if opts.trt:
        from reidkit.export.tensorrt_build import require_tensorrt

        require_tensorrt()  # fail before doing any work: nothing is written
    if opts.mnn:
        from reidkit.export.mnn_convert import require_mnn

        require_mnn()
    images = parity_images(opts.parity_images)
    calibration = calibration_images(opts.parity_images) if opts.int8 else []
    out_dir = Path(out_dir)
    members, results = [], []
    with atomic_dir(out_dir, overwrite=opts.overwrite) as tmp:
        for entry, name in zip(entries, _member_names(entries)):
            model, doc = load_member(entry.checkpoint)
            graph = ExportGraph(model, opts.flip).eval()
            cfg = model.net.cfg
            h, w = cfg.input_size
            policy = ResizePolicy.from_dict(cfg.resize)
            onnx_path = tmp / f"{name}.onnx"
            log.info("exporting %s (%s, %dx%d) -> %s", entry.checkpoint.name, cfg.backbone, h, w, onnx_path.name)
            export_onnx(graph, onnx_path, opts.opset)
            batch = batch_for(images, h, w, policy)
            with torch.no_grad():
                ref = graph(torch.from_numpy(batch)).numpy()
            member_results = [compare(name, "onnx-fp32", ref, _ort_embed(onnx_path, batch), FP32)]
            rec: dict[str, Any] = {
                "name": name, "onnx": onnx_path.name, "sha256": sha256_file(onnx_path),
                "input_height": h, "input_width": w, "resize": policy.to_dict(), "embedding_dim": graph.output_dim,
                "weight": entry.weight, "backbone": cfg.backbone,
                "checkpoint": {"file": entry.checkpoint.name, "sha256": sha256_file(entry.checkpoint)},
            }
            if opts.fp16:
                fp16_path = tmp / f"{name}.fp16.onnx"
                convert_fp16(onnx_path, fp16_path)
                member_results.append(compare(name, "onnx-fp16", ref, _ort_embed(fp16_path, batch), FP16))
                rec.update({"onnx_fp16": fp16_path.name, "sha256_fp16": sha256_file(fp16_path)})
            if opts.int8:
                from reidkit.export.quantize import quantize_int8

                int8_path = tmp / f"{name}.int8.onnx"
                quantize_int8(onnx_path, int8_path, batch_for(calibration, h, w, policy))
                member_results.append(compare(name, "onnx-int8", ref, _ort_embed(int8_path, batch), INT8))
                rec.update({"onnx_int8": int8_path.name, "sha256_int8": sha256_file(int8_path)})
            if opts.mnn:
                from reidkit.export.mnn_convert import convert_mnn
                from reidkit.runtime.backends.mnn import MnnBackend

                mnn_path = tmp / f"{name}.mnn"
                convert_mnn(onnx_path, mnn_path)
                member_results.append(compare(name, "mnn-fp32", ref, MnnBackend(mnn_path).run(batch), FP32))
                rec.update({"mnn": mnn_path.name, "sha256_mnn": sha256_file(mnn_path)})
            rec["parity"] = [r.to_dict() for r in member_results]
            members.append(rec)
            results.extend(member_results)
        table = format_table(results)
        print(table)
        failed = [r for r in results if not r.passed]
        if failed:
            raise ParityError(f"parity gate failed for {', '.join(f'{r.member} ({r.variant})' for r in failed)}; no bundle was written")
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "members": members,
            "fusion": {"flip": opts.flip, "members": "concat", "normalize": True},
            "parity": {"images": len(images), "source": str(opts.parity_images or "ORL faces + synthetic Whale-do"),
                       **({"int8_calibration_images": len(calibration)} if opts.int8 else {}),
                       "tolerances": {p: asdict(t) for p, t in TOLERANCES.items()}},
            "engines": [],
            "tools": _tool_versions(),
        }
        if opts.trt:
            from reidkit.export.tensorrt_build import build_bundle_engines

            manifest["engines"] = build_bundle_engines(tmp, manifest, opts, images)
        write_manifest(tmp, manifest)
    return manifest


def write_manifest(bundle: Path, manifest: dict[str, Any]) -> None:
    with atomic_write(bundle / "manifest.json", "w", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=2)


def _tool_versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import timm
    import torch

    from reidkit.export.mnn_convert import mnn_version

    versions = {"reidkit": __version__, "torch": torch.__version__, "timm": timm.__version__, "onnx": onnx.__version__,
                "onnxruntime": onnxruntime.__version__, "python": platform.python_version()}
    mnn = mnn_version()
    if mnn:
        versions["mnn"] = mnn
    return versions
