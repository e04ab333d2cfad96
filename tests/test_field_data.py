"""Field photos: every input layout, bounding boxes, and camera-size JPEGs decoded at reduced scale."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import cli

PEOPLE = ("s1", "s2", "s3", "s4")
SHOTS = (1, 2, 3, 4)  # shot 1 queries, the rest are the gallery


def _read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _face(person: str, shot: int) -> Image.Image:
    from reidkit.data.orl import orl_root

    return Image.open(orl_root() / person / f"{shot}.pgm").convert("RGB")


def _write_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


@pytest.fixture(scope="module")
def field(tmp_path_factory) -> dict:
    """ORL faces two to a lossless 640x480 frame, with their boxes in every layout, and the
    same subjects cropped out as small files in identity folders."""
    root = tmp_path_factory.mktemp("field")
    (root / "frames").mkdir()
    subjects = [(p, s) for p in PEOPLE for s in SHOTS]
    rng = np.random.default_rng(0)
    boxes: dict[tuple[str, int], tuple[str, list[int]]] = {}
    for f in range(0, len(subjects), 2):
        frame = Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8))
        name = f"frames/f{f // 2}.png"
        for slot, (p, s) in enumerate(subjects[f:f + 2]):
            face = _face(p, s).resize((184, 224))
            x, y = 40 + slot * 300 + int(rng.integers(0, 40)), 30 + int(rng.integers(0, 200))
            frame.paste(face, (x, y))
            boxes[(p, s)] = (name, [x, y, 184, 224])
        frame.save(root / name)
    for (p, s), (name, (x, y, w, h)) in boxes.items():
        side = "query" if s == 1 else "gallery"
        out = root / "crops" / side / p / f"{s}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.open(root / name).crop((x, y, x + w, y + h)).save(out)
    ids: dict[tuple[str, str], dict[str, str]] = {}  # (layout, side) -> item id -> subject
    for side, shots in (("query", SHOTS[:1]), ("gallery", SHOTS[1:])):
        keys = [(p, s) for p in PEOPLE for s in shots]
        _write_csv(root / f"{side}.csv", ["image_id", "path", "identity", "bbox"],
                   [[f"{p}_{s}", boxes[p, s][0], p, json.dumps(boxes[p, s][1])] for p, s in keys])
        ids["metadata", side] = {f"{p}_{s}": f"{p}_{s}" for p, s in keys}
        ids["wildlife", side], ids["coco", side], ids["folders", side] = {}, {}, {f"{p}/{s}.png": f"{p}_{s}" for p, s in keys}
        seen: dict[str, int] = {}
        wild_rows = []
        for p, s in keys:
            name = boxes[p, s][0]
            seen[name] = seen.get(name, 0) + 1
            ids["wildlife", side][name if seen[name] == 1 else f"{name}#{seen[name]}"] = f"{p}_{s}"
            wild_rows.append([p, name, str(boxes[p, s][1])])
        _write_csv(root / f"{side}_wild.csv", ["identity", "path", "bbox"], wild_rows)
        frames = sorted({boxes[k][0] for k in keys})
        anns = []
        for n, (p, s) in enumerate(keys, start=100 if side == "query" else 200):
            anns.append({"id": n, "image_id": frames.index(boxes[p, s][0]) + 1, "bbox": boxes[p, s][1], "name": p})
            ids["coco", side][str(n)] = f"{p}_{s}"
        coco = {"images": [{"id": i + 1, "file_name": f} for i, f in enumerate(frames)], "annotations": anns}
        (root / f"{side}.json").write_text(json.dumps(coco))
    return {"root": root, "boxes": boxes, "ids": ids}


# ---------------------------------------------------------------------------------------
# readers (Python API, no model)


def test_every_layout_reads_the_same_subjects(field):
    from reidkit.data.items import read_items

    root = field["root"]
    for source, layout in ((root / "gallery.csv", "metadata"), (root / "gallery_wild.csv", "wildlife"), (root / "gallery.json", "coco")):
        found = read_items(source)
        assert found.layout == layout and not found.problems
        got = {field["ids"][layout, "gallery"][it.id]: (it.path.relative_to(root.resolve()).as_posix(), list(it.bbox or ()), it.identity)
               for it in found.items}
        want = {f"{p}_{s}": (field["boxes"][p, s][0], [float(v) for v in field["boxes"][p, s][1]], p) for p in PEOPLE for s in SHOTS[1:]}
        assert got == want
    folder = read_items(root / "crops" / "gallery")
    assert folder.layout == "folders" and {it.identity for it in folder.items} == set(PEOPLE)
    assert all(it.bbox is None for it in folder.items)


def test_bad_boxes_are_reported_with_their_row_and_left_out(tmp_path):
    from reidkit.data.items import read_items

    Image.new("RGB", (50, 40)).save(tmp_path / "a.png")
    rows = [["a", "a.png", "x", "[1, 2, 10, 10]"], ["b", "a.png", "x", "[1, 2, 0, 10]"], ["c", "a.png", "x", "[1, two, 3, 4]"],
            ["d", "a.png", "x", "[1, 2, 3]"], ["e", "a.png", "x", ""], ["f", "../a.png", "x", "[0, 0, 5, 5]"]]
    _write_csv(tmp_path / "m.csv", ["image_id", "path", "whale_id", "bbox"], rows)
    found = read_items(tmp_path / "m.csv")
    assert [it.id for it in found.items] == ["a", "e"]
    assert found.items[1].bbox is None  # an empty cell is the whole photo
    reasons = dict(found.problems)
    assert set(reasons) == {f"{tmp_path / 'm.csv'}, line {n}" for n in (3, 4, 5, 7)}
    assert "empty" in reasons[f"{tmp_path / 'm.csv'}, line 3"] and "non-numeric" in reasons[f"{tmp_path / 'm.csv'}, line 4"]
    coco = {"images": [{"id": 1, "file_name": "a.png"}],
            "annotations": [{"id": 7, "image_id": 1, "bbox": [0, 0, "w", 5]}, {"id": 8, "image_id": 1, "bbox": [0, 0, 5, 5]},
                            {"id": 9, "image_id": 2, "bbox": [0, 0, 5, 5]}, {"id": 10, "image_id": 1}]}
    (tmp_path / "c.json").write_text(json.dumps(coco))
    found = read_items(tmp_path / "c.json")
    assert [it.id for it in found.items] == ["8"]
    assert [w.rsplit(", ", 1)[1] for w, _ in found.problems] == ["annotation 7", "annotation 9"]


def test_unknown_identity_never_trains_and_coco_identity_key(tmp_path):
    from reidkit.data.items import read_items
    from reidkit.data.sources import read_labelled

    Image.new("RGB", (50, 40)).save(tmp_path / "a.png")
    _write_csv(tmp_path / "w.csv", ["identity", "path", "bbox"],
               [["zoe", "a.png", "[0, 0, 10, 10]"], ["unknown", "a.png", "[10, 0, 10, 10]"], ["max", "a.png", ""]])
    samples = read_labelled(tmp_path / "w.csv")
    assert [(s.identity, s.bbox) for s in samples] == [("zoe", (0.0, 0.0, 10.0, 10.0)), ("max", None)]
    coco = {"images": [{"id": 1, "file_name": "a.png"}],
            "annotations": [{"id": 1, "image_id": 1, "bbox": [0, 0, 5, 5], "name": "n1", "individual": "i1"}]}
    (tmp_path / "c.json").write_text(json.dumps(coco))
    assert read_items(tmp_path / "c.json").items[0].identity == "n1"
    assert read_items(tmp_path / "c.json", coco_identity="individual").items[0].identity == "i1"


def test_training_and_parity_images_crop_the_boxes(field):
    from reidkit.data.sources import read_labelled
    from reidkit.export.parity import parity_images
    from reidkit.train.dataset import decode_all

    root = field["root"]
    kept, images = decode_all(read_labelled(root / "gallery.json"))
    subjects = [(p, shot) for p in PEOPLE for shot in SHOTS[1:]]
    assert [s.identity for s in kept] == [p for p, _ in subjects]
    for im, (p, shot) in zip(images, subjects):  # what training sees is the subject, pixel for pixel
        assert np.array_equal(np.asarray(im), np.asarray(Image.open(root / "crops" / "gallery" / p / f"{shot}.png")))
    parity = parity_images(root / "query.csv")
    assert [np.asarray(im).tolist() == np.asarray(Image.open(root / "crops" / "query" / p / "1.png")).tolist()
            for im, p in zip(parity, PEOPLE)] == [True] * len(PEOPLE)


# ---------------------------------------------------------------------------------------
# decoding: boxes, EXIF orientation, DCT-scaled JPEGs


def _jpeg(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=92, **kw)
    return buf.getvalue()


def _camera_frame(face: Image.Image, size=(4000, 3000), box=(1300, 700, 1150, 1400), seed=0) -> tuple[Image.Image, tuple]:
    rng = np.random.default_rng(seed)
    frame = Image.fromarray(rng.integers(0, 255, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)).resize(size)
    frame.paste(face.resize(box[2:], Image.Resampling.BICUBIC), box[:2])
    return frame, box


def test_draft_decodes_at_the_largest_reduction_that_still_covers_the_input():
    from reidkit.imaging import decode_rgb

    frame, box = _camera_frame(_face("s1", 1))
    data = _jpeg(frame)
    crop = decode_rgb(data, box=box, min_hw=(128, 112))
    assert crop.height >= 128 and crop.width >= 112  # never smaller than the member input
    assert 1150 / 8 <= crop.width <= 1150 / 8 + 2 and 1400 / 8 <= crop.height <= 1400 / 8 + 2  # 1/8, the largest reduction
    whole = decode_rgb(data, min_hw=(128, 112))
    assert whole.size == (500, 375)
    assert decode_rgb(data, box=box, min_hw=(600, 500)).size == (575, 700)  # 1/2; 1/4 would leave 288x350
    assert decode_rgb(data, box=box).size == (1150, 1400)  # no input size given: full resolution


def test_boxes_are_in_displayed_pixels_and_clipped():
    from reidkit.imaging import ImageDecodeError, decode_rgb

    rng = np.random.default_rng(1)
    stored = Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, displayed portrait (rotated 90 degrees clockwise)
    data = _jpeg(stored, exif=exif)
    shown = decode_rgb(data)
    assert shown.size == (300, 400)
    box = (50, 220, 200, 150)  # fits only the portrait image as displayed
    crop = decode_rgb(data, box=box)
    assert crop.size == (200, 150)
    assert np.array_equal(np.asarray(crop), np.asarray(shown.crop((50, 220, 250, 370))))
    assert decode_rgb(data, box=(-20, 300, 100, 500)).size == (80, 100)  # partly outside: clipped
    with pytest.raises(ImageDecodeError, match="outside"):
        decode_rgb(data, box=(300, 0, 10, 10))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_decode_stops_below_the_box_and_gives_the_whole_file_pixels(orientation, monkeypatch):
    import reidkit.imaging as imaging

    rng = np.random.default_rng(orientation)
    stored = Image.fromarray(rng.integers(0, 255, (100, 150, 3), dtype=np.uint8)).resize((1200, 800))
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _jpeg(stored, exif=exif)
    w, h = imaging.decode_rgb(data).size
    rows = []
    real = imaging._stop_below
    monkeypatch.setattr(imaging, "_stop_below", lambda img, bottom, scale: rows.append(real(img, bottom, scale)) or rows[-1])
    for box in ((0, 0, w // 3, h // 3), (w // 2, h // 2, w // 2, h // 2), (w // 4, 0, w // 3, h // 2), (0, h // 2, w // 2, h // 3)):
        part = imaging.decode_rgb(data, box=box, min_hw=(40, 40))
        monkeypatch.setattr(imaging, "_stop_below", lambda img, bottom, scale: None)
        whole = imaging.decode_rgb(data, box=box, min_hw=(40, 40))
        monkeypatch.setattr(imaging, "_stop_below", lambda img, bottom, scale: rows.append(real(img, bottom, scale)) or rows[-1])
        assert part.size == whole.size
        assert np.array_equal(np.asarray(part), np.asarray(whole)), (orientation, box)
    assert sum(r is not None for r in rows) >= 2  # the decoder stopped early for some boxes in every orientation


def test_a_broken_file_still_fails_when_the_decode_would_stop_early():
    from reidkit.imaging import ImageDecodeError, decode_rgb

    frame, box = _camera_frame(_face("s1", 1), size=(1600, 1200), box=(100, 100, 400, 400))
    data = bytearray(_jpeg(frame))
    sos = data.index(b"\xff\xc4")  # a Huffman table: corrupt its code counts
    data[sos + 5:sos + 21] = b"\xff" * 16
    with pytest.raises(ImageDecodeError):
        decode_rgb(bytes(data), box=box, min_hw=(64, 64))
    assert decode_rgb(_jpeg(frame), box=box, min_hw=(64, 64)).size == (100, 100)


def _herd() -> tuple[bytes, list]:
    """A 12 MP frame with several subjects: two small boxes (one high, one low) and a large one."""
    frame, a = _camera_frame(_face("s1", 1), box=(100, 100, 600, 700))
    frame.paste(_face("s2", 1).resize((600, 700)), (2000, 1800))
    frame.paste(_face("s3", 1).resize((2000, 2600)), (1900, 200))
    return _jpeg(frame), [a, (2000, 1800, 600, 700), (1900, 200, 2000, 2600)]


def test_boxes_on_one_photo_share_a_decode_per_reduction_and_decode_as_alone(monkeypatch):
    import reidkit.imaging as imaging

    data, boxes = _herd()
    boxes = [*boxes, None, (5000, 0, 10, 10)]  # the whole photo, and a box outside it
    loads = []
    real = imaging._load
    monkeypatch.setattr(imaging, "_load", lambda img, d, rows: loads.append(rows) or real(img, d, rows))
    got = imaging.decode_crops(data, "herd.jpg", boxes, min_hw=(128, 112))
    assert len(loads) == 2  # the two small boxes at 1/4, the large one and the whole photo at 1/8
    loads.clear()
    for box, crop in zip(boxes[:4], got):
        alone = imaging.decode_rgb(data, "herd.jpg", box=box, min_hw=(128, 112))
        assert np.array_equal(np.asarray(crop), np.asarray(alone)), box
    assert len(loads) == 4
    assert isinstance(got[4], imaging.ImageDecodeError) and "outside" in got[4].reason


def test_a_truncation_spoils_only_the_boxes_below_it():
    from reidkit.imaging import ImageDecodeError, decode_crops, decode_rgb

    frame, upper = _camera_frame(_face("s1", 1), size=(1600, 1200), box=(100, 100, 300, 300))
    lower = (900, 850, 300, 300)  # the same reduction as the upper box: one shared decode
    data = _jpeg(frame)
    cut = data[: len(data) * 11 // 20]  # the rows below about 55% of the frame are gone
    top, bottom = decode_crops(cut, "cut.jpg", [upper, lower], min_hw=(64, 64))
    assert np.array_equal(np.asarray(top), np.asarray(decode_rgb(data, box=upper, min_hw=(64, 64))))
    assert isinstance(bottom, ImageDecodeError) and "truncated" in bottom.reason
    with pytest.raises(ImageDecodeError, match="truncated"):
        decode_rgb(cut, box=lower, min_hw=(64, 64))


def test_training_loads_a_photos_boxes_together(tmp_path, monkeypatch):
    import reidkit.imaging as imaging
    from reidkit.imaging import ImageRef

    data, boxes = _herd()
    (tmp_path / "herd.jpg").write_bytes(data)
    refs = [ImageRef(tmp_path / "herd.jpg", b) for b in boxes] + [ImageRef(tmp_path / "gone.jpg"), ImageRef(tmp_path / "herd.jpg")]
    loads = []
    real = imaging._load
    monkeypatch.setattr(imaging, "_load", lambda img, d, rows: loads.append(rows) or real(img, d, rows))
    got = imaging.load_crops(refs, min_hw=(128, 112))
    assert len(loads) == 3  # the herd's two reductions, then the whole photo again after the missing file
    assert isinstance(got[3], imaging.ImageDecodeError) and "cannot read" in got[3].reason
    for ref, img in zip(refs[:3] + refs[4:], got[:3] + got[4:]):
        assert np.array_equal(np.asarray(img), np.asarray(imaging.load_rgb(ref, min_hw=(128, 112))))


@pytest.mark.slow
def test_the_embedder_reads_each_photo_once_for_all_its_boxes(tmp_path, bundle, monkeypatch):
    import reidkit.imaging as imaging
    from reidkit.imaging import ImageRef
    from reidkit.runtime.bundle import load_bundle

    data, boxes = _herd()
    (tmp_path / "herd.jpg").write_bytes(data)
    refs = [ImageRef(tmp_path / "herd.jpg", b) for b in boxes]
    loads = []
    real = imaging._load
    monkeypatch.setattr(imaging, "_load", lambda img, d, rows: loads.append(rows) or real(img, d, rows))
    with load_bundle(bundle).embedder("ort-cpu", decode="threads") as emb:
        together = emb.embed([*refs, tmp_path / "herd.jpg"])
        shared = len(loads)
        alone = [emb.embed([r]) for r in [*refs, tmp_path / "herd.jpg"]]
    assert shared < len(refs) + 1 == len(loads) - shared
    assert together.keys == [e.keys[0] for e in alone] and len(set(together.keys)) == 4
    np.testing.assert_allclose(together.vectors, np.concatenate([e.vectors for e in alone]), atol=1e-6)


def test_synth_camera_writes_frames_with_boxes_in_both_layouts(tmp_path):
    from reidkit.data.items import read_items

    out = tmp_path / "cam"
    cli("reid", "synth", out, "--camera", "--camera-size", "640x480", "--images", "8", "--identities", "3", "--scenarios", "1")
    meta, coco = read_items(out / "metadata.csv"), read_items(out / "annotations.json")
    assert len(meta.items) == len(coco.items) == 8
    for a, b in zip(meta.items, coco.items):
        assert a.path == b.path and a.bbox == b.bbox and a.identity == b.identity
        assert Image.open(a.path).size == (640, 480)
        x, y, w, h = a.bbox
        assert 0 <= x and x + w <= 640 and 0 <= y and y + h <= 480
    again = tmp_path / "again"
    cli("reid", "synth", again, "--camera", "--camera-size", "640x480", "--images", "8", "--identities", "3", "--scenarios", "1")
    assert (again / "metadata.csv").read_text() == (out / "metadata.csv").read_text()
    bad = cli("reid", "synth", tmp_path / "x", "--camera", "--camera-size", "640", check=False)
    assert bad.returncode == 2 and "WIDTHxHEIGHT" in bad.stderr


# ---------------------------------------------------------------------------------------
# through reid infer, on an exported bundle


def _rows_by_subject(path: Path, ids: dict, q_layout: str, g_layout: str) -> list[tuple[str, str, float]]:
    return [(ids[q_layout, "query"][r["query_id"]], ids[g_layout, "gallery"][r["database_image_id"]], float(r["score"]))
            for r in _read(path)]


@pytest.mark.slow
@pytest.mark.parametrize("query,gallery,q_layout,g_layout", [
    ("query.csv", "gallery.json", "metadata", "coco"),
    ("query.json", "gallery_wild.csv", "coco", "wildlife"),
    ("query_wild.csv", "gallery.csv", "wildlife", "metadata"),
])
def test_every_layout_ranks_like_the_cropped_files(tmp_path, bundle, field, query, gallery, q_layout, g_layout):
    root, ids = field["root"], field["ids"]
    ref = tmp_path / "ref.csv"
    cli("reid", "infer", "--model", bundle, "--query", root / "crops" / "query", "--gallery", root / "crops" / "gallery", "-o", ref, "--quiet")
    out = tmp_path / "out.csv"
    cli("reid", "infer", "--model", bundle, "--query", root / query, "--gallery", root / gallery, "-o", out, "--quiet")
    want = _rows_by_subject(ref, ids, "folders", "folders")
    got = _rows_by_subject(out, ids, q_layout, g_layout)
    assert [(q, g) for q, g, _ in got] == [(q, g) for q, g, _ in want]
    assert np.allclose([s for *_, s in got], [s for *_, s in want], atol=1e-5)


@pytest.mark.slow
def test_bad_box_is_reported_with_its_row_and_the_run_finishes(tmp_path, bundle, field):
    root = field["root"]
    rows = list(csv.reader((root / "gallery.csv").read_text().splitlines()))
    rows[2][3] = "[10, 10, abc, 5]"  # line 3 of the file
    rows.append(["far", rows[1][1], "s1", "[9000, 9000, 10, 10]"])  # wholly outside the frame: found when decoded
    bad = root / "gallery_bad.csv"
    _write_csv(bad, rows[0], rows[1:])
    out = tmp_path / "out.csv"
    res = cli("reid", "infer", "--model", bundle, "--query", root / "query.csv", "--gallery", bad, "-o", out, "--quiet")
    assert f"skipped {bad}, line 3: bbox" in res.stderr and "non-numeric" in res.stderr
    assert "bbox [9000, 9000, 10, 10]: box [9000, 9000, 10, 10] lies outside the 640x480 image" in res.stderr
    gids = {r["database_image_id"] for r in _read(out)}
    assert gids == {r[0] for r in rows[1:]} - {rows[2][0], "far"}
    strict = cli("reid", "infer", "--model", bundle, "--query", root / "query.csv", "--gallery", bad, "-o", out, "--quiet", "--strict",
                 check=False)
    assert strict.returncode == 1


@pytest.mark.slow
def test_unknown_identity_is_never_a_match(tmp_path, bundle, field):
    root = field["root"]
    rows = list(csv.reader((root / "gallery_wild.csv").read_text().splitlines()))
    for r in rows[1:]:
        if r[0] in ("s1", "s2"):
            r[0] = "unknown"  # two people not identified yet: they must not merge into one individual
    _write_csv(root / "gallery_unknown.csv", rows[0], rows[1:])
    out = tmp_path / "ids.csv"
    cli("reid", "infer", "--model", bundle, "--query", root / "query.csv", "--gallery", root / "gallery_unknown.csv", "--by", "identity",
        "-o", out, "--quiet")
    got = _read(out)
    assert got and {r["identity"] for r in got} == {"s3", "s4"}


@pytest.mark.slow
def test_a_12mp_frame_with_a_box_embeds_like_the_cropped_face(tmp_path, bundle):
    from reidkit.imaging import ImageRef
    from reidkit.runtime.bundle import load_bundle

    face = _face("s5", 3)
    frame, box = _camera_frame(face)
    frame.save(tmp_path / "frame.jpg", quality=92)
    frame.crop((box[0], box[1], box[0] + box[2], box[1] + box[3])).save(tmp_path / "crop.png")
    other = _camera_frame(_face("s9", 3), seed=1)[0]
    other.save(tmp_path / "other.jpg", quality=92)
    with load_bundle(bundle).embedder("ort-cpu", "fp32", None, 8, 2, 1) as emb:
        e = emb.embed([ImageRef(tmp_path / "frame.jpg", box), tmp_path / "crop.png", tmp_path / "frame.jpg",
                       ImageRef(tmp_path / "other.jpg", box)])
    assert not e.skipped and len(set(e.keys)) == 4  # the box is part of the cache key
    v = e.vectors
    own = float(v[0] @ v[1])
    assert own > 0.99
    assert own > float(v[0] @ v[2]) and own > float(v[0] @ v[3])


@pytest.mark.slow
def test_scenario_mode_crops_the_metadata_boxes(tmp_path, bundle):
    from reidkit.imaging import ImageRef
    from reidkit.runtime.bundle import load_bundle

    data = tmp_path / "cam"
    cli("reid", "synth", data, "--camera", "--camera-size", "640x480", "--images", "12", "--identities", "3", "--scenarios", "2")
    rows = list(csv.reader((data / "metadata.csv").read_text().splitlines()))
    rows[1][-1] = "oops"  # line 2: never embedded, reported
    _write_csv(data / "metadata.csv", rows[0], rows[1:])
    res = cli("reid", "infer", "--model", bundle, "--scenarios", data / "query_scenarios.csv", "--metadata", data / "metadata.csv",
              "-o", tmp_path / "sub.csv", "--embeddings-out", tmp_path / "e.npz", "--quiet", "--backend", "ort-cpu")
    assert f"skipped {data / 'metadata.csv'}, line 2: bbox 'oops'" in res.stderr
    saved = np.load(tmp_path / "e.npz")
    got = dict(zip(saved["ids"].tolist(), saved["embeddings"]))
    assert rows[1][0] not in got and rows[1][0] not in {r["database_image_id"] for r in _read(tmp_path / "sub.csv")}
    iid, rel, box = rows[2][0], rows[2][1], json.loads(rows[2][-1])
    with load_bundle(bundle).embedder("ort-cpu", "fp32", None, 8, 2, 1) as emb:
        crop, whole = emb.embed([ImageRef(data / rel, box), data / rel]).vectors
    assert np.allclose(got[iid], crop, atol=1e-5) and not np.allclose(got[iid], whole, atol=1e-2)


@pytest.mark.slow
def test_unknown_identity_is_never_proposed_in_scenario_mode(tmp_path, bundle, synth):
    rows = list(csv.DictReader((synth / "metadata.csv").read_text().splitlines()))
    hidden = sorted({r["whale_id"] for r in rows})[:4]
    for r in rows:
        if r["whale_id"] in hidden:
            r["whale_id"] = "unknown"  # photographed, not identified yet
    meta = synth / "metadata_some_unknown.csv"  # beside the photos: metadata paths are relative to it
    with open(meta, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    out = tmp_path / "ids.csv"
    cli("reid", "infer", "--model", bundle, "--scenarios", synth / "query_scenarios.csv", "--metadata", meta, "--by", "identity",
        "-o", out, "--quiet")
    got = _read(out)
    assert got and "unknown" not in {r["identity"] for r in got}


def test_reid_train_reads_the_individual_from_the_coco_key_it_is_given(tmp_path):
    """--coco-identity reaches the training reader: a key no annotation has is one line, exit 2, before
    anything trains; the right key trains on those individuals."""
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(tmp_path / f"p{i}.png")
        images.append({"id": i, "file_name": f"p{i}.png"})
        annotations.append({"id": i, "image_id": i, "bbox": [4, 4, 40, 32], "name": "same", "individual": f"i{i % 2}"})
    (tmp_path / "c.json").write_text(json.dumps({"images": images, "annotations": annotations}))
    args = ["train", "--data", tmp_path / "c.json", "--backbone", "resnet10t", "--image-size", "32x32", "--embedding-dim", "8",
            "--epochs", "1", "--batch-size", "4", "--val-identities", "0", "--out", tmp_path / "m.safetensors"]
    bad = cli("reid", *args, "--coco-identity", "tag", check=False)
    assert bad.returncode == 2 and "no annotation has the key 'tag'" in bad.stderr and "Traceback" not in bad.stderr
    cli("reid", *args, "--coco-identity", "individual")
    from reidkit.checkpoint_meta import read_member_metadata

    assert read_member_metadata(tmp_path / "m.safetensors")["num_classes"] == 2  # i0, i1; by `name` it would be one


def test_the_decode_headroom_trains_exports_and_runs_as_one_setting(tmp_path, monkeypatch):
    """`reid train --decode-headroom` decodes the training crops as the runtime will, and the
    checkpoint and the bundle carry it to the export gate and the runtime."""
    import reidkit.train.loop as loop
    from reidkit.checkpoint_meta import read_member_metadata
    from reidkit.runtime.bundle import load_bundle
    from reidkit.runtime.embedder import decode_floor
    from reidkit.train.config import train_one

    images, annotations = [], []
    for i in range(8):
        frame, box = _camera_frame(_face(f"s{1 + i % 2}", 1 + i // 2), size=(1600, 1200), box=(200 + 40 * i, 300, 480, 560), seed=i)
        frame.save(tmp_path / f"f{i}.jpg", quality=90)
        images.append({"id": i, "file_name": f"f{i}.jpg"})
        annotations.append({"id": i, "image_id": i, "bbox": list(box), "name": f"s{1 + i % 2}"})
    (tmp_path / "c.json").write_text(json.dumps({"images": images, "annotations": annotations}))
    seen = []
    real = loop.decode_all
    monkeypatch.setattr(loop, "decode_all", lambda samples, min_hw=None: seen.append(min_hw) or real(samples, min_hw))
    kw = {"backbone": "resnet10t", "image_size": "48x32", "embedding_dim": 8, "epochs": 1, "batch_size": 4, "val_identities": "0",
          "decode_headroom": 3, "progress": False}
    train_one(str(tmp_path / "c.json"), tmp_path / "m.safetensors", kw)
    assert seen == [(144, 96)]  # 3 x 48x32: a 1/2-scale decode (280x240 crops) rather than 560x480
    assert read_member_metadata(tmp_path / "m.safetensors")["member"]["resize"]["decode_headroom"] == 3
    cli("reid", "export", tmp_path / "m.safetensors", "-o", tmp_path / "b", "--parity-images", tmp_path / "c.json")
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["members"][0]["resize"]["decode_headroom"] == 3
    with load_bundle(tmp_path / "b").embedder("ort-cpu", "fp32", None, 4, 1, 1) as emb:
        assert decode_floor(emb.sizes) == (144, 96)
        assert decode_floor(emb.sizes, 0) is None
    bad = cli("reid", "train", "--data", tmp_path / "c.json", "--out", tmp_path / "x.safetensors", "--decode-headroom", "-1", check=False)
    assert bad.returncode == 2 and "decode-headroom" in bad.stderr and not (tmp_path / "x.safetensors").exists()
