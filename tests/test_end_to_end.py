"""Whole-workflow runs at tiny size: our tools and MMSeg's stock tools."""
import glob
import os
import os.path as osp
import re

import pytest

from conftest import TINY_CONFIG, data_root_options, run_tool
from helpers import latest_test_metrics, metric_keys

pytestmark = pytest.mark.slow


def _stock_tool(name):
    import mmseg
    path = osp.join(osp.dirname(mmseg.__file__), '.mim', 'tools', name)
    assert osp.isfile(path), f'mmseg does not ship {path}'
    return path


def test_our_train_wrote_checkpoints_and_logged_losses(tiny_trained):
    work_dir, checkpoint = tiny_trained
    logs = glob.glob(osp.join(work_dir, '*', '*.log'))
    assert logs
    text = open(logs[0]).read()
    assert 'decode.loss_cls_s4' in text
    # diversity is logged after the warm-up (2 iterations) only
    lines = [ln for ln in text.splitlines() if 'Iter(train)' in ln]
    assert 'loss_div' not in lines[0] and 'loss_div' in lines[-1]
    assert osp.isfile(osp.join(work_dir, 'iter_2.pth'))


def test_stock_mmseg_tools_train_resume_test(tiny_data, tmp_path):
    work_dir = str(tmp_path / 'stock')
    opts = data_root_options(tiny_data)
    run_tool([_stock_tool('train.py'), TINY_CONFIG, '--work-dir', work_dir,
              '--cfg-options'] + opts + ['train_cfg.max_iters=2'])
    assert osp.isfile(osp.join(work_dir, 'iter_2.pth'))
    out = run_tool([_stock_tool('train.py'), TINY_CONFIG, '--work-dir',
                    work_dir, '--resume', '--cfg-options'] + opts)
    log = out.stdout + out.stderr
    assert re.search(r'resumed? .*iter_2\.pth|Auto resumed from.*iter_2',
                     log, re.I), log[-2000:]
    assert 'Iter(train) [3/4]' in log and 'Iter(train) [1/4]' not in log
    checkpoint = osp.join(work_dir, 'iter_4.pth')
    assert osp.isfile(checkpoint)

    stock_dir = str(tmp_path / 'stock_test')
    run_tool([_stock_tool('test.py'), TINY_CONFIG, checkpoint, '--work-dir',
              stock_dir, '--cfg-options'] + opts)
    ours_dir = str(tmp_path / 'ours_test')
    run_tool(['tools/test.py', TINY_CONFIG, checkpoint, '--work-dir',
              ours_dir, '--cfg-options'] + opts)
    stock, ours = latest_test_metrics(stock_dir), latest_test_metrics(ours_dir)
    assert metric_keys(stock) == metric_keys(ours)
    assert 'mIoU' in ours and 'IoU.TUM' in ours


def test_our_test_tool_tta_oracle_crf_out_show(tiny_data, tiny_trained,
                                               tmp_path):
    _, checkpoint = tiny_trained
    opts = data_root_options(tiny_data)
    plain = run_tool(['tools/test.py', TINY_CONFIG, checkpoint, '--work-dir',
                      str(tmp_path / 'plain'), '--cfg-options'] + opts)
    assert 'background protocol: count' in plain.stdout + plain.stderr
    tta = run_tool(['tools/test.py', TINY_CONFIG, checkpoint, '--tta',
                    '--work-dir', str(tmp_path / 'tta'), '--cfg-options'] +
                   opts)
    assert 'mIoU' in latest_test_metrics(str(tmp_path / 'tta'))
    assert 'LPDTTAModel' in tta.stdout + tta.stderr
    # A test pass shorter than the logger interval still shows progress.
    assert re.search(r'progress test: (\d+)/\1 \(100%\)',
                     tta.stdout + tta.stderr)
    run_tool(['tools/test.py', TINY_CONFIG, checkpoint, '--gate', 'oracle',
              '--crf', 'torch', '--background', 'ignore', '--out',
              str(tmp_path / 'preds'), '--show-dir', 'overlays',
              '--work-dir', str(tmp_path / 'full'), '--cfg-options'] + opts)
    preds = sorted(os.listdir(tmp_path / 'preds'))
    assert len(preds) == 6 and all(p.endswith('.png') for p in preds)
    overlays = glob.glob(str(tmp_path / 'full' / 'overlays' / '**' /
                             '*.png'), recursive=True)
    assert len(overlays) == 6


def test_test_tool_refuses_mismatched_checkpoint(tiny_data, tiny_trained,
                                                 tmp_path):
    _, checkpoint = tiny_trained
    opts = data_root_options(tiny_data)
    out = run_tool(['tools/test.py', TINY_CONFIG, checkpoint, '--work-dir',
                    str(tmp_path / 'w'), '--cfg-options'] + opts +
                   ['model.decode_head.num_prototypes=2'], check=False)
    assert out.returncode != 0
    err = out.stdout + out.stderr
    assert 'CheckpointMismatchError' in err
    assert 'decode_head.prototypes: checkpoint (12, 16) vs model (8, 16)' \
        in err
    # the stock tool is protected by the same start-up check
    out = run_tool([_stock_tool('test.py'), TINY_CONFIG, checkpoint,
                    '--work-dir', str(tmp_path / 'w2'), '--cfg-options'] +
                   opts + ['model.decode_head.num_prototypes=2'], check=False)
    assert out.returncode != 0
    assert 'CheckpointMismatchError' in out.stdout + out.stderr


def test_class_count_mismatch_fails_at_start(tiny_data, tmp_path):
    out = run_tool(['tools/train.py', TINY_CONFIG, '--work-dir',
                    str(tmp_path / 'w'), '--cfg-options'] +
                   data_root_options(tiny_data) +
                   ['model.decode_head.num_classes=3'], check=False)
    assert out.returncode != 0
    assert 'num_classes=3 but the train data set' in out.stdout + out.stderr


def _cls_losses(text):
    return [float(v) for v in re.findall(
        r'Iter\(train\).*?decode\.loss_cls_s4: ([0-9.]+)', text)]


def test_stock_train_reduces_classification_loss(tiny_data, tmp_path):
    out = run_tool([_stock_tool('train.py'), TINY_CONFIG, '--work-dir',
                    str(tmp_path / 'w'), '--cfg-options'] +
                   data_root_options(tiny_data) +
                   ['train_cfg.max_iters=40', 'train_cfg.val_interval=100',
                    'param_scheduler.0.end=40',
                    'default_hooks.checkpoint.interval=100',
                    'model.decode_head.warmup_iters=20',
                    'optim_wrapper.optimizer.lr=0.001', 'randomness.seed=0'])
    text = out.stdout + out.stderr
    losses = _cls_losses(text)
    assert len(losses) == 40
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < first, (first, last)
    lines = [ln for ln in text.splitlines() if 'Iter(train)' in ln]
    assert not any('loss_div' in ln for ln in lines[:20])
    assert all('loss_div' in ln for ln in lines[20:])


def test_tools_on_the_trained_checkpoint(tiny_data, tiny_trained, tmp_path):
    _, checkpoint = tiny_trained
    masks = tmp_path / 'pseudo'
    run_tool(['tools/make_pseudo_masks.py', TINY_CONFIG, checkpoint, '--out',
              str(masks), '--data-root', tiny_data, '--num-workers', '0'])
    names = sorted(os.listdir(osp.join(tiny_data, 'training')))
    written = sorted(n for n in os.listdir(masks) if n.endswith('.png'))
    assert written == names
    images = sorted(glob.glob(osp.join(tiny_data, 'test', 'img', '*.png')))
    run_tool(['tools/visualize_prototypes.py', TINY_CONFIG, checkpoint] +
             images[:2] + ['--out', str(tmp_path / 'vis'), '--masks',
                           osp.join(tiny_data, 'test', 'mask')])
    assert (tmp_path / 'vis' / 'prototype_coverage.json').is_file()
    assert len(glob.glob(str(tmp_path / 'vis' / '*_prototypes.png'))) == 2


def test_demo_two_stage_end_to_end(tmp_path):
    """`tools/demo.py --two-stage` at the smallest size: every step runs,
    the pseudo-masks cover every training patch, the second stage is tested
    (with overlays) from a folder its training masks are not in."""
    import json
    data = tmp_path / 'data'
    out = run_tool(['tools/demo.py', '--two-stage', '--work-dir',
                    str(tmp_path / 'demo'), '--data-root', str(data),
                    '--num-train', '12', '--num-val', '2', '--num-test', '2',
                    '--size', '64', '--iters', '2', '--stage2-iters', '2'])
    assert '[7/7 evaluate the second stage' in out.stdout
    assert 'two-stage route' in out.stdout
    run_dir, = glob.glob(str(tmp_path / 'demo' / 'run_*'))
    summary = json.load(open(osp.join(run_dir, 'demo_summary.json')))
    assert 0 <= summary['stage2']['metrics']['mIoU'] <= 100
    assert 'IoU.BACK' in summary['stage2']['metrics']
    masks = sorted(n for n in os.listdir(osp.join(run_dir, 'pseudo_masks'))
                   if n.endswith('.png'))
    assert masks == sorted(os.listdir(data / 'training'))
    # the data root holds no pseudo-masks: they stay in the run folder
    assert not (data / 'pseudo_masks').exists()
    overlays = glob.glob(osp.join(run_dir, 'test_stage2', 'overlays', '**',
                                  '*.png'), recursive=True)
    assert len(overlays) == 2
    # the second stage was trained with the balanced class weights
    log = open(osp.join(run_dir, 'logs', '6_stage2_train.log')).read()
    assert 'model.decode_head.loss_decode.class_weight=[' in log
