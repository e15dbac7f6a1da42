"""Progress bars: live on a terminal and in a notebook, a plain line every 30 s in a log file, nothing
with --quiet.

Every bar in gan-bench comes from `bar(...)` (same arguments as tqdm). When stderr is not a
terminal, tqdm would rewrite its line with carriage returns thousands of times (one 40 kB line
per bar in a log); there each bar prints a whole line at most every `LOG_INTERVAL_S` seconds
and one when it closes.
"""

from __future__ import annotations

import sys

from tqdm import tqdm
from tqdm.auto import tqdm as live_tqdm

LOG_INTERVAL_S = 30.0


class _Lines:
    """The stream a LineBar writes to: its own whole lines pass, tqdm's bare "\\r" / "\\n" do not."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        if text.strip("\r\n"):
            self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


class LineBar(tqdm):
    """A tqdm that prints plain lines (for logs): on refresh at most every `mininterval`, and at close."""

    def __init__(self, *args, file=None, **kwargs):
        kwargs.setdefault("mininterval", LOG_INTERVAL_S)
        kwargs.setdefault("maxinterval", kwargs["mininterval"])  # tqdm's monitor would refresh every 10 s
        kwargs.update(dynamic_ncols=False, ncols=100, ascii=True, position=None)
        super().__init__(*args, file=_Lines(file or sys.stderr), **kwargs)

    def display(self, msg=None, pos=None):
        line = self.__str__().rstrip()  # also for tqdm's clearing message at close: the final state
        if line and line != getattr(self, "_last_line", None):
            self._last_line = line
            self.fp.write(line + "\n")
            self.fp.flush()
        return True


def is_terminal(stream=None) -> bool:
    stream = stream or sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


def in_notebook() -> bool:
    """A Jupyter kernel runs this process: its stderr is no terminal, yet tqdm.auto draws widgets there."""
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    return type(shell).__name__ == "ZMQInteractiveShell"


def bar(iterable=None, *, enabled: bool = True, **kwargs) -> tqdm:
    """A progress bar (tqdm arguments): live on a terminal and in a notebook (tqdm.auto: a widget), plain
    periodic lines otherwise (a log file); off when not `enabled`."""
    kwargs["disable"] = not enabled or kwargs.get("disable", False)
    cls = live_tqdm if is_terminal(kwargs.get("file")) or in_notebook() else LineBar
    return cls(iterable, **kwargs)
