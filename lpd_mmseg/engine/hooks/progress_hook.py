"""A few progress lines per loop, whatever the logger interval."""
import time
from typing import Optional

from mmengine.hooks import Hook
from mmseg.registry import HOOKS

from ..progress import progress_message, report_points


@HOOKS.register_module()
class ProgressLoggerHook(Hook):
    """Log ``reports`` progress lines per train run and per val/test pass.

    mmengine's ``LoggerHook`` writes a line every ``interval`` iterations,
    so a test pass shorter than the interval (100 images at batch 16 are 7
    iterations; with TTA and a CRF that can take minutes on a CPU) shows
    nothing until its metric table.  This hook adds lines like
    ``progress test: 4/7 (57%), 0:01:02 elapsed, eta 0:00:47`` through the
    runner's logger, so they reach the console and the log file alike.

    Args:
        reports (int): lines per loop (fewer when the loop is shorter).
    """
    priority = 'BELOW_NORMAL'

    def __init__(self, reports: int = 10):
        if isinstance(reports, bool) or not isinstance(reports, int) \
                or reports < 1:
            raise ValueError(f'ProgressLoggerHook: reports must be a '
                             f'positive integer, got {reports!r}')
        self.reports = reports
        self._start = {}
        self._points = {}

    def _begin(self, mode: str, total: Optional[int]) -> None:
        self._start[mode] = time.time()
        self._points[mode] = report_points(int(total or 0), self.reports)

    def _step(self, runner, mode: str, done: int, total: int) -> None:
        if done in self._points.get(mode, ()):
            runner.logger.info(
                progress_message(mode, done, total,
                                 time.time() - self._start[mode]))

    @staticmethod
    def _num_batches(loop) -> int:
        try:
            return len(loop.dataloader)
        except TypeError:  # an iterable dataloader without a length
            return 0

    def before_train(self, runner) -> None:
        self._begin('train', runner.max_iters - runner.iter)
        self._first_iter = runner.iter

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        total = runner.max_iters - self._first_iter
        self._step(runner, 'train', runner.iter + 1 - self._first_iter,
                   total)

    def before_val_epoch(self, runner) -> None:
        self._begin('val', self._num_batches(runner.val_loop))

    def after_val_iter(self, runner, batch_idx, data_batch=None,
                       outputs=None) -> None:
        self._step(runner, 'val', batch_idx + 1,
                   self._num_batches(runner.val_loop))

    def before_test_epoch(self, runner) -> None:
        self._begin('test', self._num_batches(runner.test_loop))

    def after_test_iter(self, runner, batch_idx, data_batch=None,
                        outputs=None) -> None:
        self._step(runner, 'test', batch_idx + 1,
                   self._num_batches(runner.test_loop))
