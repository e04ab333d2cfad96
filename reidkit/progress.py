"""Progress bars for long work, one policy for every command."""

from __future__ import annotations

import functools
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


@functools.cache  # one class, made on first use: importing tqdm stays out of start-up
def _logged_tqdm() -> type:
    from tqdm import tqdm

    class LoggedTqdm(tqdm):  # type: ignore[misc]
        """tqdm whose postfix updates wait for the next timed redraw: on a terminal each one
        redraws in place, into a log file each would be a line (one per training step)."""

        def set_postfix(self, ordered_dict: Any = None, refresh: bool = True, **kw: Any) -> None:
            super().set_postfix(ordered_dict, refresh=False, **kw)

        def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
            super().set_postfix_str(s, refresh=False)

        def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
            super().set_description(desc, refresh=False)

    return LoggedTqdm


def progress_bar(iterable: Any = None, *, enabled: bool = True, **kw: Any) -> Any:
    """A tqdm bar on a terminal; log lines every LOG_EVERY_S when stderr is not one; nothing
    when the caller turned progress off (``--quiet``)."""
    from tqdm import tqdm

    if not enabled:
        return tqdm(iterable, disable=True, **kw)
    if sys.stderr.isatty():
        return tqdm(iterable, **kw)
    # maxinterval too: tqdm's monitor thread otherwise forces a redraw 10 s after each timed one (two lines a minute)
    return _logged_tqdm()(iterable, file=_LogLines(), delay=LOG_EVERY_S, mininterval=LOG_EVERY_S, maxinterval=LOG_EVERY_S,
                          ascii=True, **kw)
