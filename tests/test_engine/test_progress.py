"""Progress lines of long jobs (lpd_mmseg.engine.progress and
ProgressLoggerHook)."""
import io
from types import SimpleNamespace

import pytest

from lpd_mmseg.engine.hooks import ProgressLoggerHook
from lpd_mmseg.engine.progress import (
    TextProgress,
    progress_message,
    report_points,
)


def test_report_points_hand_computed():
    assert report_points(7, 3) == {2, 5, 7}  # round(7/3), round(14/3), 7
    assert report_points(100, 4) == {25, 50, 75, 100}
    assert report_points(2, 10) == {1, 2}  # never more than the steps
    assert report_points(0, 10) == set()


def test_progress_message_hand_computed():
    assert progress_message('test', 30, 100, 41.2) == (
        'progress test: 30/100 (30%), 0:00:41 elapsed, eta 0:01:36')
    # Finished: no ETA.
    assert progress_message('train', 600, 600, 3725) == (
        'progress train: 600/600 (100%), 1:02:05 elapsed')


def test_text_progress_writes_a_few_lines_outside_a_terminal():
    stream = io.StringIO()  # not a terminal
    bar = TextProgress(800, 'patches', stream=stream, reports=4)
    for _ in range(800):
        bar.update()
    bar.close()
    lines = stream.getvalue().splitlines()
    assert [line.split(',')[0] for line in lines] == [
        'progress patches: 200/800 (25%)', 'progress patches: 400/800 (50%)',
        'progress patches: 600/800 (75%)',
        'progress patches: 800/800 (100%)']
    silent = io.StringIO()
    off = TextProgress(5, 'x', enabled=False, stream=silent)
    off.update()
    off.close()
    assert silent.getvalue() == ''


class _Logger:

    def __init__(self):
        self.lines = []

    def info(self, msg):
        self.lines.append(msg)


def test_hook_reports_short_test_passes():
    # 7 test batches: shorter than any logger interval, still reported.
    runner = SimpleNamespace(
        logger=_Logger(), test_loop=SimpleNamespace(dataloader=[0] * 7))
    hook = ProgressLoggerHook(reports=3)
    hook.before_test_epoch(runner)
    for i in range(7):
        hook.after_test_iter(runner, i)
    assert [line.split(',')[0] for line in runner.logger.lines] == [
        'progress test: 2/7 (29%)', 'progress test: 5/7 (71%)',
        'progress test: 7/7 (100%)']


def test_hook_counts_training_from_the_resumed_iteration():
    runner = SimpleNamespace(logger=_Logger(), max_iters=600, iter=400)
    hook = ProgressLoggerHook(reports=2)
    hook.before_train(runner)
    for it in range(400, 600):
        runner.iter = it
        hook.after_train_iter(runner, it)
    assert [line.split(',')[0] for line in runner.logger.lines] == [
        'progress train: 100/200 (50%)', 'progress train: 200/200 (100%)']


@pytest.mark.parametrize('reports', [0, -1, 2.5, True])
def test_hook_rejects_bad_reports(reports):
    with pytest.raises(ValueError, match='positive integer'):
        ProgressLoggerHook(reports=reports)


def test_demo_console_keeps_quarter_progress_and_val_miou():
    from tool_fixtures import load_tool
    keep = load_tool('demo').ConsoleFilter(every=25)
    prefix = '12/01 21:00:00 - mmengine - INFO - '
    lines = [prefix + progress_message('train', i, 600, 6.0 * i)
             for i in range(60, 601, 60)]
    lines += [prefix + 'Iter(val) [7/7]    aAcc: 81.2000  mIoU: 44.5100  '
              'mDice: 60.0000', prefix + 'Config:', 'model = dict(']
    lines += [prefix + progress_message('test', i, 7, 1.0) for i in (1, 7)]
    shown = [keep(line) for line in lines]
    shown = [s.split(',')[0].strip() for s in shown if s is not None]
    assert shown == [
        'progress train: 180/600 (30%)', 'progress train: 300/600 (50%)',
        'progress train: 480/600 (80%)', 'progress train: 600/600 (100%)',
        'val mIoU 44.5100', 'progress test: 7/7 (100%)']
