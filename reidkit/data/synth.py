"""A seeded synthetic Where's Whale-do data set, at any scale.

Real beluga photos can't ship with the project, so tests, the demo and the benchmarks use
images with the same shapes and statistics: ~92% tall top views near 438x152 and ~8% wide
lateral views near 344x1805, identities with repeat sightings, and scenarios whose
queries may be in their own database. Each identity carries its own scar/spot pattern in
body coordinates (one for the top view, one for the lateral view), drawn under random
crop, scale, rotation, colour jitter and noise, so the identities are learnable and a
trained model beats an untrained one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from reidkit.atomic import atomic_dir, atomic_write
from reidkit.data.csvio import write_rows
from reidkit.errors import ReidkitError
from reidkit.data import schemas

TOP_SIZE = (152, 438)  # (width, height): tall
LATERAL_SIZE = (1805, 344)  # wide
LATERAL_FRACTION = 0.08


@dataclass(frozen=True)
class _Pattern:
    spots: np.ndarray  # [K, 5]: x, y (body coords in [-1,1]), radius, darkness, elongation
    scars: np.ndarray  # [S, 5]: x0, y0, x1, y1, width
    tone: float


def _pattern(rng: np.random.Generator) -> _Pattern:
    k = int(rng.integers(5, 10))
    spots = np.column_stack(
        [rng.uniform(-0.75, 0.75, k), rng.uniform(-0.8, 0.8, k), rng.uniform(0.07, 0.2, k), rng.uniform(0.35, 0.8, k), rng.uniform(0.5, 2.0, k)]
    )
    s = int(rng.integers(1, 4))
    scars = np.column_stack([rng.uniform(-0.7, 0.7, (s, 4)), rng.uniform(0.02, 0.05, s)])
    return _Pattern(spots, scars, float(rng.uniform(0.75, 0.95)))


def _render(pattern: _Pattern, size: tuple[int, int], lateral: bool, rng: np.random.Generator) -> Image.Image:
    w, h = size
    w = int(w * rng.uniform(0.9, 1.1))
    h = int(h * rng.uniform(0.9, 1.1))
    sea = np.array([rng.uniform(10, 50), rng.uniform(50, 100), rng.uniform(80, 140)])
    img = Image.new("RGB", (w, h), tuple(int(c) for c in sea))
    draw = ImageDraw.Draw(img)
    # body ellipse: long axis along the image's long side, with a random crop/shift
    cx, cy = w / 2 + rng.uniform(-0.05, 0.05) * w, h / 2 + rng.uniform(-0.05, 0.05) * h
    bw, bh = (0.42 * w, 0.46 * h) if not lateral else (0.46 * w, 0.36 * h)
    scale = rng.uniform(0.85, 1.1)
    bw, bh = bw * scale, bh * scale
    tone = np.clip(pattern.tone * rng.uniform(0.85, 1.15), 0.4, 1.0)
    body = tuple(int(c) for c in (235 * tone, 238 * tone, 240 * tone))
    draw.ellipse([cx - bw, cy - bh, cx + bw, cy + bh], fill=body)

    def to_px(x: float, y: float) -> tuple[float, float]:
        # body coords: for top views y runs along the tall axis; lateral views swap axes
        return (cx + x * bw, cy + y * bh) if not lateral else (cx + y * bw, cy + x * bh)

    for x, y, r, dark, el in pattern.spots:
        px, py = to_px(x, y)
        rr = r * min(bw, bh) * rng.uniform(0.9, 1.1)
        rx, ry = (rr * el, rr) if not lateral else (rr, rr * el)
        c = tuple(int(v * (1 - dark)) for v in body)
        draw.ellipse([px - rx, py - ry, px + rx, py + ry], fill=c)
    for x0, y0, x1, y1, sw in pattern.scars:
        draw.line([to_px(x0, y0), to_px(x1, y1)], fill=(60, 60, 65), width=max(1, int(sw * min(bw, bh))))
    img = img.rotate(float(rng.uniform(-8, 8)), resample=Image.Resampling.BILINEAR, fillcolor=tuple(int(c) for c in sea))
    img = img.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 1.5))))
    arr = np.asarray(img, dtype=np.float32)
    noisy = arr * rng.uniform(0.8, 1.2) + rng.uniform(-20, 20) + rng.normal(0, rng.uniform(2, 8), arr.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def _sightings(n_images: int, n_ids: int, rng: np.random.Generator) -> np.ndarray:
    """Identity of each image: every identity seen at least twice, the rest Zipf-like."""
    if n_ids < 1 or n_images < 2 * n_ids:
        raise ReidkitError(f"need at least 2 images per identity: {n_images} images for {n_ids} identities; lower --identities")
    weights = 1.0 / np.arange(1, n_ids + 1) ** 0.7
    extra = rng.choice(n_ids, size=n_images - 2 * n_ids, p=weights / weights.sum())
    ids = np.concatenate([np.repeat(np.arange(n_ids), 2), extra])
    rng.shuffle(ids)
    return ids


def generate(out_dir: str | Path, n_images: int = 500, n_identities: int = 50, seed: int = 0, n_scenarios: int = 10,
             overwrite: bool = False, progress: bool = True, camera: tuple[int, int] | None = None) -> Path:
    """Write the data set to ``out_dir`` (atomically: it appears complete or not at all).

    With ``camera`` (width, height), each whale is placed at a random box on a frame of that
    size, as field photos are: metadata.csv gets a bbox column and ``annotations.json`` holds
    the same boxes as COCO, so every reader and the crop path can be tried on camera-size files.
    """
    from reidkit.progress import progress_bar

    rng = np.random.default_rng(seed)
    ids = _sightings(n_images, n_identities, rng)
    top = [_pattern(rng) for _ in range(n_identities)]
    lat = [_pattern(rng) for _ in range(n_identities)]
    lateral = rng.random(n_images) < LATERAL_FRACTION
    image_ids = [f"img{i:06d}" for i in range(n_images)]
    viewpoints = ["top" if not lat_ else ("left" if rng.random() < 0.5 else "right") for lat_ in lateral]
    out_dir = Path(out_dir)
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        (tmp / "images").mkdir()
        meta = []
        for i in progress_bar(range(n_images), enabled=progress, desc="reid-synth", unit="img"):
            img_rng = np.random.default_rng([seed, i])
            k = int(ids[i])
            img = _render(lat[k] if lateral[i] else top[k], LATERAL_SIZE if lateral[i] else TOP_SIZE, bool(lateral[i]), img_rng)
            if viewpoints[i] == "right":
                img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            rel = f"images/{image_ids[i]}.jpg"
            box: tuple[int, int, int, int] | None = None
            if camera is not None:
                img, box = paste_subject(img, camera, img_rng)
            img.save(tmp / rel, quality=90)
            day = int(img_rng.integers(0, 365 * 3))
            meta.append((image_ids[i], rel, viewpoints[i], f"whale{k:04d}", str(np.datetime64("2017-01-01") + day), f"enc{k:04d}_{day // 30}")
                        + ((json.dumps(list(box)),) if box is not None else ()))
        write_rows(tmp / "metadata.csv", ["image_id", "path", "viewpoint", "whale_id", "date", "encounter_id"]
                   + ([schemas.BBOX] if camera is not None else []), meta)
        if camera is not None:
            _write_coco(tmp / "annotations.json", meta, camera)
        _scenarios(tmp, image_ids, ids, viewpoints, n_scenarios, rng)
    return out_dir


def paste_subject(subject: Image.Image, frame_size: tuple[int, int], rng: np.random.Generator,
                  fraction: tuple[float, float] = (0.25, 0.6)) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """``subject`` scaled to fill ``fraction`` of a (width, height) frame and placed at a random
    spot on a textured background; returns the frame and the subject's box ``(x, y, w, h)``."""
    fw, fh = frame_size
    scale = rng.uniform(*fraction) * min(fw / subject.width, fh / subject.height)
    sw, sh = max(1, min(fw, round(subject.width * scale))), max(1, min(fh, round(subject.height * scale)))
    x, y = int(rng.integers(0, fw - sw + 1)), int(rng.integers(0, fh - sh + 1))
    # texture at a quarter of the resolution, so the JPEG has detail to decode as a real photo does
    tw, th = max(1, fw // 4), max(1, fh // 4)
    base = rng.uniform(40, 200, 3) + rng.normal(0, 25, (th, tw, 3)).cumsum(axis=1) / np.sqrt(np.arange(1, tw + 1))[None, :, None]
    noise = np.clip(base + rng.normal(0, 12, (th, tw, 3)), 0, 255).astype(np.uint8)
    frame = Image.fromarray(noise).resize((fw, fh), Image.Resampling.BILINEAR)
    frame.paste(subject.convert("RGB").resize((sw, sh), Image.Resampling.BICUBIC), (x, y))
    return frame, (x, y, sw, sh)


def _write_coco(path: Path, meta: list[tuple[str, ...]], size: tuple[int, int]) -> None:
    """The boxes of metadata.csv as COCO: one image and one annotation per row, the whale as ``identity``."""
    images, annotations = [], []
    for n, row in enumerate(meta, start=1):
        image_id, rel, viewpoint, whale = row[:4]
        images.append({"id": n, "file_name": rel, "width": size[0], "height": size[1]})
        annotations.append({"id": n, "image_id": n, "category_id": 1, "bbox": json.loads(row[-1]), "identity": whale,
                            "viewpoint": viewpoint, "image_name": image_id})
    doc = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "whale"}]}
    with atomic_write(path, "w", encoding="utf-8") as fh:
        json.dump(doc, fh)


def _scenarios(root: Path, image_ids: list[str], ids: np.ndarray, viewpoints: list[str], n_scen: int, rng: np.random.Generator) -> None:
    (root / "queries").mkdir()
    (root / "databases").mkdir()
    n = len(image_ids)
    top_idx = np.array([i for i, v in enumerate(viewpoints) if v == "top"])
    scen_rows: list[tuple[str, str, str]] = []
    label_rows: list[tuple[str, str]] = []
    for s in range(n_scen):
        sid = f"scenario{s:02d}"
        # half the scenarios search top views only, the rest everything
        pool = top_idx if (s % 2 == 0 and len(top_idx) > 10) else np.arange(n)
        db = np.sort(rng.choice(pool, size=max(2, int(len(pool) * rng.uniform(0.4, 1.0))), replace=False))
        n_q = max(1, int(n * 0.2))
        in_db = rng.choice(db, size=min(len(db), n_q // 2), replace=False)
        outside = np.setdiff1d(np.arange(n), db)
        out_q = rng.choice(outside, size=min(len(outside), n_q - len(in_db)), replace=False) if len(outside) else np.array([], int)
        queries = np.concatenate([in_db, out_q]).astype(int)
        db_by_id: dict[int, list[int]] = {}
        for j in db:
            db_by_id.setdefault(int(ids[j]), []).append(int(j))
        qrows = []
        for q in queries:
            qid = f"{sid}-{image_ids[q]}"
            qrows.append((qid, image_ids[q]))
            label_rows.extend((qid, image_ids[j]) for j in db_by_id.get(int(ids[q]), []) if j != q)
        write_rows(root / "queries" / f"{sid}.csv", schemas.SCENARIO_QUERIES, qrows)
        write_rows(root / "databases" / f"{sid}.csv", ["database_image_id"], [(image_ids[j],) for j in db])
        scen_rows.append((sid, f"queries/{sid}.csv", f"databases/{sid}.csv"))
    write_rows(root / "query_scenarios.csv", ["scenario_id", "queries_path", "database_path"], scen_rows)
    write_rows(root / "labels.csv", schemas.LABELS, label_rows)


def sample_images(n: int = 8, seed: int = 0) -> list[Image.Image]:
    """A few synthetic Whale-do images in memory (top and lateral), e.g. for parity checks."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        lateral = i % 4 == 3
        out.append(_render(_pattern(rng), LATERAL_SIZE if lateral else TOP_SIZE, lateral, np.random.default_rng([seed, i])))
    return out
