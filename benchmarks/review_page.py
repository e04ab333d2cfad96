"""How fast a big review page is built and opens: N queries x top-k over synthetic Whale-do images.

Builds the page with ``reidkit.review.review_page`` (the code ``reid-review`` runs), once
cold and once again (thumbnails reused), then opens it in headless Chromium and reads the
browser's own navigation and paint timings, and times a sort and a filter in the page.
Writes ``<out>/review-page.md`` and ``.json`` (the current report; the date is inside).

Usage: python benchmarks/review_page.py [--queries 2000] [--top-k 5] [--images 4000] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _chromium():
    import shutil

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        opts.add_argument(arg)
    opts.binary_location = shutil.which("chromium") or shutil.which("google-chrome") or "chromium"
    return webdriver.Chrome(options=opts, service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"))


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--top-k", type=int, default=5)
    ap.add_argument("--images", type=int, default=4000)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    a = ap.parse_args()

    from reidkit.data.synth import generate
    from reidkit.data.whaledo import read_metadata
    from reidkit.review import review_page

    work = Path(tempfile.mkdtemp(prefix="review-bench-"))
    ds = generate(work / "ds", a.images, max(2, a.images // 8), seed=0, n_scenarios=1, progress=False)
    meta = read_metadata(ds / "metadata.csv")
    ids = meta.image_ids
    rng = np.random.default_rng(0)
    queries, gallery = ids[: a.queries], ids[a.queries:]
    by_whale: dict[str, list[str]] = {}
    for g in gallery:
        by_whale.setdefault(meta.whale_id[g], []).append(g)
    matches = work / "matches.csv"
    with open(matches, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["query_id", "database_image_id", "score"])
        for q in queries:
            same = [g for g in by_whale.get(meta.whale_id[q], []) if g != q]
            picks = list(rng.choice(gallery, a.top_k, replace=False))
            if same and rng.random() < 0.7:  # a plausible mix of hits and misses
                picks[int(rng.integers(0, a.top_k))] = same[0]
            picks = list(dict.fromkeys(picks))
            scores = np.sort(rng.uniform(0.4, 0.95, len(picks)))[::-1]
            w.writerows((q, g, f"{s:.6f}") for g, s in zip(picks, scores))

    def build() -> tuple[float, float]:
        t, c = time.perf_counter(), _cpu()
        review_page(matches, work / "page", metadata=ds / "metadata.csv", progress=False)
        return time.perf_counter() - t, _cpu() - c

    cold = build()
    warm = build()
    page = work / "page" / "index.html"
    thumbs = list((work / "page" / "thumbs").glob("*.jpg"))
    html_mb = page.stat().st_size / 1e6
    thumbs_mb = sum(p.stat().st_size for p in thumbs) / 1e6

    d = _chromium()
    try:
        opened = []
        for _ in range(3):
            d.get(page.as_uri())
            opened.append(d.execute_script("""
                var n = performance.getEntriesByType('navigation')[0];
                var fcp = performance.getEntriesByName('first-contentful-paint')[0];
                return {dom_content_loaded_ms: n.domContentLoadedEventEnd, load_ms: n.loadEventEnd,
                        first_contentful_paint_ms: fcp ? fcp.startTime : null,
                        images_loaded_at_open: Array.prototype.filter.call(document.images, function (i) { return i.complete && i.naturalWidth > 0; }).length,
                        images: document.images.length, queries: document.querySelectorAll('[data-query]').length,
                        candidates: document.querySelectorAll('[data-candidate]').length};"""))
        interact = d.execute_script("""
            function t(f) { var s = performance.now(); f(); document.body.offsetHeight; return performance.now() - s; }
            var box = document.getElementById('missed');
            return {sort_uncertain_ms: t(function () { window.reidkitReview.sort('uncertain'); }),
                    sort_worst_ms: t(function () { window.reidkitReview.sort('worst'); }),
                    filter_ms: t(function () { box.click(); }), unfilter_ms: t(function () { box.click(); })};""")
        version = d.capabilities.get("browserVersion", "?")
    finally:
        d.quit()

    best = min(opened, key=lambda o: o["load_ms"])
    result = {
        "date": datetime.date.today().isoformat(), "queries": a.queries, "top_k": a.top_k, "gallery_images": len(gallery),
        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "chromium": version,
        "build_cold_s": round(cold[0], 2), "build_cold_cpu_s": round(cold[1], 2),
        "build_again_s": round(warm[0], 2), "build_again_cpu_s": round(warm[1], 2),
        "html_mb": round(html_mb, 2), "thumbnails": len(thumbs), "thumbnails_mb": round(thumbs_mb, 2),
        "open_runs": opened, "open_best": best, "interactions": {k: round(v, 1) for k, v in interact.items()},
    }
    a.out.mkdir(parents=True, exist_ok=True)
    stem = a.out / "review-page"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    md = [f"# Review page: {a.queries} queries x top-{a.top_k} ({result['date']})", "",
          f"Synthetic Where's Whale-do images (top views about 438x152, 8% lateral about 344x1805), "
          f"{len(gallery)} gallery images; {result['cores']} cores shared with other work, Chromium {version} headless. "
          "Made by `python benchmarks/review_page.py`.", "",
          "| measure | value |", "|---|---|",
          f"| build, cold (thumbnails made) | {result['build_cold_s']} s wall, {result['build_cold_cpu_s']} s CPU |",
          f"| build again (thumbnails reused) | {result['build_again_s']} s wall, {result['build_again_cpu_s']} s CPU |",
          f"| index.html | {result['html_mb']} MB |",
          f"| thumbnails | {len(thumbs)} files, {result['thumbnails_mb']} MB |",
          f"| DOMContentLoaded (best of 3) | {best['dom_content_loaded_ms']:.0f} ms |",
          f"| first contentful paint | {best['first_contentful_paint_ms'] or float('nan'):.0f} ms |",
          f"| load event | {best['load_ms']:.0f} ms |",
          f"| images loaded at open (lazy) | {best['images_loaded_at_open']} of {best['images']} |",
          *(f"| {k.replace('_ms', '').replace('_', ' ')} | {v} ms |" for k, v in result["interactions"].items()),
          "", "Wall times move with the machine's load; the CPU seconds of the build are steadier."]
    stem.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
