"""Long work logs its pace when stderr is a file; short work stays silent."""

from __future__ import annotations

import logging
import time

from reidkit import progress


def test_long_work_logs_its_progress_and_short_work_stays_silent(monkeypatch, caplog):
    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.02)  # pytest's stderr is not a terminal
    caplog.set_level(logging.INFO, logger="reidkit")
    for _ in progress.progress_bar(range(5), desc="slow", unit="step"):
        time.sleep(0.05)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("slow")]
    assert lines and lines[-1].startswith("slow: 100%") and "5/5" in lines[-1], lines
    assert all("\r" not in line for line in lines)
    caplog.clear()
    monkeypatch.setattr(progress, "LOG_EVERY_S", 30.0)
    bar = progress.progress_bar(range(5), desc="quick")
    for i in bar:
        bar.set_postfix(loss=f"{i}")  # a postfix per step must not become a log line per step
    assert not [r for r in caplog.records if "quick" in r.getMessage()]
    for _ in progress.progress_bar(range(5), enabled=False, desc="quiet"):
        time.sleep(0.001)
    assert not [r for r in caplog.records if "quiet" in r.getMessage()]
