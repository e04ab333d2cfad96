"""``python -m reidkit.review`` = ``reid review`` (for environments without the console scripts)."""

from reidkit.cli.review import review_cmd

review_cmd(prog_name="reid review")
