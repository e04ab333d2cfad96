"""The review page without a browser: the HTML contract read by a parser, escaping,
thumbnails, metrics against reid-eval, both CLIs (reid-review and reid-infer --review)."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import BIN, cli


def review_cli(*args, check: bool = True) -> subprocess.CompletedProcess:
    """``reid-review`` as installed; ``python -m reidkit.review`` (the same click command) in an
    environment whose console scripts predate it."""
    if (BIN / "reid-review").exists():
        return cli("reid-review", *args, check=check)
    res = subprocess.run([sys.executable, "-m", "reidkit.review", *map(str, args)], capture_output=True, text=True)
    if check and res.returncode != 0:
        raise AssertionError(f"reid-review exited {res.returncode}\n{res.stdout}\n{res.stderr}")
    return res


class Page(HTMLParser):
    """Tags and attributes of a page, in document order."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def blocks(self) -> dict[str, list[dict[str, str]]]:
        out: dict[str, list[dict[str, str]]] = {}
        cur = None
        for tag, a in self.tags:
            if "data-query" in a:
                cur = out.setdefault(a["data-query"], [])
            elif "data-candidate" in a:
                assert cur is not None
                cur.append(a)
        return out


def read_page(folder: Path) -> Page:
    return Page((folder / "index.html").read_text(encoding="utf-8"))


def write_matches(path: Path, rows, header=("query_id", "database_image_id", "score")) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def _folders(tmp_path: Path, names: dict[str, list[str]]) -> Path:
    """query/ and gallery/ trees of small coloured JPEGs, names given as relative paths."""
    rng = np.random.default_rng(0)
    for side, rels in names.items():
        for rel in rels:
            p = tmp_path / side / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(p)
    return tmp_path


def test_hostile_file_names_are_escaped_and_round_trip(tmp_path):
    evil = "a/<img src=x onerror=alert(1)> & \"q\" 'x'.jpg"
    d = _folders(tmp_path, {"query": [evil, "b/q.jpg"], "gallery": ["a/1.jpg", "b/<script>g.jpg", "b/2.jpg"]})
    m = write_matches(tmp_path / "m.csv", [(evil, "a/1.jpg", 0.9), (evil, "b/<script>g.jpg", 0.8), ("b/q.jpg", "b/2.jpg", 0.7)])
    review_cli("--matches", m, "--query", d / "query", "--gallery", d / "gallery", "-o", tmp_path / "page", "--quiet")
    page = read_page(tmp_path / "page")
    assert list(page.blocks()) == [evil, "b/q.jpg"]
    assert [c["data-candidate"] for c in page.blocks()[evil]] == ["a/1.jpg", "b/<script>g.jpg"]
    imgs = [a for t, a in page.tags if t == "img" and "src" in a]
    assert len(imgs) == 5 and all(a["src"].startswith("thumbs/") for a in imgs)  # no injected <img src=x>
    assert [a.get("id") for t, a in page.tags if t == "img" and "src" not in a] == ["cmp-q", "cmp-c"]  # the side-by-side view
    from urllib.parse import unquote  # each thumbnail links its photo for the side-by-side view, escaped and URL-quoted
    assert unquote(imgs[0]["data-full"]).endswith("/query/" + evil) and (d / "query" / evil).is_file()
    assert [t for t, _ in page.tags].count("script") == 1  # only the page's own
    assert [c["data-correct"] for c in page.blocks()[evil]] == ["true", "false"]


def test_thumbnails_apply_exif_are_small_and_made_once(tmp_path):
    from reidkit.review.thumbs import make_thumbnails

    img = Image.new("RGB", (400, 100), (200, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: the camera was held upright, the picture is tall
    src = tmp_path / "rot.jpg"
    img.save(src, exif=exif)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    t = make_thumbnails([src, bad, src], tmp_path / "thumbs", height=80, progress=False)
    assert set(t) == {src, bad}
    assert (t[src].width, t[src].height) == (20, 80)  # tall after EXIF, bounded by the height
    with Image.open(tmp_path / "thumbs" / t[src].name) as th:
        assert th.size == (20, 80) and th.format == "JPEG"
    assert t[bad].name is None and t[bad].error
    stamp = (tmp_path / "thumbs" / t[src].name).stat().st_mtime_ns
    again = make_thumbnails([src], tmp_path / "thumbs", height=80, progress=False)
    assert again[src] == t[src] and (tmp_path / "thumbs" / t[src].name).stat().st_mtime_ns == stamp


def test_unreadable_image_keeps_the_page_and_says_why(tmp_path):
    d = _folders(tmp_path, {"query": ["a/q.jpg"], "gallery": ["a/1.jpg"]})
    (d / "gallery" / "a" / "2.jpg").write_bytes(b"")
    m = write_matches(tmp_path / "m.csv", [("a/q.jpg", "a/1.jpg", 0.9), ("a/q.jpg", "a/2.jpg", 0.8)])
    review_cli("--matches", m, "--query", d / "query", "--gallery", d / "gallery", "-o", tmp_path / "page", "--quiet")
    text = (tmp_path / "page" / "index.html").read_text()
    assert "empty file" in text and len(read_page(tmp_path / "page").blocks()["a/q.jpg"]) == 2


def test_unknown_ids_are_one_line_errors(tmp_path):
    d = _folders(tmp_path, {"query": ["a/q.jpg"], "gallery": ["a/1.jpg"]})
    m = write_matches(tmp_path / "m.csv", [("a/q.jpg", "a/nope.jpg", 0.9)])
    res = review_cli("--matches", m, "--query", d / "query", "--gallery", d / "gallery", "-o", tmp_path / "p", check=False)
    assert res.returncode == 2 and "a/nope.jpg" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = review_cli("--matches", m, "--query", d / "query", "-o", tmp_path / "p", check=False)
    assert res.returncode == 2 and "--gallery" in res.stderr
    assert not (tmp_path / "p" / "index.html").exists()


def _summary(folder: Path) -> dict[str, float]:
    text = (folder / "index.html").read_text()
    return {k: float(re.search(rf'id="{k}">([0-9.]+)<', text).group(1)) for k in ("map20", "p1")}


def test_folder_truth_labels_csv_and_metrics_agree_with_reid_eval(tmp_path, orl_split):
    """Marks from identity folders; the page's mAP@20 equals reid-eval's on a labels.csv
    written from the folders here; --labels gives the same marks."""
    q, g = orl_split / "query", orl_split / "gallery"
    qids = sorted(p.relative_to(q).as_posix() for p in q.rglob("*.pgm"))
    gids = sorted(p.relative_to(g).as_posix() for p in g.rglob("*.pgm"))
    rng = np.random.default_rng(1)
    rows = []
    for qid in qids:
        for j in rng.choice(len(gids), 8, replace=False):
            rows.append((qid, gids[j], f"{rng.uniform(0.3, 1):.6f}"))
    m = write_matches(tmp_path / "m.csv", rows)
    labels = write_matches(tmp_path / "labels.csv", [(a, b) for a in qids for b in gids if a.split("/")[0] == b.split("/")[0]],
                           ("query_id", "database_image_id"))
    review_cli("--matches", m, "--query", q, "--gallery", g, "-o", tmp_path / "p1", "--quiet")
    review_cli("--matches", m, "--query", q, "--gallery", g, "-o", tmp_path / "p2", "--quiet", "--labels", labels, "--top-k", "5")
    b1, b2 = read_page(tmp_path / "p1").blocks(), read_page(tmp_path / "p2").blocks()
    assert list(b1) == qids
    for qid in qids:
        want = sorted((r for r in rows if r[0] == qid), key=lambda r: -float(r[2]))
        assert [c["data-candidate"] for c in b1[qid]] == [r[1] for r in want]
        assert [c["data-correct"] for c in b1[qid]] == [str(qid[:3] == r[1][:3]).lower() for r in want]
        assert b2[qid] == b1[qid][:5]
    out = cli("reid-eval", "--submission", m, "--labels", labels, "--json", tmp_path / "e.json").stdout
    assert _summary(tmp_path / "p1")["map20"] == pytest.approx(json.loads((tmp_path / "e.json").read_text())["mAP@20"], abs=1e-4), out
    p1 = np.mean([b1[qid][0]["data-correct"] == "true" for qid in qids])
    assert _summary(tmp_path / "p1")["p1"] == pytest.approx(p1, abs=1e-4)


def test_scenario_form_marks_follow_whale_id(tmp_path, synth):
    from reidkit.data.whaledo import read_metadata, read_scenarios

    meta = read_metadata(synth / "metadata.csv")
    scen = read_scenarios(synth / "query_scenarios.csv")
    rng = np.random.default_rng(2)
    rows, q_img = [], {}
    for sc in scen:
        for qid, img in sc.queries:
            q_img[qid] = img
            for d in rng.choice([d for d in sc.database if d != img], 4, replace=False):
                rows.append((qid, d, f"{rng.uniform(0, 1):.6f}"))
    m = write_matches(tmp_path / "sub.csv", rows)
    review_cli("--matches", m, "--metadata", synth / "metadata.csv", "--scenarios", synth / "query_scenarios.csv",
               "-o", tmp_path / "page", "--quiet")
    blocks = read_page(tmp_path / "page").blocks()
    assert set(blocks) == set(q_img)
    for qid, cands in blocks.items():
        assert [c["data-correct"] for c in cands] == [str(meta.whale_id[c["data-candidate"]] == meta.whale_id[q_img[qid]]).lower()
                                                      for c in cands]


def _identity(rel: str) -> str:
    return rel.split("/")[0]


@pytest.mark.parametrize("by", ["image", "identity"])
def test_reid_infer_review_page(tmp_path, bundle, orl_split, by):
    q, g = orl_split / "query", orl_split / "gallery"
    res = cli("reid-infer", "--model", bundle, "--query", q, "--gallery", g, "-o", tmp_path / "r.csv", "--top-k", "3",
              "--by", by, "--review", tmp_path / "page", "--quiet")
    assert "index.html" in res.stdout
    with open(tmp_path / "r.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    per = defaultdict(list)
    for r in rows:
        per[r["query_id"]].append(r)
    blocks = read_page(tmp_path / "page").blocks()
    assert list(blocks) == list(per) and len(blocks) == 10
    for qid, cands in blocks.items():
        assert 1 <= len(cands) <= 3
        key = "identity" if by == "identity" else "database_image_id"
        assert [c["data-candidate"] for c in cands] == [r[key] for r in per[qid]]
        assert [c["data-correct"] for c in cands] == [str(_identity(r["database_image_id"]) == _identity(qid)).lower()
                                                      for r in per[qid]]
    assert len(list((tmp_path / "page" / "thumbs").glob("*.jpg"))) <= 10 + 90


def test_metadata_only_form_takes_query_ids_as_image_ids(tmp_path, synth):
    from reidkit.data.whaledo import read_metadata

    meta = read_metadata(synth / "metadata.csv")
    ids = meta.image_ids
    rows = [(q, d, f"{0.9 - 0.1 * k:.6f}") for q in ids[:6] for k, d in enumerate(x for x in ids[6:10])]
    m = write_matches(tmp_path / "m.csv", rows)
    review_cli("--matches", m, "--metadata", synth / "metadata.csv", "-o", tmp_path / "page", "--quiet")
    for q, cands in read_page(tmp_path / "page").blocks().items():
        assert [c["data-correct"] for c in cands] == [str(meta.whale_id[c["data-candidate"]] == meta.whale_id[q]).lower() for c in cands]


def test_a_boxed_subject_is_shown_cropped_and_opens_the_whole_photo(tmp_path):
    """Two animals boxed on one camera frame: each thumbnail is its own subject (the box's shape and
    colour, not the frame's), while the side-by-side view opens the whole photo."""
    frame = np.zeros((800, 1200, 3), np.uint8)
    frame[100:700, 100:400] = (250, 20, 20)  # a tall red subject
    frame[200:400, 600:1100] = (20, 20, 250)  # a wide blue one
    Image.fromarray(frame).save(tmp_path / "frame.jpg", quality=95)
    Image.fromarray(np.full((60, 60, 3), 128, np.uint8)).save(tmp_path / "other.jpg")
    with open(tmp_path / "metadata.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image_id", "path", "whale_id", "bbox"])
        w.writerows([["red", "frame.jpg", "a", "[100, 100, 300, 600]"], ["blue", "frame.jpg", "b", "[600, 200, 500, 200]"],
                     ["grey", "other.jpg", "c", ""]])
    m = write_matches(tmp_path / "m.csv", [("red", "blue", "0.9"), ("red", "grey", "0.5"), ("blue", "red", "0.8")])
    review_cli("--matches", m, "--metadata", tmp_path / "metadata.csv", "-o", tmp_path / "page", "--quiet")
    imgs = {(a.get("class"), a["alt"]): a for tag, a in read_page(tmp_path / "page").tags if tag == "img" and "alt" in a}
    red, blue = imgs[("qimg", "query red")], imgs[("cimg", "candidate blue")]
    assert int(red["height"]) > int(red["width"]) and int(blue["width"]) > int(blue["height"])  # the boxes' shapes, not 3:2
    for thumb, colour in ((red, 0), (blue, 2)):
        pixels = np.asarray(Image.open(tmp_path / "page" / thumb["src"]).convert("RGB"), np.float64)
        assert pixels[..., colour].mean() > 200  # nothing of the dark frame around the subject
        assert thumb["data-full"].endswith("frame.jpg")
    assert red["src"] != blue["src"]
