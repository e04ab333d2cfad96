"""``python -m reidkit.review`` = ``reid-review`` (for environments without the console script)."""

from reidkit.cli import review_cmd

review_cmd(prog_name="reid-review")
