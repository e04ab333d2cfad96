"""The ``reid`` command: one click group, one module per subcommand.

Subcommands are imported only when named, so ``reid --help`` and ``reid infer`` never load
the training stack. The ``reid-<command>`` scripts are aliases of ``reid <command>``.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from reidkit import __version__

# subcommand -> (module, function); adding a command is one module and one row here
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("reidkit.cli.train", "train_cmd"),
    "export": ("reidkit.cli.export", "export_cmd"),
    "infer": ("reidkit.cli.infer", "infer_cmd"),
    "eval": ("reidkit.cli.eval", "eval_cmd"),
    "review": ("reidkit.cli.review", "review_cmd"),
    "bench": ("reidkit.cli.bench", "bench_cmd"),
    "synth": ("reidkit.cli.synth", "synth_cmd"),
    "catalogue": ("reidkit.cli.catalogue", "catalogue_cmd"),
}
SUMMARY = {
    "train": "Train an ensemble member (timm backbone + metric head).",
    "export": "Export members to a bundle that passed the parity gate.",
    "infer": "Rank gallery images or individuals for each query.",
    "eval": "Score a submission (mAP@20) or labelled embeddings.",
    "review": "Build the offline review page from results.",
    "bench": "Time every engine on a bundle (backends x precision x batch).",
    "synth": "Write a seeded synthetic Where's Whale-do data set.",
    "catalogue": "A catalogue of individuals that grows with each reviewed decision.",
}


def load_command(name: str) -> click.Command:
    module, attr = COMMANDS[name]
    cmd = getattr(importlib.import_module(module), attr)
    assert isinstance(cmd, click.Command)
    return cmd


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return load_command(cmd_name) if cmd_name in COMMANDS else None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, SUMMARY[name]) for name in COMMANDS])


@click.group("reid", cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="reidkit")
def main() -> None:
    """reidkit: re-identification from training to the fastest inference, and on to review.

    \b
    Typical run:
      reid train --data photos/ --backbone tf_efficientnet_lite0 --out m1.safetensors
      reid export m1.safetensors -o bundle/
      reid infer --model bundle/ --query new/ --gallery catalogue/ --by identity -o ids.csv --review review/

    Every command takes --help. `reid-<command>` is the same as `reid <command>`.
    """


def __getattr__(name: str) -> Any:
    """``from reidkit.cli import infer_cmd`` keeps working: the commands load on first use."""
    for cmd, (_, attr) in COMMANDS.items():
        if attr == name:
            return load_command(cmd)
    raise AttributeError(name)
