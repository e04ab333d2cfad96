"""``reid synth``: a seeded synthetic Where's Whale-do data set."""

from __future__ import annotations

from pathlib import Path

import click

from reidkit.cli.common import CONTEXT, friendly


@click.command("synth", context_settings=CONTEXT)
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--images", default=500, type=click.IntRange(2, 10_000_000), help="Photos to write.")
@click.option("--identities", default=50, type=click.IntRange(1, 1_000_000), help="Individuals, each sighted several times.")
@click.option("--scenarios", default=10, type=click.IntRange(1, 1000), help="Query scenarios (query_scenarios.csv rows).")
@click.option("--seed", default=0, type=int, help="The same seed writes the same files.")
@click.option("--overwrite", is_flag=True, help="Replace OUT_DIR if it exists.")
@friendly()
def synth_cmd(out_dir: Path, images: int, identities: int, scenarios: int, seed: int, overwrite: bool) -> None:
    """Write a seeded synthetic Where's Whale-do data set (JPEGs and the CSV files)."""
    from reidkit.data.synth import generate

    generate(out_dir, images, identities, seed, scenarios, overwrite=overwrite)
    click.echo(f"wrote {images} images of {identities} identities and {scenarios} scenarios to {out_dir}")
