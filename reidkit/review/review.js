/* reidkit review page: sorting, filtering, a score threshold, side-by-side view, keyboard navigation
   and decisions.
   Decisions live in localStorage under a key per page; the CSV is built here and saved
   through a Blob link, which works from file:// with no server. */
(function () {
  "use strict";
  var main = document.getElementById("queries");
  var KEY = "reidkit-review:" + document.body.dataset.key;
  var state = load(); // {query_id: {"new": true|false, "name": "...", "c": {candidate_id: "confirm"|"reject"}}}
  var REVIEWER = "reidkit-reviewer"; // one name per browser, for every page
  var reviewer = document.getElementById("reviewer");
  var threshold = document.getElementById("threshold");
  var filters = Array.prototype.slice.call(document.querySelectorAll("select.filter"));
  var compare = document.getElementById("compare");
  var cur = null, curC = -1;
  /* Sorting sets the CSS order of each block (main is a flex column) instead of moving the
     nodes: on a 2,000-query page moving them cost 12-20 s after the first layout, setting
     order 0.2-0.3 s (benchmarks/results/review-page.md). view holds the blocks in shown order. */
  var view = Array.prototype.slice.call(main.children);

  function load() {
    try { return JSON.parse(localStorage.getItem(KEY)) || {}; } catch (e) { return {}; }
  }
  function save() {
    try { localStorage.setItem(KEY, JSON.stringify(state)); } catch (e) { /* private mode: keep in memory */ }
    count();
  }
  function blocks() { return view.slice(); }
  function block(qid) { return main.querySelector('.q[data-query="' + CSS.escape(qid) + '"]'); }
  function cands(sec) { return Array.prototype.slice.call(sec.querySelectorAll(".c")); }

  function visible(sec) { return cands(sec).filter(function (li) { return !li.classList.contains("below"); }); }

  function paint(sec) {
    var s = state[sec.dataset.query] || {}, c = s.c || {};
    sec.querySelector('[data-act="new"]').setAttribute("aria-pressed", s["new"] ? "true" : "false");
    var name = sec.querySelector(".newname");
    name.hidden = !s["new"];
    if (document.activeElement !== name) { name.value = s.name || ""; }
    cands(sec).forEach(function (li) {
      var d = c[li.dataset.candidate];
      li.querySelector('[data-act="confirm"]').setAttribute("aria-pressed", d === "confirm" ? "true" : "false");
      li.querySelector('[data-act="reject"]').setAttribute("aria-pressed", d === "reject" ? "true" : "false");
    });
  }

  function decide(sec, li, act) {
    var qid = sec.dataset.query, s = state[qid] || (state[qid] = {"new": false, c: {}});
    if (act === "new") {
      s["new"] = !s["new"];
      if (!s["new"]) { delete s.name; }
      if (s["new"]) { Object.keys(s.c).forEach(function (k) { if (s.c[k] === "confirm") { delete s.c[k]; } }); }
    } else {
      var cid = li.dataset.candidate;
      if (s.c[cid] === act) { delete s.c[cid]; } else { s.c[cid] = act; if (act === "confirm") { s["new"] = false; } }
    }
    if (!s["new"] && !Object.keys(s.c).length) { delete state[qid]; }
    paint(sec);
    save();
  }

  /* rows query_id,decision,identity_or_image,reviewer in page file order, candidates by rank; a new
     individual's third column is the name the reviewer gave it (rows with one name make one individual) */
  function rows() {
    var out = [], who = reviewer.value.trim();
    blocks().sort(function (a, b) { return a.dataset.order - b.dataset.order; }).forEach(function (sec) {
      var s = state[sec.dataset.query];
      if (!s) { return; }
      if (s["new"]) { out.push([sec.dataset.query, "new_individual", (s.name || "").trim(), who]); }
      cands(sec).forEach(function (li) {
        var d = s.c[li.dataset.candidate];
        if (d) { out.push([sec.dataset.query, d, li.dataset.candidate, who]); }
      });
    });
    return out;
  }
  function field(v) { return /[",\r\n]/.test(v) ? '"' + v.replace(/"/g, '""') + '"' : v; }
  function csv() {
    return ["query_id,decision,identity_or_image,reviewer"].concat(rows().map(function (r) { return r.map(field).join(","); })).join("\n") + "\n";
  }
  function count() {
    var n = Object.keys(state).length;
    document.getElementById("count").textContent = n ? n + (n === 1 ? " query" : " queries") + " decided" : "";
  }

  function num(el, k, dflt) { var v = el.dataset[k]; return v === undefined ? dflt : parseFloat(v); }
  function sortBy(mode) {
    var key;
    if (mode === "uncertain") {
      key = function (a, b) { return num(a, "margin", 0) - num(b, "margin", 0) || a.dataset.order - b.dataset.order; };
    } else if (mode === "worst") {
      /* no correct candidate first (confident mistakes before hesitant ones), then the latest first hit */
      var bad = function (el) { var f = num(el, "firstCorrect", -1); return f === 0 ? 1e9 : f; };
      key = function (a, b) {
        return bad(b) - bad(a) || num(b, "top", 0) - num(a, "top", 0) || a.dataset.order - b.dataset.order;
      };
    } else {
      key = function (a, b) { return a.dataset.order - b.dataset.order; };
    }
    view = blocks().sort(key);
    view.forEach(function (s, i) { s.style.order = i; });
    if (cur) { cur.scrollIntoView({block: "nearest"}); }
  }
  function shown() {
    return blocks().filter(function (s) {
      return !s.classList.contains("filtered") && (!main.classList.contains("only-missed") || s.dataset.firstCorrect === "0");
    });
  }
  /* candidates below the threshold are hidden: P(same individual) when the run was calibrated, else the score */
  function applyThreshold() {
    var t = parseFloat(threshold.value), key = document.body.dataset.calibrated === "true" ? "pSame" : "score";
    document.getElementById("threshold-value").textContent = t.toFixed(2);
    main.querySelectorAll(".c").forEach(function (li) { li.classList.toggle("below", num(li, key, 1) < t); });
    if (cur && curC >= visible(cur).length) { setCur(cur, Math.max(0, visible(cur).length - 1)); }
  }
  function applyFilters() {
    var want = filters.filter(function (f) { return f.value !== ""; });
    blocks().forEach(function (sec) {
      var out = want.some(function (f) { return sec.getAttribute("data-f-" + f.dataset.filter) !== f.value; });
      sec.classList.toggle("filtered", out);
    });
  }
  function full(img) { return img ? (img.dataset.full || img.getAttribute("src")) : ""; }
  function show(el, img, caption) {
    el.onerror = function () { el.onerror = null; el.src = img.getAttribute("src"); }; /* photo moved: the thumbnail */
    el.src = full(img);
    document.getElementById(el.id + "cap").textContent = caption;
  }
  function openCompare(sec, li) {
    if (!sec) { return; }
    show(document.getElementById("cmp-q"), sec.querySelector("img.qimg"), "query " + sec.dataset.query);
    var img = li ? li.querySelector("img.cimg") : null;
    show(document.getElementById("cmp-c"), img, li ? "#" + li.dataset.rank + " " + li.dataset.candidate : "");
    compare.hidden = false;
  }
  function closeCompare() { compare.hidden = true; }

  function setCur(sec, ci) {
    if (cur) { cur.classList.remove("cur"); cands(cur).forEach(function (li) { li.classList.remove("cur"); }); }
    cur = sec; curC = ci;
    if (!sec) { return; }
    sec.classList.add("cur");
    var li = visible(sec)[ci];
    if (li) { li.classList.add("cur"); }
    sec.scrollIntoView({block: "nearest"});
  }
  function move(d) {
    var list = shown();
    if (!list.length) { return; }
    var i = list.indexOf(cur);
    i = i < 0 ? (d > 0 ? 0 : list.length - 1) : Math.max(0, Math.min(list.length - 1, i + d));
    setCur(list[i], 0);
  }
  function moveC(d) {
    if (!cur) { move(1); return; }
    var n = visible(cur).length;
    if (n) { setCur(cur, Math.max(0, Math.min(n - 1, curC + d))); }
  }

  main.addEventListener("click", function (e) {
    var sec = e.target.closest(".q"), li = e.target.closest(".c");
    if (!sec) { return; }
    var btn = e.target.closest("button[data-act]");
    if (btn) { decide(sec, li, btn.dataset.act); }
    setCur(sec, li ? visible(sec).indexOf(li) : Math.max(curC, 0));
    if (e.target.tagName === "IMG") { openCompare(sec, li || visible(sec)[0]); }
  });
  main.addEventListener("input", function (e) {
    if (!e.target.classList.contains("newname")) { return; }
    var s = state[e.target.closest(".q").dataset.query];
    if (s) { s.name = e.target.value; save(); }
  });
  compare.addEventListener("click", closeCompare);
  document.addEventListener("keydown", function (e) {
    var t = e.target.tagName;
    if (e.key === "Escape" && !compare.hidden) { closeCompare(); e.preventDefault(); return; }
    if (t === "INPUT" || t === "SELECT" || t === "TEXTAREA" || e.altKey || e.ctrlKey || e.metaKey) { return; }
    var li = cur ? visible(cur)[curC] : null;
    switch (e.key) {
      case "v": if (cur) { openCompare(cur, li); } break;
      case "j": case "ArrowDown": move(1); break;
      case "k": case "ArrowUp": move(-1); break;
      case "l": case "ArrowRight": moveC(1); break;
      case "h": case "ArrowLeft": moveC(-1); break;
      case "c": if (li) { decide(cur, li, "confirm"); } break;
      case "x": case "r": if (li) { decide(cur, li, "reject"); } break;
      case "n": if (cur) { decide(cur, null, "new"); } break;
      default: return;
    }
    e.preventDefault();
  });
  document.getElementById("sort").addEventListener("change", function (e) { sortBy(e.target.value); });
  document.getElementById("missed").addEventListener("change", function (e) {
    main.classList.toggle("only-missed", e.target.checked);
  });
  threshold.addEventListener("input", applyThreshold);
  filters.forEach(function (f) { f.addEventListener("change", applyFilters); });
  try { reviewer.value = localStorage.getItem(REVIEWER) || ""; } catch (e) { /* private mode */ }
  reviewer.addEventListener("input", function () {
    try { localStorage.setItem(REVIEWER, reviewer.value); } catch (e) { /* private mode: keep in the field */ }
  });
  document.getElementById("download").addEventListener("click", function () {
    var a = document.createElement("a");
    a.href = URL.createObjectURL(new Blob([csv()], {type: "text/csv"}));
    a.download = "decisions.csv";
    document.body.appendChild(a);
    a.click();
    setTimeout(function () { URL.revokeObjectURL(a.href); a.remove(); }, 2000);
  });
  document.getElementById("clear").addEventListener("click", function () {
    if (!window.confirm("Clear every decision on this page?")) { return; }
    var old = Object.keys(state);
    state = {};
    old.forEach(function (q) { var s = block(q); if (s) { paint(s); } });
    save();
  });

  Object.keys(state).forEach(function (q) { var s = block(q); if (s) { paint(s); } });
  count();
  /* for scripts and tests: the same CSV text the download button saves */
  window.reidkitReview = {csv: csv, sort: sortBy, order: function () { return view.map(function (s) { return s.dataset.query; }); }};
}());
