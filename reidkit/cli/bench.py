"""``reid bench``: the engine sweep on one bundle (backends x precision x batch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from reidkit.cli.common import CONTEXT, friendly
from reidkit.runtime.backends.registry import BACKENDS


@click.command("bench", context_settings=CONTEXT)
@click.option("--model", required=True, type=click.Path(path_type=Path), help="Bundle directory.")
@click.option("--images", required=True, type=click.Path(path_type=Path), help="Image folder, or a Whale-do metadata.csv (adds mAP@20).")
@click.option("--checkpoints", multiple=True, type=click.Path(path_type=Path), help="Member checkpoints for the torch reference (default: found beside the bundle's manifest).")
@click.option("--backends", default=",".join(["torch", *BACKENDS]), help="Comma-separated backends (torch is the fp32 reference).")
@click.option("--batch-sizes", default="1,8,32", help="Comma-separated batch sizes.")
@click.option("--max-images", default=256, type=int, help="Images used per measurement.")
@click.option("--repeats", default=5, type=int, help="Timed repetitions (after one warm-up).")
@click.option("-o", "--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Report directory.")
@friendly()
def bench_cmd(**kw: Any) -> None:
    """Benchmark backends x precision x batch: throughput, latency, memory and parity, as a report."""
    from reidkit.bench.report import engine_sweep

    engine_sweep(**kw)
