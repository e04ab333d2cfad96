"""Progress bars for long work, one policy for every command."""

from __future__ import annotations

import logging
import sys
from typing import Any

# On a terminal the bar redraws in place. Into a log file (nohup, CI, a batch job) a redraw would
# be a carriage return per update, so the same tqdm bar is written as a plain log line at most this
# often, and not at all for work that ends sooner: an hour-long INT8 distillation shows its pace,
# a two-second embed stays silent.
LOG_EVERY_S = 60.0

log = logging.getLogger("reidkit")


class _LogLines:
    """A file-like sink that turns tqdm's redraws into log lines."""

    def write(self, text: str) -> None:
        line = text.replace("\r", "").strip()
        if line:
            log.info("%s", line)

    def flush(self) -> None:
        pass


def progress_bar(iterable: Any = None, *, enabled: bool = True, **kw: Any) -> Any:
    """A tqdm bar on a terminal; log lines every LOG_EVERY_S when stderr is not one; nothing
    when the caller turned progress off (``--quiet``)."""
    from tqdm import tqdm

    if not enabled:
        return tqdm(iterable, disable=True, **kw)
    if sys.stderr.isatty():
        return tqdm(iterable, **kw)
    return tqdm(iterable, file=_LogLines(), delay=LOG_EVERY_S, mininterval=LOG_EVERY_S, ascii=True, **kw)
