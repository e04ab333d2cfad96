"""``reid-eval --plots DIR``: the figures of an evaluation as PNG files.

matplotlib (the ``bench`` extra) is imported here only, inside the function, with the
file-only Agg backend: ``reid-eval`` without ``--plots`` and the runtime never load it.
Every file is written atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from reidkit.atomic import atomic_path
from reidkit.errors import MissingDependencyError

TRUE, FALSE = "#2e9d4f", "#d0453a"


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise MissingDependencyError("--plots needs matplotlib; pip install 'reidkit[bench]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    fig.clf()
    return path


def cmc_plot(plt: Any, cmc: np.ndarray, path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ranks = np.arange(1, len(cmc) + 1)
    ax.plot(ranks, cmc, marker="o", ms=3)
    ax.set(xlabel="rank k", ylabel="queries with a true match in the top k", ylim=(0, 1.02), xlim=(0.5, len(cmc) + 0.5), title=title)
    ax.set_xticks(ranks[:: max(1, len(ranks) // 10)])
    ax.grid(alpha=0.3)
    for k in (1, 5, 10):
        if k <= len(cmc):
            ax.annotate(f"{cmc[k - 1]:.3f}", (k, cmc[k - 1]), textcoords="offset points", xytext=(4, -12), fontsize=8)
    return _save(fig, path)


def score_plot(plt: Any, true: Sequence[float], false: Sequence[float], path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    both = np.concatenate([np.asarray(true, float), np.asarray(false, float)])
    bins = np.linspace(both.min(), both.max(), 40) if len(both) and np.ptp(both) > 0 else 20
    ax.hist(false, bins=bins, color=FALSE, alpha=0.55, density=True, label=f"false matches ({len(false)})")
    ax.hist(true, bins=bins, color=TRUE, alpha=0.55, density=True, label=f"true matches ({len(true)})")
    ax.set(xlabel="score", ylabel="density", title=title)
    ax.legend(fontsize=8)
    return _save(fig, path)


def bar_plot(plt: Any, groups: Mapping[str, Mapping[str, float]], path: Path, title: str, xlabel: str) -> Path:
    names = list(groups)
    values = [groups[n]["mAP@20"] for n in names]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(names) + 2), 3.8))
    bars = ax.bar(range(len(names)), values, color="#4a78c2")
    ax.set_xticks(range(len(names)), [f"{n}\n({int(groups[n]['queries'])} q)" for n in names], fontsize=8,
                  rotation=0 if len(names) < 8 else 45)
    ax.bar_label(bars, [f"{v:.3f}" for v in values], fontsize=8)
    ax.set(ylabel="mAP@20", xlabel=xlabel, ylim=(0, 1.08), title=title)
    return _save(fig, path)


def submission_plots(scored: Any, out_dir: Path) -> list[Path]:
    """CMC, true/false score distributions, mAP@20 per scenario and per viewpoint pair (the
    last two when the metadata and scenarios give them)."""
    from reidkit.metrics import submission_cmc

    plt = _pyplot()
    out_dir = Path(out_dir)
    out = [cmc_plot(plt, submission_cmc(scored.rows, scored.labels), out_dir / "cmc.png", "CMC (submission rows)")]
    true = [r.score for r in scored.rows if r.database_image_id in scored.labels.get(r.query_id, ())]
    false = [r.score for r in scored.rows if r.database_image_id not in scored.labels.get(r.query_id, ())]
    out.append(score_plot(plt, true, false, out_dir / "scores.png", "Scores of true and false matches"))
    if "per_scenario" in scored.report:
        out.append(bar_plot(plt, scored.report["per_scenario"], out_dir / "map_per_scenario.png", "mAP@20 per scenario", "scenario"))
    if "per_viewpoint_pair" in scored.report:
        out.append(bar_plot(plt, scored.report["per_viewpoint_pair"], out_dir / "map_per_viewpoint_pair.png",
                            "mAP@20 per viewpoint pair", "query view -> true match view"))
    plt.close("all")
    return out


def embedding_plots(vectors: np.ndarray, labels: Sequence[str], out_dir: Path, max_rank: int = 20,
                    max_pairs: int = 2_000_000, seed: int = 0) -> list[Path]:
    """Leave-one-out CMC and the cosine scores (mapped to [0, 1]) of same- and different-identity
    pairs; at most ``max_pairs`` pairs, drawn at random, for large sets."""
    from reidkit.metrics import embedding_metrics

    plt = _pyplot()
    out_dir = Path(out_dir)
    m = embedding_metrics(vectors, labels, ranks=range(1, max_rank + 1))
    cmc = np.array([m[f"CMC@{k}"] for k in range(1, max_rank + 1)])
    out = [cmc_plot(plt, cmc, out_dir / "cmc.png", "CMC (leave-one-out)")]
    lab = np.asarray([str(x) for x in labels])
    n = len(lab)
    rng = np.random.default_rng(seed)
    total = n * (n - 1) // 2
    if total <= max_pairs:
        i, j = np.triu_indices(n, 1)
    else:
        i, j = rng.integers(0, n, max_pairs), rng.integers(0, n, max_pairs)
        i, j = i[i != j], j[i != j]
    s = (np.einsum("ij,ij->i", vectors[i], vectors[j]) + 1) / 2
    same = lab[i] == lab[j]
    out.append(score_plot(plt, s[same], s[~same], out_dir / "scores.png", "Scores of same- and different-identity pairs"))
    plt.close("all")
    return out


def reliability_plot(section: Mapping[str, Any], path: Path) -> Path:
    """Reliability diagram: observed same-individual rate against predicted P(same), per level,
    from ``reid eval``'s calibration section (held-out points of a fit, or a judged file)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    ax.plot([0, 1], [0, 1], color="#999999", lw=1, ls="--", label="perfect")
    for source, key, ece in (("fitted", "reliability", "held_out_ece"), ("judged", "reliability", "ece")):
        for level, info in (section.get(source) or {}).items():
            if not isinstance(info, Mapping) or key not in info:
                continue
            pts = np.asarray(info[key], dtype=np.float64).reshape(-1, 3)
            ax.plot(pts[:, 0], pts[:, 1], marker="o", label=f"{level} ({source}, ECE {info[ece]:.3f})")
    ax.set_xlabel("predicted P(same individual)")
    ax.set_ylabel("observed same-individual rate")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title("Calibration (held-out identities)")
    out = _save(fig, Path(path))
    plt.close("all")
    return out
