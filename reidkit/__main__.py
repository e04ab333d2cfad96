"""``python -m reidkit`` = ``reid`` (for environments without the console scripts)."""

from reidkit.cli import main

main(prog_name="reid")
