"""Killed runs and --resume through tools/train.py (tiny config, CPU)."""
import os
import os.path as osp
import re
import shutil

import pytest
import torch

from conftest import TINY_CONFIG, data_root_options, run_tool

#: Runs a tool with ``open`` patched so that writing a file whose name is
#: $LPD_KILL_WRITE (or its temporary file) writes half the bytes and then
#: ends the process at once, as a SIGKILL in the middle of the write would.
_KILLER = '''\
import builtins, os, runpy, sys
target = os.environ['LPD_KILL_WRITE']
real_open = builtins.open


class Dying:
    def __init__(self, f):
        self.f = f

    def write(self, data):
        self.f.write(data[:len(data) // 2])
        self.f.flush()
        os.fsync(self.f.fileno())
        os._exit(137)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self.f.__exit__(*exc)

    def __getattr__(self, name):
        return getattr(self.f, name)


def dying_open(file, mode='r', *args, **kwargs):
    f = real_open(file, mode, *args, **kwargs)
    name = os.path.basename(str(file))
    if 'w' in mode and (name == target or name.startswith('.' + target)):
        return Dying(f)
    return f


builtins.open = dying_open
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
'''


def _iters(text):
    return [int(i) for i in re.findall(r'Iter\(train\) \[\s*(\d+)/', text)]


def _train(work, opts, *flags, check=True, wrapper=None):
    args = ['tools/train.py', TINY_CONFIG, '--work-dir', str(work),
            *flags, '--cfg-options', *opts]
    out = run_tool([wrapper] + args if wrapper else args, check=check)
    return out, out.stdout + out.stderr


@pytest.fixture
def opts(tiny_data):
    # the demo's checkpoint settings: keep 1, keep the best by val mIoU
    return data_root_options(tiny_data) + [
        'train_cfg.max_iters=6', 'train_cfg.val_interval=2',
        'param_scheduler.0.end=6', 'default_hooks.checkpoint.interval=2',
        'default_hooks.checkpoint.max_keep_ckpts=1',
        'default_hooks.checkpoint.save_best=mIoU', 'randomness.seed=0']


@pytest.mark.slow
def test_kill_inside_checkpoint_write_then_resume(tmp_path, opts,
                                                  monkeypatch):
    """Defect 1: a kill while iter_4.pth is written lost the run."""
    killer = tmp_path / 'killer.py'
    killer.write_text(_KILLER)
    work = tmp_path / 'work'
    monkeypatch.setenv('LPD_KILL_WRITE', 'iter_4.pth')
    out, text = _train(work, opts, check=False, wrapper=str(killer))
    monkeypatch.delenv('LPD_KILL_WRITE')
    assert out.returncode == 137, text[-3000:]
    assert (work / 'iter_2.pth').exists(), os.listdir(work)
    assert open(work / 'last_checkpoint').read().endswith('iter_2.pth')
    out, text = _train(work, opts, '--resume')
    assert re.search(r'resum\w* from \S*iter_2\.pth', text), text[-3000:]
    assert _iters(text) == [3, 4, 5, 6]
    final = torch.load(work / 'iter_6.pth', weights_only=True)
    assert final['meta']['iter'] == 6
    names = sorted(n for n in os.listdir(work) if n.endswith('.pth'))
    assert names[-1] == 'iter_6.pth' and len(names) == 2, names  # + best
    assert not [n for n in os.listdir(work) if n.endswith('.partial')]


@pytest.fixture
def trained_copy(tiny_trained, tmp_path):
    """A copy of the session's 4-iteration run (iter_2, iter_4)."""
    src, _ = tiny_trained
    work = tmp_path / 'copy'
    work.mkdir()
    for name in ('iter_2.pth', 'iter_4.pth'):
        shutil.copy(osp.join(src, name), work / name)
    (work / 'last_checkpoint').write_text(str(work / 'iter_4.pth'))
    return work


@pytest.mark.slow
def test_resume_without_last_checkpoint_or_with_truncated_one(
        trained_copy, tiny_data):
    """Defect 2: no last_checkpoint -> silent restart from iteration 1;
    a truncated file -> raw PytorchStreamReader error."""
    work = trained_copy
    opts = data_root_options(tiny_data) + [
        'train_cfg.max_iters=6', 'param_scheduler.0.end=6',
        'train_cfg.val_interval=100']
    (work / 'last_checkpoint').unlink()
    data = (work / 'iter_4.pth').read_bytes()
    (work / 'iter_4.pth').write_bytes(data[:len(data) // 3])
    (work / 'last_checkpoint').write_text(str(work / 'iter_4.pth'))
    out, text = _train(work, opts, '--resume')
    assert 'iter_4.pth' in text and 'truncated' in text
    assert re.search(r'resum\w* from \S*iter_2\.pth', text), text[-3000:]
    assert _iters(text) == [3, 4, 5, 6]
    (work / 'last_checkpoint').unlink()
    opts[-3:-1] = ['train_cfg.max_iters=8', 'param_scheduler.0.end=8']
    out, text = _train(work, opts, '--resume')
    assert 'last_checkpoint does not exist' in text
    assert re.search(r'resum\w* from \S*iter_6\.pth', text), text[-3000:]
    assert _iters(text) == [7, 8]


@pytest.mark.slow
def test_fresh_run_over_checkpoints_is_refused_and_restart_moves_them(
        trained_copy, tiny_data):
    work = trained_copy
    opts = data_root_options(tiny_data) + ['train_cfg.max_iters=2',
                                           'train_cfg.val_interval=100']
    before = (work / 'iter_2.pth').read_bytes()
    out, text = _train(work, opts, check=False)
    assert out.returncode != 0
    assert 'ExistingCheckpointsError' in text
    assert 'iter_2.pth, iter_4.pth' in text and '--restart' in text
    assert (work / 'iter_2.pth').read_bytes() == before
    out, text = _train(work, opts, '--restart')
    assert _iters(text) == [1, 2]
    moved = [d for d in os.listdir(work) if d.startswith('superseded_')]
    assert len(moved) == 1
    assert (work / moved[0] / 'iter_2.pth').read_bytes() == before
    assert sorted(os.listdir(work / moved[0])) == [
        'iter_2.pth', 'iter_4.pth', 'last_checkpoint']


@pytest.mark.slow
def test_damaged_or_hostile_checkpoint_errors_name_the_file(
        trained_copy, tiny_data, tmp_path):
    """Defects 2 and 6: a 0-byte --resume file gave a bare EOFError, a
    hostile one reached through last_checkpoint torch's message."""
    work = trained_copy
    opts = data_root_options(tiny_data)
    empty = tmp_path / 'empty.pth'
    empty.write_bytes(b'')
    out, text = _train(work, opts, '--resume', str(empty), check=False)
    assert out.returncode != 0
    assert 'CorruptCheckpointError' in text
    assert f'{empty} is empty (0 bytes)' in text

    class RunsCode:
        def __reduce__(self):
            return (os.system, (f'touch {tmp_path / "ran"}', ))

    state = torch.load(work / 'iter_4.pth', weights_only=True)
    state['meta']['note'] = RunsCode()
    torch.save(state, work / 'iter_4.pth')
    out, text = _train(work, opts, '--resume', check=False)
    assert out.returncode != 0
    assert 'UnsafeCheckpointError: refused to load' in text
    assert str(work / 'iter_4.pth') in text
    assert not (tmp_path / 'ran').exists()
