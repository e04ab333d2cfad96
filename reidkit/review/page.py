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
import os
from html import escape
from importlib.resources import files
from pathlib import Path
from urllib.parse import quote

from reidkit.atomic import atomic_write
from reidkit.review.histogram import score_histogram_svg
from reidkit.review.model import FILTERS, QueryItem, Review, summary
from reidkit.imaging import ImageRef
from reidkit.review.thumbs import Source, Thumb, make_thumbnails

THUMBS = "thumbs"
CSP = ("default-src 'none'; img-src 'self' file: data: blob:; style-src 'unsafe-inline'; "
       "script-src 'unsafe-inline'; connect-src 'none'; base-uri 'none'; form-action 'none'")


def _a(value: object) -> str:
    """An attribute value: escaped, quotes included."""
    return escape(str(value), quote=True)


def _full(src: Path, page_dir: Path) -> str:
    """The original photo, relative to the page, for the side-by-side view: it works wherever
    the page and the photos keep their places (the view falls back to the thumbnail otherwise)."""
    try:
        rel = os.path.relpath(Path(src).resolve(), page_dir.resolve())
    except ValueError:  # another drive on Windows
        return Path(src).resolve().as_uri()
    return "/".join(_a(quote(part)) for part in Path(rel).parts)  # a URL: '#', '?' and '%' in names stay names


def _img(t: Thumb, alt: str, src: Source, page_dir: Path | None = None, cls: str = "") -> str:
    src = src.path if isinstance(src, ImageRef) else src  # the side-by-side view shows the whole photo
    if t.name is None:
        return f'<div class="noimg" title="{_a(f"{src}: {t.error}")}">image unreadable<br>{escape(t.error)}</div>'
    full = f' data-full="{_full(src, page_dir)}"' if page_dir is not None else ""
    klass = f' class="{cls}"' if cls else ""
    return (f'<img{klass} loading="lazy" decoding="async" src="{THUMBS}/{t.name}" width="{t.width}" height="{t.height}" '
            f'alt="{_a(alt)}"{full}>')


def _block(q: QueryItem, order: int, thumbs: dict[Source, Thumb], kind: str, page_dir: Path) -> str:
    first = q.first_correct
    attrs = f'data-query="{_a(q.id)}" data-order="{order}" data-margin="{q.margin:.6f}"'
    attrs += f' data-top="{q.candidates[0].score:.6f}"' if q.candidates else ""
    attrs += "".join(f' data-f-{k.replace("_", "-")}="{_a(v)}"' for k, v in q.meta.items())
    if first is not None:
        attrs += f' data-first-correct="{first}"'
    ident = f'<span class="ident">{escape(q.identity)}</span>' if q.identity else ""
    meta = "".join(f'<div class="fmeta">{escape(k.replace("_id", ""))}: {escape(v)}</div>' for k, v in q.meta.items())
    out = [f'<section class="q" {attrs}><div class="qhead"><figure class="query">'
           f'{_img(thumbs[q.image], f"query {q.id}", q.image, page_dir, "qimg")}'
           f'<figcaption><b>{escape(q.id)}</b>{ident}</figcaption></figure>'
           f'<div class="qmeta"><div>margin {q.margin:.4f}</div>{meta}'
           + (f'<div class="{"miss" if first == 0 else "hit"}">{"no correct candidate" if first == 0 else f"first correct: #{first}"}</div>'
              if first is not None else "")
           + '<button type="button" data-act="new" title="n">New individual</button>'
           '<input type="text" class="newname" placeholder="name the newcomer" aria-label="name of the new individual" hidden>'
           '</div></div><ol class="cands">']
    for c in q.candidates:
        cattrs = f'data-candidate="{_a(c.id)}" data-rank="{c.rank}" data-score="{c.score:.6f}"'
        if c.p_same is not None:
            cattrs += f' data-p-same="{c.p_same:.6f}"'
        mark = ""
        if c.correct is not None:
            cattrs += f' data-correct="{str(c.correct).lower()}"'
            mark = '<span class="mark ok">&#10003;</span>' if c.correct else '<span class="mark bad">&#10007;</span>'
        label = c.identity if kind == "image" else f"best image {c.image_id}"
        more = "".join(_img(thumbs[m], f"another image of {c.id}", m, page_dir, "more") for m in c.more)
        p_same = f' <span class="psame" title="P(same individual)">p {c.p_same:.2f}</span>' if c.p_same is not None else ""
        out.append(f'<li class="c" {cattrs}>{_img(thumbs[c.image], f"candidate {c.id}", c.image, page_dir, "cimg")}'
                   + (f'<div class="mores">{more}</div>' if more else "")
                   + f'<div class="cmeta"><span class="rank">#{c.rank}</span> <span class="score">{c.score:.4f}</span>{p_same}{mark}'
                   f'<div class="cid">{escape(c.id)}</div>'
                   + (f'<div class="sub">{escape(label)}</div>' if label else "")
                   + '</div><div class="act"><button type="button" data-act="confirm" title="c">Confirm</button>'
                   '<button type="button" data-act="reject" title="x">Reject</button></div></li>')
    out.append("</ol></section>")
    return "".join(out)


def _filter(key: str, values: list[str]) -> str:
    """A select that narrows the page to queries with one value of ``key`` (viewpoint, encounter, date)."""
    if len(values) < 2:
        return ""
    name = key.replace("_id", "")
    opts = "".join(f'<option value="{_a(v)}">{escape(v)}</option>' for v in values)
    return f'<label>{escape(name)} <select class="filter" data-filter="{_a(key.replace("_", "-"))}"><option value="">all</option>{opts}</select></label> '


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
    sources = [p for q in review.queries for p in (q.image, *(i for c in q.candidates for i in (c.image, *c.more)))]
    thumbs = make_thumbnails(sources, out_dir / THUMBS, thumb_height, progress=progress)
    assets = files("reidkit.review")
    css = assets.joinpath("review.css").read_text(encoding="utf-8")
    js = assets.joinpath("review.js").read_text(encoding="utf-8")
    # decisions are stored per page: the same file rebuilt keeps them, another page does not see them
    key = hashlib.sha256(json.dumps([review.source, review.kind, [q.id for q in review.queries]]).encode()).hexdigest()[:16]
    title = f"reidkit review: {Path(review.source).name}"
    body = "\n".join(_block(q, i, thumbs, review.kind, out_dir) for i, q in enumerate(review.queries))
    labelled = review.labelled
    calibrated = any(c.p_same is not None for q in review.queries for c in q.candidates)
    filters = "".join(_filter(k, sorted({q.meta[k] for q in review.queries if k in q.meta})) for k in FILTERS)
    html = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title><style>{css}</style></head>
<body data-kind="{review.kind}" data-key="{key}" data-labelled="{str(labelled).lower()}" data-calibrated="{str(calibrated).lower()}">
<header><h1>{escape(title)}</h1>
<div class="summary">{_summary_html(review)}</div>
<div class="tools"><figure class="histfig">{_histogram(review)}<figcaption>score histogram</figcaption></figure>
<div class="controls">
<label>Sort <select id="sort"><option value="file">file order</option><option value="uncertain">most uncertain first (small margin)</option>
{'<option value="worst">worst first</option>' if labelled else ''}</select></label>
<label{'' if labelled else ' class="off"'}><input type="checkbox" id="missed"{'' if labelled else ' disabled'}> only queries with no correct candidate</label>
<label>Hide candidates with {'P(same)' if calibrated else 'score'} below <input type="range" id="threshold" min="0" max="1" step="0.01" value="0">
<output id="threshold-value">0.00</output></label>
{f'<div class="filters">{filters}</div>' if filters else ''}
<label>Reviewer <input type="text" id="reviewer" placeholder="your name" autocomplete="name"></label>
<div><button type="button" id="download">Download decisions (CSV)</button> <button type="button" id="clear">Clear decisions</button>
<span id="count"></span></div>
<div class="help">Keys: <kbd>j</kbd>/<kbd>k</kbd> or <kbd>&darr;</kbd>/<kbd>&uarr;</kbd> query, <kbd>h</kbd>/<kbd>l</kbd> or
<kbd>&larr;</kbd>/<kbd>&rarr;</kbd> candidate, <kbd>c</kbd> confirm, <kbd>x</kbd> reject, <kbd>n</kbd> new individual,
<kbd>v</kbd> (or a click on a photo) query and candidate side by side, <kbd>Esc</kbd> closes it.
Decisions are kept in this browser (localStorage) until cleared.</div>
</div></div></header>
<main id="queries">
{body}
</main>
<div id="compare" hidden><div class="pair"><figure><img id="cmp-q" alt="query, large"><figcaption id="cmp-qcap"></figcaption></figure>
<figure><img id="cmp-c" alt="candidate, large"><figcaption id="cmp-ccap"></figcaption></figure></div>
<p class="help">Esc or a click closes this view.</p></div>
<script>{js}</script>
</body></html>
"""
    page = out_dir / "index.html"
    with atomic_write(page, "w", encoding="utf-8") as fh:
        fh.write(html)
    return page
