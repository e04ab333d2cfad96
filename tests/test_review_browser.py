"""The review page in a real browser (headless Chromium driven by selenium).

One page is built once for the module with ``reid-review`` over the ORL identity folders.
Its matches come from a plain pixel-correlation ranking computed here (the page does not
care which model ranked), with three queries' own people removed from their candidates
so that some queries have no correct candidate. Two file names carry HTML and CSV
metacharacters. Every expectation below is recomputed from the CSV and the folders, not
read back from the page's own code.
"""

from __future__ import annotations

import csv
import shutil
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from browser import click, missing_reason, requested_urls, start
from test_review import review_cli

pytestmark = pytest.mark.skipif(missing_reason() is not None, reason=str(missing_reason()))

WEIRD_Q = "s31/we\"ird <b>&amp;, 'q'.pgm"
WEIRD_G = "s32/gal,lery \"<i>\".pgm"
TOP_K = 5


def _vec(path: Path) -> np.ndarray:
    from reidkit.imaging import load_rgb

    a = np.asarray(load_rgb(path).convert("L").resize((23, 28)), np.float64).ravel()
    a -= a.mean()
    return a / np.linalg.norm(a)


@pytest.fixture(scope="module")
def page(tmp_path_factory, orl_split):
    root = tmp_path_factory.mktemp("review")
    data = root / "data"
    shutil.copytree(orl_split / "query", data / "query")
    shutil.copytree(orl_split / "gallery", data / "gallery")
    (data / "query" / "s31" / "1.pgm").rename(data / "query" / WEIRD_Q)
    (data / "gallery" / "s32" / "2.pgm").rename(data / "gallery" / WEIRD_G)
    qids = sorted(p.relative_to(data / "query").as_posix() for p in (data / "query").rglob("*.pgm"))
    gids = sorted(p.relative_to(data / "gallery").as_posix() for p in (data / "gallery").rglob("*.pgm"))
    sims = np.stack([_vec(data / "query" / q) for q in qids]) @ np.stack([_vec(data / "gallery" / g) for g in gids]).T
    misses = set(qids[-3:])
    rows: dict[str, list[tuple[str, float]]] = {}
    for i, q in enumerate(qids):
        order = [j for j in np.argsort(-sims[i]) if q not in misses or gids[j].split("/")[0] != q.split("/")[0]]
        rows[q] = [(gids[j], round((sims[i, j] + 1) / 2, 6)) for j in order[:TOP_K]]
    matches = root / "matches.csv"
    with open(matches, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["query_id", "database_image_id", "score"])
        for q, cands in rows.items():
            w.writerows((q, g, f"{s:.6f}") for g, s in cands)
    review_cli("--matches", matches, "--query", data / "query", "--gallery", data / "gallery", "-o", root / "page", "--quiet")
    return {"url": (root / "page" / "index.html").as_uri(), "rows": rows, "misses": misses, "dir": root / "page"}


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    d = start(tmp_path_factory.mktemp("downloads"))
    yield d
    d.quit()


def _open(driver, url):
    driver.get(url)
    driver.execute_script("localStorage.clear()")
    driver.get(url)


def _correct(q: str, g: str) -> bool:
    return q.split("/")[0] == g.split("/")[0]


def _image_widths(driver, url) -> list[int]:
    """naturalWidth of every image once all have loaded (lazy ones are asked for at once)."""
    driver.get(url)
    driver.execute_script("document.querySelectorAll('img').forEach(function (i) { i.loading = 'eager'; })")
    deadline = time.time() + 30  # every image with a source (the side-by-side view's are empty until opened)
    while time.time() < deadline and not driver.execute_script(
            "return Array.prototype.every.call(document.querySelectorAll('img[src]'), function (i) { return i.complete; })"):
        time.sleep(0.1)
    return driver.execute_script("return Array.prototype.map.call(document.querySelectorAll('img[src]'), "
                                 "function (i) { return i.naturalWidth; })")


def test_every_image_loads_and_the_page_makes_no_network_request(driver, page):
    requested_urls(driver)  # drop earlier entries
    widths = _image_widths(driver, page["url"])
    n_cands = sum(len(c) for c in page["rows"].values())
    assert len(widths) == len(page["rows"]) + n_cands
    assert all(w > 0 for w in widths), widths
    urls = requested_urls(driver)
    assert any(u.endswith(".jpg") for u in urls), urls  # the log does see the thumbnails
    assert all(u.startswith(("file://", "data:", "blob:")) for u in urls), [u for u in urls if not u.startswith("file://")]
    # and nothing in the document points anywhere else
    refs = driver.execute_script("return Array.prototype.map.call(document.querySelectorAll('[src],[href]'), "
                                 "function (e) { return e.getAttribute('src') || e.getAttribute('href'); })")
    assert all(not r.startswith(("http:", "https:", "//")) for r in refs), refs


def test_blocks_candidates_and_correct_marks_follow_the_csv_and_the_folders(driver, page):
    driver.get(page["url"])
    got = driver.execute_script("""
        return Array.prototype.map.call(document.querySelectorAll('[data-query]'), function (q) {
          return [q.dataset.query, Array.prototype.map.call(q.querySelectorAll('[data-candidate]'), function (c) {
            return [c.dataset.candidate, c.dataset.rank, c.dataset.score, c.dataset.correct]; })]; });""")
    assert [q for q, _ in got] == list(page["rows"])  # one block per query, ids intact (escaping round-trips)
    assert WEIRD_Q in dict(got)
    for q, cands in got:
        want = page["rows"][q]
        assert len(cands) == len(want) <= TOP_K
        assert [c[0] for c in cands] == [g for g, _ in want]
        assert [int(c[1]) for c in cands] == list(range(1, len(want) + 1))
        np.testing.assert_allclose([float(c[2]) for c in cands], [s for _, s in want], atol=1e-6)
        assert [c[3] for c in cands] == [str(_correct(q, g)).lower() for g, _ in want]


def _order(driver) -> list[str]:
    """Query ids in the order the reviewer sees them (top to bottom on the screen)."""
    return driver.execute_script("return Array.prototype.slice.call(document.querySelectorAll('[data-query]'))"
                                 ".sort(function (a, b) { return a.getBoundingClientRect().top - b.getBoundingClientRect().top; })"
                                 ".map(function (q) { return q.dataset.query; })")


def _shown(driver) -> set[str]:
    return set(driver.execute_script("return Array.prototype.filter.call(document.querySelectorAll('[data-query]'), "
                                     "function (q) { return getComputedStyle(q).display !== 'none'; })"
                                     ".map(function (q) { return q.dataset.query; })"))


def test_sorting_and_filtering(driver, page):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver.get(page["url"])
    rows = page["rows"]
    sort = Select(driver.find_element(By.ID, "sort"))
    sort.select_by_value("uncertain")
    margin = {q: c[0][1] - c[1][1] for q, c in rows.items()}
    got = _order(driver)
    assert sorted(got) == sorted(rows)
    assert [round(margin[q], 6) for q in got] == sorted(round(m, 6) for m in margin.values())

    sort.select_by_value("worst")
    first = {q: next((r for r, (g, _) in enumerate(c, 1) if _correct(q, g)), 0) for q, c in rows.items()}
    got = _order(driver)
    missed = {q for q, f in first.items() if f == 0}
    assert missed >= page["misses"] and len(got) == len(rows)
    assert set(got[:len(missed)]) == missed  # no correct candidate: first
    rest = [first[q] for q in got[len(missed):]]
    assert rest == sorted(rest, reverse=True)  # then the latest first hit

    sort.select_by_value("file")
    assert _order(driver) == list(rows)
    assert driver.execute_script("return window.reidkitReview.order()") == list(rows)
    box = driver.find_element(By.ID, "missed")
    click(driver, box)
    assert _shown(driver) == missed
    click(driver, box)
    assert _shown(driver) == set(rows)


def _pressed(driver, q: str) -> dict[str, str]:
    return driver.execute_script("""
        var out = {}, sec = document.querySelector('[data-query="' + CSS.escape(arguments[0]) + '"]');
        sec.querySelectorAll('button[aria-pressed="true"]').forEach(function (b) {
          var c = b.closest('[data-candidate]'); out[c ? c.dataset.candidate : ''] = b.dataset.act; });
        return out;""", q)


def test_decisions_by_mouse_and_keyboard_survive_a_reload_and_download_as_csv(driver, page, tmp_path):
    from selenium.webdriver.common.by import By

    _open(driver, page["url"])
    qs = list(page["rows"])
    body = driver.find_element(By.TAG_NAME, "body")

    def button(q, act, cand=None):  # plain ids only (the weird one goes through CSS.escape below)
        sel = f'[data-query="{q}"] ' + (f'[data-candidate="{cand}"] ' if cand else "")
        return driver.find_element(By.CSS_SELECTOR, sel + f'button[data-act="{act}"]')

    q_weird = WEIRD_Q
    # keyboard: j j selects the second query, l moves to candidate 2, c confirms it, l x rejects candidate 3
    body.send_keys("j", "j", "l", "c", "l", "x")
    # mouse: the weird query gets "new individual"; the third query a confirm that "new" then clears
    driver.execute_script("document.querySelector('[data-query=\"' + CSS.escape(arguments[0]) + '\"] button[data-act=\"new\"]').click()",
                          q_weird)
    q3 = qs[2]
    c3 = page["rows"][q3][0][0]
    click(driver, button(q3, "confirm", c3))
    click(driver, button(q3, "new"))
    q4, c4 = qs[3], page["rows"][qs[3]][0][0]
    click(driver, button(q4, "reject", c4))
    click(driver, button(q4, "reject", c4))  # pressing again takes it back

    q2 = qs[1]
    c2a, c2b = page["rows"][q2][1][0], page["rows"][q2][2][0]
    want_state = {q2: {c2a: "confirm", c2b: "reject"}, q_weird: {"": "new"}, q3: {"": "new"}, q4: {}}
    for q, w in want_state.items():
        assert _pressed(driver, q) == w

    driver.refresh()
    for q, w in want_state.items():
        assert _pressed(driver, q) == w, q

    click(driver, driver.find_element(By.ID, "download"))
    text = _downloaded(driver)
    want = [["query_id", "decision", "identity_or_image", "reviewer"]]
    for q in qs:  # file order, then rank order
        if q in (q_weird, q3):
            want.append([q, "new_individual", "", ""])
        if q == q2:
            want += [[q2, "confirm", c2a, ""], [q2, "reject", c2b, ""]]
    assert list(csv.reader(text.splitlines())) == want
    assert driver.execute_script("return window.reidkitReview.csv()") == text


def _downloaded(driver, timeout: float = 15.0) -> str:
    folder = Path(driver.download_dir)
    deadline = time.time() + timeout
    target = folder / "decisions.csv"
    while time.time() < deadline:
        if target.exists() and not any(folder.glob("*.crdownload")):
            return target.read_text(encoding="utf-8")
        time.sleep(0.1)
    raise AssertionError(f"no decisions.csv downloaded into {folder}: {list(folder.iterdir())}")


def test_reid_infer_identity_page_opens_with_every_image_and_folder_marks(driver, tmp_path, bundle, orl_split):
    """The demo's page: reid-infer --by identity --review on the ORL identity folders."""
    from conftest import cli

    cli("reid-infer", "--model", bundle, "--query", orl_split / "query", "--gallery", orl_split / "gallery", "-o", tmp_path / "ids.csv",
        "--by", "identity", "--top-k", "5", "--review", tmp_path / "review", "--quiet")
    widths = _image_widths(driver, (tmp_path / "review" / "index.html").as_uri())
    # each query, and each of its 5 candidate identities by its best image and two more of its 9 gallery photos
    assert len(widths) == 10 + 10 * 5 * 3 and all(w > 0 for w in widths)
    got = driver.execute_script("""
        return Array.prototype.map.call(document.querySelectorAll('[data-query]'), function (q) {
          return [q.dataset.query, Array.prototype.map.call(q.querySelectorAll('[data-candidate]'), function (c) {
            return [c.dataset.candidate, c.dataset.correct]; })]; });""")
    queries = sorted(p.relative_to(orl_split / "query").as_posix() for p in (orl_split / "query").rglob("*.pgm"))
    assert sorted(q for q, _ in got) == queries
    for q, cands in got:
        assert 1 <= len(cands) <= 5 and len({c for c, _ in cands}) == len(cands)
        assert [m for _, m in cands] == [str(c == q.split("/")[0]).lower() for c, _ in cands]


@pytest.fixture(scope="module")
def field_page(tmp_path_factory, orl_split):
    """An identity page in scenario form: JPEG photos with viewpoint, encounter and date in the
    metadata, and calibrated identity rows (p_same)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("field-review")
    people = [f"s{k}" for k in range(31, 37)]
    (root / "images").mkdir()
    meta = [("image_id", "path", "whale_id", "viewpoint", "encounter_id", "date")]
    for n, person in enumerate(people):
        for i in range(1, 5):
            iid = f"{person}_{i}"
            Image.open(orl_split / ("query" if i == 1 else "gallery") / person / f"{i}.pgm").convert("RGB").save(root / "images" / f"{iid}.jpg")
            meta.append((iid, f"images/{iid}.jpg", person, "left" if n % 2 else "right", f"e{n}", f"2024-06-0{1 + n % 3}"))
    with open(root / "metadata.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(meta)
    rng = np.random.default_rng(0)
    rows, queries = [], [f"{p}_1" for p in people]
    for q in queries:
        others = [p for p in people if p != q.split("_")[0]]
        ranked = [q.split("_")[0]] + list(rng.permutation(others)[:3])
        for r, ident in enumerate(ranked):
            p_same = [0.93, 0.41, 0.22, 0.08][r]
            rows.append((q, ident, f"{0.9 - 0.1 * r:.6f}", f"{ident}_2" if ident != q.split("_")[0] else f"{ident}_3", f"{p_same:.6f}"))
    matches = root / "ids.csv"
    with open(matches, "w", newline="") as fh:
        csv.writer(fh).writerows([("query_id", "identity", "score", "database_image_id", "p_same"), *rows])
    review_cli("--matches", matches, "--metadata", root / "metadata.csv", "-o", root / "page", "--quiet")
    return {"url": (root / "page" / "index.html").as_uri(), "rows": rows, "queries": queries, "root": root}


def test_field_page_threshold_filters_side_by_side_and_named_newcomers(driver, field_page):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    widths = _image_widths(driver, field_page["url"])
    assert widths and all(w > 0 for w in widths), widths  # every thumbnail, the extra images of each identity included
    _open(driver, field_page["url"])
    n_more = driver.execute_script("return document.querySelectorAll('img.more').length")
    assert n_more == len(field_page["rows"]) * 2  # each candidate identity shows two more of its four photos
    p_same = driver.execute_script("return Array.prototype.map.call(document.querySelectorAll('[data-candidate]'), "
                                   "function (c) { return parseFloat(c.dataset.pSame); })")
    assert sorted(p_same) == sorted(float(r[4]) for r in field_page["rows"])

    def visible_candidates() -> int:
        return driver.execute_script("return Array.prototype.filter.call(document.querySelectorAll('[data-candidate]'), "
                                     "function (c) { return getComputedStyle(c).display !== 'none'; }).length")

    assert visible_candidates() == len(field_page["rows"])
    slider = driver.find_element(By.ID, "threshold")
    driver.execute_script("arguments[0].value = '0.3'; arguments[0].dispatchEvent(new Event('input'));", slider)
    assert visible_candidates() == sum(float(r[4]) >= 0.3 for r in field_page["rows"])  # P(same) decides, not the score
    driver.execute_script("arguments[0].value = '0'; arguments[0].dispatchEvent(new Event('input'));", slider)

    view = Select(driver.find_element(By.CSS_SELECTOR, 'select[data-filter="viewpoint"]'))
    view.select_by_value("left")
    left = {q for n, q in enumerate(field_page["queries"]) if n % 2}
    assert _shown(driver) == left
    view.select_by_value("")
    assert _shown(driver) == set(field_page["queries"])

    q0 = field_page["queries"][0]
    cand = driver.find_element(By.CSS_SELECTOR, f'[data-query="{q0}"] [data-rank="1"] img.cimg')
    click(driver, cand)
    WebDriverWait(driver, 20).until(lambda d: d.execute_script(
        "var q = document.getElementById('cmp-q'), c = document.getElementById('cmp-c');"
        "return !document.getElementById('compare').hidden && q.complete && c.complete && q.naturalWidth > 0 && c.naturalWidth > 0;"))
    srcs = driver.execute_script("return [document.getElementById('cmp-q').src, document.getElementById('cmp-c').src]")
    assert srcs[0].endswith(f"/images/{q0}.jpg") and srcs[1].endswith(f"/images/{q0.split('_')[0]}_3.jpg")  # the photos, not thumbnails
    driver.find_element(By.TAG_NAME, "body").send_keys("\ue00c")  # Escape
    assert driver.execute_script("return document.getElementById('compare').hidden")

    reviewer = driver.find_element(By.ID, "reviewer")
    reviewer.send_keys("Ana Ortiz")
    q1 = field_page["queries"][1]
    click(driver, driver.find_element(By.CSS_SELECTOR, f'[data-query="{q1}"] button[data-act="new"]'))
    name = driver.find_element(By.CSS_SELECTOR, f'[data-query="{q1}"] .newname')
    name.send_keys("Nova")
    click(driver, driver.find_element(By.CSS_SELECTOR, f'[data-query="{q0}"] [data-rank="1"] button[data-act="confirm"]'))
    text = driver.execute_script("return window.reidkitReview.csv()")
    assert list(csv.reader(text.splitlines())) == [["query_id", "decision", "identity_or_image", "reviewer"],
                                                   [q0, "confirm", q0.split("_")[0], "Ana Ortiz"],
                                                   [q1, "new_individual", "Nova", "Ana Ortiz"]]
    driver.refresh()  # the name and the newcomer's name survive a reload
    assert driver.find_element(By.ID, "reviewer").get_attribute("value") == "Ana Ortiz"
    assert driver.execute_script("return window.reidkitReview.csv()") == text
