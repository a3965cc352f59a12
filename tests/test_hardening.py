"""Interrupted runs, hostile checkpoints, determinism, numerical edges."""
import glob
import os
import os.path as osp
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from mmengine.logging import MessageHub
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from conftest import REPO, TINY_CONFIG, data_root_options, run_tool
from model_cfgs import tiny_head, tiny_segmentor


# ------------------------------------------------------ hostile checkpoints
class _RunsCode:
    """Pickles to os.system(...): loading it would run a shell command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}', ))


@pytest.fixture
def evil_checkpoint(tmp_path, tiny_trained):
    _, good = tiny_trained
    state = torch.load(good, weights_only=True)
    marker = tmp_path / 'code_ran'
    state['meta']['note'] = _RunsCode(str(marker))
    path = tmp_path / 'evil.pth'
    torch.save(state, path)
    return str(path), marker


def _refused(out, marker):
    text = out.stdout + out.stderr
    assert out.returncode != 0
    assert 'refused to load' in text or 'Weights only load failed' in text
    assert not marker.exists(), 'the pickled command ran'


@pytest.mark.slow
def test_hostile_checkpoint_refused_by_every_tool(tiny_data, evil_checkpoint,
                                                  tmp_path):
    path, marker = evil_checkpoint
    opts = data_root_options(tiny_data)
    train = ['tools/train.py', TINY_CONFIG, '--work-dir', str(tmp_path / 'w')]
    _refused(run_tool(train + ['--cfg-options', f'load_from={path}'] + opts,
                      check=False), marker)
    _refused(run_tool(train + ['--resume', path, '--cfg-options'] + opts,
                      check=False), marker)
    _refused(run_tool(['tools/test.py', TINY_CONFIG, path, '--work-dir',
                       str(tmp_path / 't'), '--cfg-options'] + opts,
                      check=False), marker)
    _refused(run_tool(['tools/make_pseudo_masks.py', TINY_CONFIG, path,
                       '--out', str(tmp_path / 'p'), '--data-root',
                       tiny_data], check=False), marker)
    image = sorted(glob.glob(osp.join(tiny_data, 'test', 'img', '*.png')))[0]
    _refused(run_tool(['tools/visualize_prototypes.py', TINY_CONFIG, path,
                       image, '--out', str(tmp_path / 'v')], check=False),
             marker)


def test_hostile_checkpoint_refused_by_python_apis(evil_checkpoint):
    import pickle

    from lpd_mmseg.apis import UnsafeCheckpointError, init_segmentor
    path, marker = evil_checkpoint
    with pytest.raises(UnsafeCheckpointError, match='refused to load'):
        init_segmentor(TINY_CONFIG, path)
    from mmseg.apis import init_model
    with pytest.raises(pickle.UnpicklingError):
        init_model(TINY_CONFIG, path, device='cpu')
    assert not marker.exists()


def test_legitimate_checkpoint_still_loads(tiny_trained):
    from lpd_mmseg.apis import init_segmentor
    _, good = tiny_trained
    model = init_segmentor(TINY_CONFIG, good)
    assert model.dataset_meta['classes'][-1] == 'BACK'


# ---------------------------------------------------- interrupted training
def _iters_logged(text):
    return [int(m) for m in re.findall(r'Iter\(train\) \[\s*(\d+)/', text)]


def _lrs(text):
    return {int(i): float(lr) for i, lr in re.findall(
        r'Iter\(train\) \[\s*(\d+)/\d+\]\s+lr: ([0-9.e+-]+)', text)}


@pytest.mark.slow
def test_sigkill_then_resume_continues_schedule(tiny_data, tmp_path):
    opts = data_root_options(tiny_data) + [
        'train_cfg.max_iters=10', 'train_cfg.val_interval=100',
        'param_scheduler.0.end=10', 'default_hooks.checkpoint.interval=2',
        'default_hooks.checkpoint.max_keep_ckpts=10',
        'randomness.seed=0']
    work = tmp_path / 'killed'
    env = dict(os.environ, PYTHONPATH=REPO)
    log_path = tmp_path / 'first.log'
    with open(log_path, 'w') as log:
        proc = subprocess.Popen(
            [sys.executable, 'tools/train.py', TINY_CONFIG, '--work-dir',
             str(work), '--cfg-options'] + opts, cwd=REPO, env=env,
            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 300
        while not (work / 'iter_4.pth').exists():
            assert proc.poll() is None, open(log_path).read()[-3000:]
            assert time.time() < deadline, 'no checkpoint in time'
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    killed_at = max(int(re.search(r'iter_(\d+)', p).group(1))
                    for p in glob.glob(str(work / 'iter_*.pth')))
    assert killed_at < 10
    resumed = run_tool(['tools/train.py', TINY_CONFIG, '--work-dir',
                        str(work), '--resume', '--cfg-options'] + opts)
    text = resumed.stdout + resumed.stderr
    assert re.search(rf'resumed? .*iter_{killed_at}', text, re.I), text[-2000:]
    iters = _iters_logged(text)
    assert iters[0] == killed_at + 1 and iters[-1] == 10
    # the learning rates after resuming are those of an uninterrupted run
    straight = run_tool(['tools/train.py', TINY_CONFIG, '--work-dir',
                         str(tmp_path / 'straight'), '--cfg-options'] + opts)
    expected = _lrs(straight.stdout + straight.stderr)
    for it, lr in _lrs(text).items():
        assert lr == pytest.approx(expected[it], rel=1e-6)
    # optimizer state continued: AdamW has taken 10 steps, not 10 - killed_at
    final = torch.load(work / 'iter_10.pth', weights_only=True)
    steps = {float(s['step']) for s in final['optimizer']['state'].values()}
    assert steps == {10.0}
    assert final['meta']['iter'] == 10


@pytest.mark.slow
def test_fixed_seed_deterministic_runs_match(tiny_data, tmp_path):
    opts = data_root_options(tiny_data) + [
        'randomness.seed=3', 'randomness.deterministic=True',
        'train_cfg.val_interval=100']
    losses = []
    for name in ('a', 'b'):
        out = run_tool(['tools/train.py', TINY_CONFIG, '--work-dir',
                        str(tmp_path / name), '--cfg-options'] + opts)
        losses.append(re.findall(r'Iter\(train\).*?  loss: ([0-9.]+)',
                                 out.stdout + out.stderr))
    assert len(losses[0]) == 4
    assert losses[0] == losses[1]


# ------------------------------------------------------ numerical edges
def _samples(labels, size=64):
    out = []
    for label in labels:
        s = SegDataSample(metainfo=dict(ori_shape=(size, size),
                                        img_shape=(size, size),
                                        pad_shape=(size, size)))
        s.gt_image_label = torch.tensor(label, dtype=torch.float32)
        out.append(s)
    return out


def _finite_step(model, images, samples):
    MessageHub.get_current_instance().update_info('iter', 10**6)
    model.zero_grad()
    losses = model.loss(images, samples)
    total = sum(v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total), losses
    total.backward()
    for name, p in model.named_parameters():
        if p.grad is not None:
            assert torch.isfinite(p.grad).all(), name
    return losses


@pytest.mark.parametrize('labels', [
    [[1, 0, 0, 0]] * 3,             # every image has the same single label
    [[0, 0, 0, 1], [0, 0, 1, 0], [0, 1, 0, 0]],
    [[1, 1, 1, 1]] * 3,
])
def test_label_edge_batches_are_finite(labels):
    torch.manual_seed(0)
    model = MODELS.build(tiny_segmentor())
    _finite_step(model, torch.rand(3, 3, 64, 64) * 255, _samples(labels))


def test_blank_white_patches_are_finite():
    model = MODELS.build(tiny_segmentor())
    white = torch.full((2, 3, 64, 64), 255.0)
    losses = _finite_step(model, white, _samples([[1, 0, 0, 0],
                                                  [0, 1, 1, 0]]))
    assert 'decode.loss_div' in losses


def test_empty_region_of_labelled_class_is_finite():
    head = MODELS.build(tiny_head())
    torch.manual_seed(0)
    sims = [torch.randn(2, 12, s, s, requires_grad=True) for s in (8, 4, 2)]
    labels = torch.tensor([[1., 1, 0, 0], [0, 0, 1, 0]])
    # all pixels background: labelled classes have empty regions
    region = torch.full((2, 2, 2), 4)
    loss = head.loss_diversity(sims[-1], region, 4)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(sims[-1].grad).all()
    MessageHub.get_current_instance().update_info('iter', 10**6)
    samples = []
    for row in labels:
        sample = SegDataSample()
        sample.gt_image_label = row
        samples.append(sample)
    losses = head.loss_by_feat([s.detach().requires_grad_() for s in sims],
                               samples)
    assert all(torch.isfinite(v) for v in losses.values())


def test_half_precision_losses():
    from lpd_mmseg.models.losses import (
        correlation_diversity,
        jeffreys_diversity,
        multilabel_bce,
    )
    sim = (torch.rand(2, 8, 6, 6) * 2 - 1).half().requires_grad_()
    mask = torch.randint(0, 3, (2, 6, 6))
    for fn in (jeffreys_diversity, correlation_diversity):
        out = fn(sim, mask, 2)
        assert torch.isfinite(out)
        out.float().backward()
        assert torch.isfinite(sim.grad).all()
        sim.grad = None
    logits = (torch.randn(4, 4) * 30).half().requires_grad_()
    bce = multilabel_bce(logits, torch.randint(0, 2, (4, 4)).half())
    assert torch.isfinite(bce)
    bce.backward()
    assert torch.isfinite(logits.grad).all()


def test_k1_model_step_is_finite():
    model = MODELS.build(tiny_segmentor(head=tiny_head(num_prototypes=1)))
    losses = _finite_step(model, torch.rand(2, 3, 64, 64) * 255,
                          _samples([[1, 0, 0, 1], [0, 1, 0, 0]]))
    assert losses['decode.loss_div'].item() == 0.0
