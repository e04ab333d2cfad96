"""Write the review page: ``DIR/index.html`` plus ``DIR/thumbs/``.

The page is one static HTML file with its CSS and JavaScript inline and thumbnails beside
it, so it opens from ``file://``, from a USB stick or a shared drive, with no server and
no network. A Content-Security-Policy forbids every request except the page's own files.

Query blocks and candidates are rendered here, server side, as plain HTML that carries
the stable contract (``data-query``, ``data-candidate``, ``data-rank``, ``data-score``,
``data-correct``); the script only sorts, filters and records decisions. Every id comes
from a file name and is escaped.
"""

from __future__ import annotations

import hashlib
import json
from html import escape
from importlib.resources import files
from pathlib import Path

from reidkit.atomic import atomic_write
from reidkit.review.histogram import score_histogram_svg
from reidkit.review.model import QueryItem, Review, summary
from reidkit.review.thumbs import Thumb, make_thumbnails

THUMBS = "thumbs"
CSP = ("default-src 'none'; img-src 'self' file: data: blob:; style-src 'unsafe-inline'; "
       "script-src 'unsafe-inline'; connect-src 'none'; base-uri 'none'; form-action 'none'")


def _a(value: object) -> str:
    """An attribute value: escaped, quotes included."""
    return escape(str(value), quote=True)


def _img(t: Thumb, alt: str, src: Path) -> str:
    if t.name is None:
        return f'<div class="noimg" title="{_a(f"{src}: {t.error}")}">image unreadable<br>{escape(t.error)}</div>'
    return f'<img loading="lazy" decoding="async" src="{THUMBS}/{t.name}" width="{t.width}" height="{t.height}" alt="{_a(alt)}">'


def _block(q: QueryItem, order: int, thumbs: dict[Path, Thumb], kind: str) -> str:
    first = q.first_correct
    attrs = f'data-query="{_a(q.id)}" data-order="{order}" data-margin="{q.margin:.6f}"'
    attrs += f' data-top="{q.candidates[0].score:.6f}"' if q.candidates else ""
    if first is not None:
        attrs += f' data-first-correct="{first}"'
    ident = f'<span class="ident">{escape(q.identity)}</span>' if q.identity else ""
    out = [f'<section class="q" {attrs}><div class="qhead"><figure class="query">{_img(thumbs[q.image], f"query {q.id}", q.image)}'
           f'<figcaption><b>{escape(q.id)}</b>{ident}</figcaption></figure>'
           f'<div class="qmeta"><div>margin {q.margin:.4f}</div>'
           + (f'<div class="{"miss" if first == 0 else "hit"}">{"no correct candidate" if first == 0 else f"first correct: #{first}"}</div>'
              if first is not None else "")
           + '<button type="button" data-act="new" title="n">New individual</button></div></div><ol class="cands">']
    for c in q.candidates:
        cattrs = f'data-candidate="{_a(c.id)}" data-rank="{c.rank}" data-score="{c.score:.6f}"'
        mark = ""
        if c.correct is not None:
            cattrs += f' data-correct="{str(c.correct).lower()}"'
            mark = '<span class="mark ok">&#10003;</span>' if c.correct else '<span class="mark bad">&#10007;</span>'
        label = c.identity if kind == "image" else f"best image {c.image_id}"
        out.append(f'<li class="c" {cattrs}>{_img(thumbs[c.image], f"candidate {c.id}", c.image)}'
                   f'<div class="cmeta"><span class="rank">#{c.rank}</span> <span class="score">{c.score:.4f}</span>{mark}'
                   f'<div class="cid">{escape(c.id)}</div>'
                   + (f'<div class="sub">{escape(label)}</div>' if label else "")
                   + '</div><div class="act"><button type="button" data-act="confirm" title="c">Confirm</button>'
                   '<button type="button" data-act="reject" title="x">Reject</button></div></li>')
    out.append("</ol></section>")
    return "".join(out)


def _summary_html(review: Review) -> str:
    s = summary(review)
    n_c = sum(len(q.candidates) for q in review.queries)
    items = [f"{len(review.queries)} queries", f"{n_c} candidates ({'identities' if review.kind == 'identity' else 'images'})"]
    if s:
        what = "identities" if review.kind == "identity" else "images"
        items += [f'<b>mAP@20</b> <span id="map20">{s["mAP@20"]:.4f}</span>',
                  f'<b>P@1</b> <span id="p1">{s["P@1"]:.4f}</span>',
                  f"over {int(s['queries'])} queries with a true match ({what})"]
    else:
        items.append("no ground truth: pass identity folders, --labels or metadata whale_id for marks and metrics")
    return " &middot; ".join(items)


def _histogram(review: Review) -> str:
    if review.labelled:
        cands = [c for q in review.queries for c in q.candidates if c.correct is not None]
        return score_histogram_svg({"true": [c.score for c in cands if c.correct],
                                    "false": [c.score for c in cands if not c.correct]})
    return score_histogram_svg({"all": [c.score for q in review.queries for c in q.candidates]})


def write_review(review: Review, out_dir: Path, thumb_height: int = 160, progress: bool = True) -> Path:
    """Thumbnails first, then the page (atomically), so the page never names a missing file."""
    out_dir = Path(out_dir)
    sources = [p for q in review.queries for p in (q.image, *(c.image for c in q.candidates))]
    thumbs = make_thumbnails(sources, out_dir / THUMBS, thumb_height, progress=progress)
    assets = files("reidkit.review")
    css = assets.joinpath("review.css").read_text(encoding="utf-8")
    js = assets.joinpath("review.js").read_text(encoding="utf-8")
    # decisions are stored per page: the same file rebuilt keeps them, another page does not see them
    key = hashlib.sha256(json.dumps([review.source, review.kind, [q.id for q in review.queries]]).encode()).hexdigest()[:16]
    title = f"reidkit review: {Path(review.source).name}"
    body = "\n".join(_block(q, i, thumbs, review.kind) for i, q in enumerate(review.queries))
    labelled = review.labelled
    html = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title><style>{css}</style></head>
<body data-kind="{review.kind}" data-key="{key}" data-labelled="{str(labelled).lower()}">
<header><h1>{escape(title)}</h1>
<div class="summary">{_summary_html(review)}</div>
<div class="tools"><figure class="histfig">{_histogram(review)}<figcaption>score histogram</figcaption></figure>
<div class="controls">
<label>Sort <select id="sort"><option value="file">file order</option><option value="uncertain">most uncertain first (small margin)</option>
{'<option value="worst">worst first</option>' if labelled else ''}</select></label>
<label{'' if labelled else ' class="off"'}><input type="checkbox" id="missed"{'' if labelled else ' disabled'}> only queries with no correct candidate</label>
<div><button type="button" id="download">Download decisions (CSV)</button> <button type="button" id="clear">Clear decisions</button>
<span id="count"></span></div>
<div class="help">Keys: <kbd>j</kbd>/<kbd>k</kbd> or <kbd>&darr;</kbd>/<kbd>&uarr;</kbd> query, <kbd>h</kbd>/<kbd>l</kbd> or
<kbd>&larr;</kbd>/<kbd>&rarr;</kbd> candidate, <kbd>c</kbd> confirm, <kbd>x</kbd> reject, <kbd>n</kbd> new individual.
Decisions are kept in this browser (localStorage) until cleared.</div>
</div></div></header>
<main id="queries">
{body}
</main>
<script>{js}</script>
</body></html>
"""
    page = out_dir / "index.html"
    with atomic_write(page, "w", encoding="utf-8") as fh:
        fh.write(html)
    return page
