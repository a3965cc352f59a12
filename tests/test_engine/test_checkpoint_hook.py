"""SafeCheckpointHook, atomic writes and the resume rules (no training)."""
import os
import os.path as osp

import pytest
import torch
from mmengine.logging import MessageHub, MMLogger
from mmengine.runner.checkpoint import save_checkpoint

from lpd_mmseg.apis.checkpoint import (
    CorruptCheckpointError,
    UnsafeCheckpointError,
    check_checkpoint_file,
    safe_load_checkpoint,
)
from lpd_mmseg.engine.atomic_io import atomic_write_bytes, leftover_partials
from lpd_mmseg.engine.hooks import SafeCheckpointHook
from lpd_mmseg.engine.resume import ResumeError, choose_resume_checkpoint


class _Killed(BaseException):
    """Stands for a SIGKILL in the middle of a write."""


class _RunsCode:
    def __reduce__(self):
        return (os.system, ('true', ))


def _ckpt(path, step=1):
    torch.save(dict(meta=dict(iter=step), state_dict={
        'w': torch.full((4, ), float(step))}), path)
    return str(path)


def _truncate(path):
    data = open(path, 'rb').read()
    with open(path, 'wb') as f:
        f.write(data[:len(data) // 2])


def _record(work, text):
    (work / 'last_checkpoint').write_text(text)


# ------------------------------------------------------------ atomic writes
def test_atomic_write_keeps_old_content_when_interrupted(tmp_path,
                                                         monkeypatch):
    target = tmp_path / 'iter_2.pth'
    target.write_bytes(b'old complete checkpoint')

    def dies(*args):
        raise _Killed

    monkeypatch.setattr(os, 'fsync', dies)
    with pytest.raises(_Killed):
        atomic_write_bytes(str(target), b'new')
    assert target.read_bytes() == b'old complete checkpoint'
    assert leftover_partials(str(tmp_path)) == []
    monkeypatch.undo()
    atomic_write_bytes(str(target), b'new')
    assert target.read_bytes() == b'new'


# ------------------------------------------------------ damaged checkpoints
def test_empty_and_truncated_checkpoints_give_one_clear_error(tmp_path):
    empty = tmp_path / 'iter_4.pth'
    empty.write_bytes(b'')
    with pytest.raises(CorruptCheckpointError, match=r'iter_4\.pth is '
                       r'empty \(0 bytes\)'):
        safe_load_checkpoint(str(empty))
    truncated = _ckpt(tmp_path / 'iter_6.pth')
    _truncate(truncated)
    for check in (safe_load_checkpoint, check_checkpoint_file):
        with pytest.raises(CorruptCheckpointError,
                           match=r'iter_6\.pth \(\d+ bytes\) is truncated'):
            check(truncated)


# ------------------------------------------------------------ resume rules
def test_resume_uses_last_checkpoint_when_intact(tmp_path):
    _ckpt(tmp_path / 'iter_2.pth')
    four = _ckpt(tmp_path / 'iter_4.pth', 4)
    _record(tmp_path, four)
    assert choose_resume_checkpoint(str(tmp_path)) == (four, [])


def test_resume_prefers_a_newer_complete_checkpoint(tmp_path):
    """Killed after iter_4.pth was renamed into place, before the record
    was updated."""
    two = _ckpt(tmp_path / 'iter_2.pth', 2)
    four = _ckpt(tmp_path / 'iter_4.pth', 4)
    _record(tmp_path, two)
    path, notes = choose_resume_checkpoint(str(tmp_path))
    assert path == four and 'newer' in notes[0]
    _truncate(four)  # a newer but damaged file (stock hook) is passed over
    path, notes = choose_resume_checkpoint(str(tmp_path))
    assert path == two and 'iter_4.pth' in notes[0]


@pytest.mark.parametrize('record', [None, '', 'missing', 'empty',
                                    'truncated'])
def test_resume_falls_back_to_newest_intact(tmp_path, record):
    _ckpt(tmp_path / 'iter_2.pth', 2)
    eight = _ckpt(tmp_path / 'iter_8.pth', 8)
    _ckpt(tmp_path / 'best_mIoU_iter_9.pth', 9)  # no optimizer: not used
    if record == 'missing':
        _record(tmp_path, str(tmp_path / 'iter_10.pth'))
    elif record == 'empty':
        (tmp_path / 'iter_10.pth').write_bytes(b'')
        _record(tmp_path, str(tmp_path / 'iter_10.pth'))
    elif record == 'truncated':
        _truncate(_ckpt(tmp_path / 'iter_10.pth', 10))
        _record(tmp_path, str(tmp_path / 'iter_10.pth'))
    elif record is not None:
        _record(tmp_path, record)
    path, notes = choose_resume_checkpoint(str(tmp_path))
    assert path == eight
    text = '\n'.join(notes)
    assert 'newest intact checkpoint' in text and 'iter_8.pth' in text
    if record in ('missing', 'empty', 'truncated'):
        assert 'iter_10.pth' in text


def test_resume_refuses_when_every_checkpoint_is_damaged(tmp_path):
    (tmp_path / 'iter_2.pth').write_bytes(b'')
    _truncate(_ckpt(tmp_path / 'iter_4.pth'))
    with pytest.raises(ResumeError, match=r'(?s)iter_4\.pth.*iter_2\.pth.*'
                       r'--restart'):
        choose_resume_checkpoint(str(tmp_path))


def test_resume_with_no_checkpoint_starts_fresh(tmp_path):
    assert choose_resume_checkpoint(str(tmp_path))[0] is None


def test_hostile_checkpoint_via_last_checkpoint_is_refused(tmp_path):
    _ckpt(tmp_path / 'iter_2.pth')
    evil = tmp_path / 'iter_4.pth'
    torch.save(dict(meta=dict(note=_RunsCode())), evil)
    _record(tmp_path, str(evil))
    with pytest.raises(UnsafeCheckpointError, match='refused to load'):
        choose_resume_checkpoint(str(tmp_path))
    (tmp_path / 'last_checkpoint').unlink()  # reached by the scan: same
    with pytest.raises(UnsafeCheckpointError):
        choose_resume_checkpoint(str(tmp_path))


# --------------------------------------------------- hook saving order
class _FakeRunner:
    """What CheckpointHook uses of a runner; ``kill_on`` makes the save of
    that file name die half-way."""

    def __init__(self, work_dir):
        self.work_dir = str(work_dir)
        self.message_hub = MessageHub.get_instance(f'hub-{work_dir}')
        self.logger = MMLogger.get_instance(f'log-{work_dir}')
        self.iter, self.epoch, self.kill_on = 0, 0, None

    def save_checkpoint(self, out_dir, filename, file_client_args=None,
                        save_optimizer=True, save_param_scheduler=True,
                        meta=None, by_epoch=True, backend_args=None):
        path = osp.join(out_dir, filename)
        if filename == self.kill_on:
            from lpd_mmseg.engine.atomic_io import partial_name
            with open(partial_name(path), 'wb') as f:
                f.write(b'PK\x03\x04 half a zip')
            raise _Killed
        save_checkpoint(dict(meta=meta,
                             message_hub=self.message_hub.state_dict()),
                        path, backend_args=backend_args)


def _step(hook, runner, mIoU):
    """Save after training iteration ``runner.iter + 1``, then validate
    (the runner's order: ``runner.iter`` grows in between)."""
    hook._save_checkpoint(runner)
    runner.iter += 1
    hook._save_best_checkpoint(runner, dict(mIoU=mIoU))
    runner.iter += 1


def _first_save(work_dir):
    """A hook that has saved iter_2.pth and a best of mIoU 0.5."""
    runner = _FakeRunner(work_dir)
    runner.iter = 1
    hook = SafeCheckpointHook(interval=2, by_epoch=False, save_best='mIoU',
                              max_keep_ckpts=1)
    hook.before_train(runner)
    _step(hook, runner, 0.5)
    return runner, hook


def _resume_hook(runner, saved):
    runner.message_hub.load_state_dict(
        torch.load(saved, weights_only=True)['message_hub'])
    hook = SafeCheckpointHook(interval=2, by_epoch=False, save_best='mIoU',
                              max_keep_ckpts=1)
    hook.before_train(runner)
    return hook


def test_kill_while_saving_keeps_previous_and_best(tmp_path):
    runner, hook = _first_save(tmp_path)
    names = sorted(os.listdir(tmp_path))
    assert names == ['best_mIoU_iter_2.pth', 'iter_2.pth', 'last_checkpoint']
    # killed writing iter_4.pth: iter_2.pth and the record are untouched
    runner.kill_on = 'iter_4.pth'
    with pytest.raises(_Killed):
        _step(hook, runner, 0.7)
    assert (tmp_path / 'last_checkpoint').read_text().endswith('iter_2.pth')
    check_checkpoint_file(str(tmp_path / 'iter_2.pth'))
    check_checkpoint_file(str(tmp_path / 'best_mIoU_iter_2.pth'))
    # resumed from iter_2.pth, then killed writing the new best: the
    # previous best is still there
    hook = _resume_hook(runner, tmp_path / 'iter_2.pth')
    assert leftover_partials(str(tmp_path)) == []  # the half iter_4.pth
    runner.kill_on = 'best_mIoU_iter_4.pth'
    hook._save_checkpoint(runner)
    runner.iter += 1
    with pytest.raises(_Killed):
        hook._save_best_checkpoint(runner, dict(mIoU=0.7))
    assert not (tmp_path / 'iter_2.pth').exists()  # after iter_4 was saved
    check_checkpoint_file(str(tmp_path / 'best_mIoU_iter_2.pth'))
    assert (tmp_path / 'last_checkpoint').read_text().endswith('iter_4.pth')
    assert leftover_partials(str(tmp_path))
    resumed = _resume_hook(runner, tmp_path / 'iter_4.pth')
    assert leftover_partials(str(tmp_path)) == []
    assert resumed.best_ckpt_path.endswith('best_mIoU_iter_2.pth')


def _no_deletions(hook):
    hook._remove = lambda path: None  # a kill before any deletion


def test_kill_before_deleting_the_oldest_is_cleaned_on_resume(tmp_path):
    runner = _FakeRunner(tmp_path)
    runner.iter = 1
    hook = SafeCheckpointHook(interval=2, by_epoch=False, max_keep_ckpts=1)
    hook.before_train(runner)
    hook._save_checkpoint(runner)
    runner.iter = 3
    _no_deletions(hook)
    hook._save_checkpoint(runner)
    assert (tmp_path / 'iter_2.pth').exists()
    assert (tmp_path / 'last_checkpoint').read_text().endswith('iter_4.pth')
    _resume_hook(runner, tmp_path / 'iter_4.pth')
    assert not (tmp_path / 'iter_2.pth').exists()
    assert (tmp_path / 'iter_4.pth').exists()


def test_kill_before_deleting_the_old_best_is_cleaned_on_resume(tmp_path):
    runner, hook = _first_save(tmp_path)
    old_best = tmp_path / 'best_mIoU_iter_2.pth'
    hook._save_checkpoint(runner)
    runner.iter += 1
    _no_deletions(hook)
    hook._save_best_checkpoint(runner, dict(mIoU=0.7))
    assert old_best.exists() and (tmp_path / 'best_mIoU_iter_4.pth').exists()
    resumed = _resume_hook(runner, tmp_path / 'iter_4.pth')
    assert not old_best.exists()
    assert (tmp_path / 'best_mIoU_iter_4.pth').exists()
    assert resumed.best_ckpt_path.endswith('best_mIoU_iter_4.pth')
