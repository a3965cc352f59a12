"""Progress of long jobs in a form that suits both terminals and log files.

On a terminal a redrawn bar is fine; in a log file (or a pipe, e.g. under
``make``) every redraw becomes part of one endless line.  So outside a
terminal progress is a few whole lines, each one like::

    progress test: 30/100 (30%), 0:00:41 elapsed, eta 0:01:36

The helpers here are shared by :class:`~lpd_mmseg.engine.hooks.
ProgressLoggerHook` (runner loops) and the tools' own loops
(:class:`TextProgress`).
"""
import datetime
import sys
import time
from typing import IO, Optional, Set

#: Every progress line starts with this word (what ``tools/demo.py`` keeps
#: on the console).
PROGRESS_TAG = 'progress'


def report_points(total: int, reports: int) -> Set[int]:
    """Counts ``1..total`` after which to report: ``reports`` evenly spaced
    ones (fewer when ``total`` is smaller), always including ``total``.

    Example: ``report_points(7, 3) == {2, 5, 7}``; ``report_points(2, 10)
    == {1, 2}``.
    """
    if total <= 0 or reports <= 0:
        return set()
    reports = min(reports, total)
    return {max(1, round(total * i / reports)) for i in range(1, reports + 1)}


def _clock(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(round(max(seconds, 0.0)))))


def progress_message(label: str, done: int, total: int,
                     elapsed: float) -> str:
    """One progress line: counts, percent, elapsed time and a linear ETA.

    Example: ``progress_message('test', 30, 100, 41.2)`` is ``'progress
    test: 30/100 (30%), 0:00:41 elapsed, eta 0:01:36'``.
    """
    percent = 100.0 * done / total if total else 100.0
    text = (f'{PROGRESS_TAG} {label}: {done}/{total} ({percent:.0f}%), '
            f'{_clock(elapsed)} elapsed')
    if 0 < done < total:
        text += f', eta {_clock(elapsed * (total - done) / done)}'
    return text


class TextProgress:
    """Progress of a loop of ``total`` steps: a bar on a terminal, about
    ``reports`` whole lines elsewhere.

    Args:
        total (int): number of steps.
        label (str): what is counted, e.g. ``'patches'``.
        enabled (bool): False shows nothing.
        stream (IO, optional): default ``sys.stdout``.
        reports (int): lines written outside a terminal.
    """

    def __init__(self,
                 total: int,
                 label: str,
                 enabled: bool = True,
                 stream: Optional[IO] = None,
                 reports: int = 10):
        self.total, self.label = int(total), label
        self.stream = stream if stream is not None else sys.stdout
        self.enabled = bool(enabled) and self.total > 0
        self.done = 0
        self.start = time.time()
        self.bar = None
        self.points: Set[int] = set()
        if not self.enabled:
            return
        isatty = getattr(self.stream, 'isatty', None)
        if isatty is not None and isatty():
            from mmengine.utils import ProgressBar
            self.bar = ProgressBar(self.total, file=self.stream)
        else:
            self.points = report_points(self.total, reports)

    def update(self, steps: int = 1) -> None:
        """Count ``steps`` more finished steps."""
        if not self.enabled:
            return
        before, self.done = self.done, self.done + steps
        if self.bar is not None:
            self.bar.update(steps)
        elif any(before < p <= self.done for p in self.points):
            self.stream.write(
                progress_message(self.label, self.done, self.total,
                                 time.time() - self.start) + '\n')
            self.stream.flush()

    def close(self) -> None:
        """End the bar's line (a terminal bar leaves the cursor on it)."""
        if self.bar is not None:
            self.bar.file.write('\n')
            self.bar.file.flush()
            self.bar = None
