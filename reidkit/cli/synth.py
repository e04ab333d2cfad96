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
@click.option("--camera", is_flag=True,
              help="Field photos: each whale at a random bounding box on a camera-size frame; metadata.csv gets a bbox "
                   "column and annotations.json has the same boxes as COCO.")
@click.option("--camera-size", default="4000x3000", show_default=True, metavar="WxH",
              help="With --camera: the frame size in pixels (4000x3000 is 12 MP).")
@click.option("--overwrite", is_flag=True, help="Replace OUT_DIR if it exists.")
@friendly()
def synth_cmd(out_dir: Path, images: int, identities: int, scenarios: int, seed: int, camera: bool, camera_size: str,
              overwrite: bool) -> None:
    """Write a seeded synthetic Where's Whale-do data set (JPEGs and the CSV files)."""
    from reidkit.data.synth import generate

    frame = _frame_size(camera_size) if camera else None
    generate(out_dir, images, identities, seed, scenarios, overwrite=overwrite, camera=frame)
    what = f" on {frame[0]}x{frame[1]} frames with boxes" if frame else ""
    click.echo(f"wrote {images} images of {identities} identities{what} and {scenarios} scenarios to {out_dir}")


def _frame_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"{text!r}: write the frame size as WIDTHxHEIGHT, e.g. 4000x3000", param_hint="--camera-size") from None
    if not (64 <= w <= 20000 and 64 <= h <= 20000):
        raise click.BadParameter(f"{text!r}: each side must be 64 to 20000 pixels", param_hint="--camera-size")
    return w, h
