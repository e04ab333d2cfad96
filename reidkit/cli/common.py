"""What every command shares: the error contract and the options several commands take.

A user error (``ReidkitError``) prints one line and exits 2; ``--debug`` shows the
traceback. Ctrl-C exits 130 and says how to resume. Options that mean the same thing in
several commands are declared once here, so their names, types and help never drift apart.
Nothing here imports more than click and the backend table: ``--help`` stays instant.
"""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path
from typing import Any, Callable

import click

from reidkit.runtime.backends.registry import CHOICES
from reidkit.runtime.backends.registry import cli_help as backends_help
from reidkit.runtime.bundle_format import PRECISIONS

F = Callable[..., Any]
CONTEXT: dict[str, Any] = {"show_default": True, "help_option_names": ["-h", "--help"]}


def setup_logging(debug: bool) -> None:
    logger = logging.getLogger("reidkit")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s" if debug else "%(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(logging.DEBUG if debug else logging.INFO)


def friendly(resume_hint: str | None = None) -> Callable[[F], F]:
    """Turn user errors into one line + exit 2, and Ctrl-C into exit 130."""
    def deco(fn: F) -> F:
        @click.option("--debug", is_flag=True, help="Show full tracebacks and debug logs.")
        @functools.wraps(fn)
        def wrapper(*args: Any, debug: bool = False, **kwargs: Any) -> Any:
            from reidkit.errors import ReidkitError

            setup_logging(debug)
            try:
                return fn(*args, **kwargs)
            except ReidkitError as exc:
                if debug:
                    raise
                click.echo(f"error: {exc}", err=True)
                sys.exit(2)
            except KeyboardInterrupt:
                click.echo("\ninterrupted." + (f" {resume_hint}" if resume_hint else ""), err=True)
                sys.exit(130)
        return wrapper
    return deco


def _stack(*decorators: F) -> F:
    def apply(fn: F) -> F:
        for d in reversed(decorators):
            fn = d(fn)
        return fn
    return apply


def model_option(required: bool = True) -> F:
    return click.option("--model", required=required, type=click.Path(path_type=Path), help="Bundle directory written by `reid export`.")


quiet_option = click.option("--quiet", is_flag=True, help="No progress bar.")
coco_identity_option = click.option("--coco-identity", metavar="KEY",
                                    help="COCO JSON sources: the annotation key that names the individual (default: identity, else name).")


def image_sources(query_help: str = "Folder mode: the query photos: a folder (flat or one sub-folder per identity), a "
                                     "metadata or wildlife-datasets CSV, or a COCO JSON; boxes in them are cropped.",
                  gallery_help: str = "Folder mode: the gallery photos, in any layout --query takes (for --by identity: "
                                      "one sub-folder per identity, or a CSV/JSON naming individuals).") -> F:
    """Folder mode (--query/--gallery) and Whale-do scenario mode (--scenarios/--metadata)."""
    return _stack(
        click.option("--query", type=click.Path(path_type=Path), help=query_help),
        click.option("--gallery", type=click.Path(path_type=Path), help=gallery_help),
        click.option("--scenarios", type=click.Path(path_type=Path), help="Scenario mode: query_scenarios.csv."),
        click.option("--metadata", type=click.Path(path_type=Path), help="Scenario mode: metadata.csv."),
    )


labels_option = click.option("--labels", type=click.Path(dir_okay=False, path_type=Path),
                             help="Ground truth labels.csv (query_id,database_image_id) for the correct/incorrect marks and metrics.")


def engine_options(batch_default: int = 32) -> F:
    """Which engine runs the bundle, at which precision, on how many threads."""
    return _stack(
        click.option("--backend", default="auto", type=click.Choice(CHOICES), help=backends_help()),
        click.option("--precision", default=None, type=click.Choice(PRECISIONS),
                     help="Which of the bundle's graphs runs (default: the engine's first, fp32 on CPUs). int8 is the fastest "
                          "on CPUs, fp16 suits GPUs; TensorRT engines are always fp16. bf16 runs the fp32 graphs in bf16 "
                          "arithmetic on OpenVINO, on CPUs with AVX512-BF16 or AMX only."),
        click.option("--batch-size", default=batch_default, type=click.IntRange(1, 4096), help="Images per engine call."),
        click.option("--workers", default=None, type=click.IntRange(1, 256),
                     help="Decode threads (default: the CPUs this process may run on, at most 8)."),
        click.option("--threads", default=None, type=click.IntRange(1, 256),
                     help="Inference threads of onnxruntime, OpenVINO or MNN (default: the CPUs this process may run on, "
                          "from its affinity mask, e.g. a Slurm or taskset cpuset)."),
    )
