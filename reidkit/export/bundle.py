"""``reid-export``: members -> a bundle directory that passed the parity gate.

Everything is built in a temporary sibling directory and renamed into place only after
every member passed, so a failed export leaves no bundle behind.
"""

from __future__ import annotations

import datetime as _dt
import logging
import platform
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from reidkit import __version__
from reidkit.atomic import atomic_dir
from reidkit.ensemble import EnsembleEntry
from reidkit.errors import ParityError, ReidkitError
from reidkit.export.parity import (TOLERANCES, LabelledSet, RankingResult, batch_for, calibration_images, compare, distillation_images,
                                   format_ranking_table, format_table, labelled_images, parity_images, rank_compare)
from reidkit.hashing import sha256_file
from reidkit.imaging import ResizePolicy, decode_floor
from reidkit.runtime.bundle_format import (ARTEFACTS, DEFAULT_INT8_SCHEME, INT8_RANKING, INT8_SCHEMES, CompiledRecord, FileRef, Manifest, MemberRecord,
                                           Tolerance)

from reidkit.export.options import INT8_KEEP_FP32, INT8_LABELS_LIMIT, INT8_METHODS, ExportOptions, int8_keep_fp32

log = logging.getLogger("reidkit")
def gate_tolerances(opts: ExportOptions) -> dict[str, Tolerance]:
    """The tolerances this export judges by: the stated ones, with the user's INT8 threshold if given.

    Only INT8 is the user's to set: it is the one variant that trades fidelity for speed, and how
    much a ranking can bear is theirs to judge (on their own photos); fp32 and FP16 drifting is a bug.
    """
    if opts.int8_min_cosine is None:
        return dict(TOLERANCES)
    if not opts.int8:
        raise ReidkitError("--int8-min-cosine sets the INT8 gate; it needs --int8")
    if not 0 < opts.int8_min_cosine <= 1:
        raise ReidkitError(f"--int8-min-cosine {opts.int8_min_cosine}: give a cosine in (0, 1], e.g. 0.985")
    if opts.int8_min_cosine < TOLERANCES["int8"].min_cosine:
        log.warning("INT8 gate lowered to min cosine %g (default %g): the INT8 embeddings may move more than reidkit vouches for; "
                    "compare the INT8 and fp32 rankings on your own photos before you rely on them (--int8-labels judges by them)",
                    opts.int8_min_cosine, TOLERANCES["int8"].min_cosine)
    return {**TOLERANCES, "int8": Tolerance(min_cosine=opts.int8_min_cosine)}


def check_ranking_gate(opts: ExportOptions) -> None:
    """Refuse, before any work, a ``--int8-labels`` that could not judge this export."""
    if opts.int8_labels is None:
        return
    if not opts.int8:
        raise ReidkitError("--int8-labels sets how the INT8 gate judges; it needs --int8")
    if opts.int8_min_cosine is not None:
        raise ReidkitError("--int8-labels and --int8-min-cosine both set the INT8 gate: with labelled photos it judges "
                           "rankings, not cosine; give one of them")
    if opts.int8_images is not None and Path(opts.int8_labels).resolve() == Path(opts.int8_images).resolve():
        raise ReidkitError(f"--int8-labels {opts.int8_labels} is also --int8-images: the gate must judge images the INT8 "
                           "model did not train on; give two folders")


def _member_names(entries: Sequence[EnsembleEntry]) -> list[str]:
    names: list[str] = []
    for e in entries:
        base = re.sub(r"[^A-Za-z0-9_.-]", "_", e.checkpoint.stem) or "member"
        name, k = base, 2
        while name in names:
            name, k = f"{base}_{k}", k + 1
        names.append(name)
    return names


def _decode_floor(entries: Sequence[EnsembleEntry]) -> tuple[int, int] | None:
    """The members' decode floor, read from the checkpoints' metadata before any network is
    built, so the gate's photos are decoded as the runtime will decode them."""
    from reidkit.checkpoint_meta import read_member_metadata

    inputs = []
    for entry in entries:
        member = read_member_metadata(entry.checkpoint)["member"]
        h, w = member["input_size"]
        inputs.append((int(h), int(w), ResizePolicy.from_dict(member.get("resize", {}))))
    return decode_floor(inputs)


def _run_artefact(kind: str, path: Path, batch: np.ndarray) -> np.ndarray:
    """The artefact's output on the parity batch, through the runtime engine that will run it."""
    from reidkit.runtime.backends.registry import get_backend

    fmt = ARTEFACTS[kind].fmt
    spec = get_backend("ort-cpu" if fmt == "onnx" else fmt)
    engine = spec.load_class()(path, **spec.options)
    chunk = 64  # the ranking gate's labelled photos can number thousands
    return np.concatenate([engine.run(batch[i:i + chunk]) for i in range(0, len(batch), chunk)])


def _make_fp16(src: Path, dst: Path, ctx: dict[str, Any]) -> None:
    from reidkit.export.onnx_export import convert_fp16

    convert_fp16(src, dst)


def _make_int8(src: Path, dst: Path, ctx: dict[str, Any]) -> None:
    opts: ExportOptions = ctx["opts"]
    if opts.int8_method == "distil":
        from reidkit.export.distil_int8 import distil_int8
        from reidkit.export.onnx_export import export_onnx

        images = batch_for(ctx["calibration"], ctx["h"], ctx["w"], ctx["policy"])
        from reidkit.export.twin_cache import fetch_twin, store_twin, twin_key

        recipe = _distil_recipe(opts)
        key = ""
        if opts.int8_cache is not None:
            import torch

            key = twin_key(images, checkpoint=ctx["checkpoint_sha256"], flip=opts.flip, opset=opts.opset, recipe=recipe,
                           device=ctx["device"], torch=torch.__version__, reidkit=__version__)
            if fetch_twin(opts.int8_cache, ctx["name"], key, dst):
                return
        log.info("INT8 distillation: %d steps, lr %g, batch %d, %s, depthwise convolutions %s, %d images, on %s", recipe["steps"],
                 recipe["lr"], recipe["batch"], recipe["scheme"], "fp32" if recipe["fp32_depthwise"] else "INT8", len(images), ctx["device"])
        student = distil_int8(ctx["graph"], images, device=ctx["device"], **recipe)
        export_onnx(student, dst, opts.opset)  # type: ignore[arg-type]  # the fake-quantised twin of an ExportGraph
        if opts.int8_cache is not None:
            store_twin(opts.int8_cache, ctx["name"], key, dst)
        return
    from reidkit.export.quantize import quantize_int8

    quantize_int8(src, dst, batch_for(ctx["calibration"], ctx["h"], ctx["w"], ctx["policy"]), scheme=opts.int8_scheme,
                  keep_depthwise=int8_keep_fp32(opts) == "depthwise")


def _distil_recipe(opts: ExportOptions) -> dict[str, Any]:
    """The distillation settings this export uses (the defaults filled in), as the manifest records them."""
    from reidkit.export.distil_int8 import DEFAULT_BATCH, DEFAULT_LR, DEFAULT_STEPS

    def given(value: Any, default: Any) -> Any:  # not `or`: --int8-steps 0 means no training, not the default
        return default if value is None else value

    return {"steps": given(opts.int8_steps, DEFAULT_STEPS), "lr": given(opts.int8_lr, DEFAULT_LR),
            "batch": given(opts.int8_batch, DEFAULT_BATCH), "fp32_depthwise": int8_keep_fp32(opts) == "depthwise",
            "scheme": opts.int8_scheme}


def _make_mnn(src: Path, dst: Path, ctx: dict[str, Any]) -> None:
    from reidkit.export.mnn_convert import convert_mnn

    convert_mnn(src, dst)


# artefact kind (bundle_format.ARTEFACTS) -> how the export makes it from the member's fp32 ONNX
MAKERS = {"fp16": _make_fp16, "int8": _make_int8, "mnn": _make_mnn}


def export_bundle(entries: Sequence[EnsembleEntry], out_dir: str | Path, opts: ExportOptions) -> dict[str, Any]:
    import torch

    from reidkit.export.graph import ExportGraph
    from reidkit.export.onnx_export import export_onnx
    from reidkit.train.checkpoint import load_member

    if opts.trt:
        from reidkit.export.tensorrt_build import require_tensorrt

        require_tensorrt()  # fail before doing any work: nothing is written
    if opts.mnn:
        from reidkit.export.mnn_convert import require_mnn

        require_mnn()
    aoti_device = resolve_device(opts.device) if opts.aoti else None
    if aoti_device is not None:
        from reidkit.export.aoti_build import require_aoti

        if opts.aoti_batch < 1:
            raise ReidkitError(f"--aoti-batch must be at least 1, got {opts.aoti_batch}")
        require_aoti(aoti_device)
    extra = [k for k in MAKERS if getattr(opts, k)]
    check_ranking_gate(opts)
    tolerances = gate_tolerances(opts)
    floor = _decode_floor(entries)
    images = parity_images(opts.parity_images, min_hw=floor)
    if opts.int8_method not in INT8_METHODS:
        raise ReidkitError(f"unknown INT8 method {opts.int8_method!r}; use one of {', '.join(INT8_METHODS)}")
    if opts.int8_keep_fp32 is not None and opts.int8_keep_fp32 not in INT8_KEEP_FP32:
        raise ReidkitError(f"unknown --int8-keep-fp32 {opts.int8_keep_fp32!r}; use one of {', '.join(INT8_KEEP_FP32)}")
    if opts.int8_keep_fp32 is not None and not opts.int8:
        raise ReidkitError("--int8-keep-fp32 sets what the INT8 graph leaves in fp32; it needs --int8")
    if opts.int8_cache is not None and opts.int8_method != "distil":
        raise ReidkitError("--int8-cache applies to --int8-method distil only (post-training INT8 takes seconds)")
    check_int8_scheme(opts)
    labelled: LabelledSet | None = labelled_images(opts.int8_labels, INT8_LABELS_LIMIT, floor) if opts.int8_labels is not None else None
    if opts.int8_method == "distil" and opts.int8:
        calibration = distillation_images(opts.int8_images, opts.parity_images, min_hw=floor)
    else:
        calibration = calibration_images(opts.parity_images, min_hw=floor) if opts.int8 else []
    device = resolve_device(opts.device) if opts.int8 and opts.int8_method == "distil" else "cpu"
    out_dir = Path(out_dir)
    members: list[MemberRecord] = []
    compiled: list[CompiledRecord] = []
    jobs: list[Any] = []  # AOTInductor packages to compile (aoti_build.CompileJob)
    parity_sets: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    results = []
    ranked: list[RankingResult] = []
    embedded: list[tuple[np.ndarray, np.ndarray, float]] = []  # per member: fp32 and INT8 embeddings of the labelled photos, weight
    with atomic_dir(out_dir, overwrite=opts.overwrite) as tmp:
        for entry, name in zip(entries, _member_names(entries)):
            model, doc = load_member(entry.checkpoint)
            checkpoint_sha256 = sha256_file(entry.checkpoint)
            graph = ExportGraph(model, opts.flip).eval()
            cfg = model.net.cfg
            h, w = cfg.input_size
            policy = ResizePolicy.from_dict(cfg.resize)
            onnx_path = tmp / ARTEFACTS["fp32"].filename(name)
            log.info("exporting %s (%s, %dx%d) -> %s", entry.checkpoint.name, cfg.backbone, h, w, onnx_path.name)
            export_onnx(graph, onnx_path, opts.opset)
            batch = batch_for(images, h, w, policy)
            with torch.no_grad():
                ref = graph(torch.from_numpy(batch)).numpy()
            rec = MemberRecord(name, h, w, policy, graph.output_dim, entry.weight, {"fp32": FileRef(onnx_path.name, sha256_file(onnx_path))},
                               cfg.backbone, {"file": entry.checkpoint.name, "sha256": checkpoint_sha256})
            member_results = [compare(name, "onnx-fp32", ref, _run_artefact("fp32", onnx_path, batch), tolerances["fp32"])]
            ctx = {"calibration": calibration, "h": h, "w": w, "policy": policy, "graph": graph, "opts": opts, "device": device,
                   "name": name, "checkpoint_sha256": checkpoint_sha256}
            for kind in extra:
                art = ARTEFACTS[kind]
                path = tmp / art.filename(name)
                MAKERS[kind](onnx_path, path, ctx)
                variant = f"{art.fmt}-{art.precision}"
                result = compare(name, variant, ref, _run_artefact(kind, path, batch), tolerances[art.precision])
                if kind == "int8" and labelled is not None:  # judged by the rankings it gives, its cosine shown for the reader
                    result.gating = False
                    stack = batch_for(labelled.images, h, w, policy)
                    embedded.append((_run_artefact("fp32", onnx_path, stack), _run_artefact(kind, path, stack), entry.weight))
                    ranked.append(rank_compare(name, variant, embedded[-1][0], embedded[-1][1], labelled.labels, INT8_RANKING))
                member_results.append(result)
                rec.files[kind] = FileRef(path.name, sha256_file(path))
            if aoti_device is not None:
                from reidkit.export.aoti_build import aoti_precisions, compile_jobs

                jobs += compile_jobs(tmp, name, entry.checkpoint, opts.flip, device=aoti_device, batch=opts.aoti_batch,
                                     precisions=aoti_precisions(aoti_device, opts.fp16))
                parity_sets[name] = (batch, ref)
            rec.parity = [r.to_dict() for r in member_results]
            members.append(rec)
            results.extend(member_results)
        if jobs and all(r.passed or not r.gating for r in results):  # compiled side by side once every member's ONNX passed
            from reidkit.export.aoti_build import compile_all, gate_compiled

            compile_all(jobs)
            compiled, compiled_results = gate_compiled(tmp, jobs, parity_sets, tolerances)
            for rec in members:
                rec.parity += [r.to_dict() for r in compiled_results if r.member == rec.name]
            results.extend(compiled_results)
        if labelled is not None and len(embedded) > 1:  # what a user ranks with: the fused ensemble
            from reidkit.runtime.members import fuse

            weights = [w for _, _, w in embedded]
            ranked.append(rank_compare("ensemble", "onnx-int8", fuse([e[0] for e in embedded], weights),
                                       fuse([e[1] for e in embedded], weights), labelled.labels, INT8_RANKING))
        table = format_table(results)
        print(table)
        if ranked:
            print(format_ranking_table(ranked))
        failed = [f"{r.member} ({r.variant})" for r in results if r.gating and not r.passed]
        failed += [f"{r.member} ({r.variant} ranking)" for r in ranked if not r.passed]
        if failed:
            raise ParityError(f"parity gate failed for {', '.join(failed)}; no bundle was written")
        manifest = Manifest(
            members=members,
            fusion={"flip": opts.flip, "members": "concat", "normalize": True},
            parity={"images": len(images), "source": str(opts.parity_images or "ORL faces + synthetic Whale-do"),
                    **({"int8_calibration_images": len(calibration), "int8_method": opts.int8_method,
                        "int8_scheme": opts.int8_scheme, "int8_keep_fp32": int8_keep_fp32(opts)} if opts.int8 else {}),
                    **({"int8_distil": _distil_recipe(opts)} if opts.int8 and opts.int8_method == "distil" else {}),
                    **({"int8_ranking": _ranking_record(labelled, ranked)} if labelled is not None else {}),
                    "tolerances": {**{p: asdict(t) for p, t in tolerances.items()},
                                   **({"int8_ranking": asdict(INT8_RANKING)} if labelled is not None else {})}},
            compiled=compiled,
            tools=_tool_versions(),
            created_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        )
        if opts.trt:
            from reidkit.export.tensorrt_build import build_bundle_engines

            manifest.engines = build_bundle_engines(tmp, manifest, opts, images)
        manifest.write(tmp)
    return manifest.to_dict()


def _ranking_record(labelled: LabelledSet, ranked: Sequence[RankingResult]) -> dict[str, Any]:
    """What the manifest keeps of the ranking gate: the photos it ranked and each row it judged."""
    return {"labels": labelled.source, "images": len(labelled.images), "identities": labelled.n_identities,
            "gate": "INT8 judged by its rankings on these labelled photos; its cosine rows are shown only",
            "results": [r.to_dict() for r in ranked]}


def check_int8_scheme(opts: ExportOptions) -> None:
    """Refuse, before any work, a scheme this machine could not judge: the gate runs the INT8
    graph here, and where 8-bit products saturate it would fail for the CPU's sake, not the model's."""
    from reidkit.cpus import int8_saturates

    if opts.int8_scheme not in INT8_SCHEMES:
        raise ReidkitError(f"unknown --int8-scheme {opts.int8_scheme!r}; use one of {', '.join(INT8_SCHEMES)}")
    if opts.int8_scheme != DEFAULT_INT8_SCHEME and not opts.int8:
        raise ReidkitError(f"--int8-scheme {opts.int8_scheme} applies to --int8 only")
    why = int8_saturates() if INT8_SCHEMES[opts.int8_scheme].needs_vnni else None
    if why:
        raise ReidkitError(f"--int8-scheme {opts.int8_scheme}: {why}; the parity gate could not check such a graph here. "
                           f"Export on a CPU with VNNI, or use --int8-scheme {DEFAULT_INT8_SCHEME} (runs on any CPU)")


def resolve_device(device: str) -> str:
    """Where INT8 distillation trains: ``auto`` takes the GPU when torch sees one."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ReidkitError(f"--device {device}: torch sees no CUDA GPU here; use --device cpu (slower) or auto")
    return device


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
