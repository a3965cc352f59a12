"""The distributed engine on CPU (2 processes, gloo) and val/test batches of
mixed patch sizes, through tools/dist_train.sh and tools/dist_test.sh."""
import os
import os.path as osp
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, TINY_CONFIG, data_root_options, run_tool
from helpers import latest_test_metrics, make_split, metric_keys

pytestmark = pytest.mark.slow


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _dist(script, *args):
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(_free_port()),
               OMP_NUM_THREADS='1')
    out = subprocess.run(['bash', script, *args], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-5000:]
    return text


def _metrics(work_dir):
    return metric_keys(latest_test_metrics(work_dir))


@pytest.fixture(scope='module')
def mixed_data(tiny_data, tmp_path_factory):
    """tiny_data's training patches; val and test splits of 5 patches (an
    odd count) in three sizes."""
    root = str(tmp_path_factory.mktemp('mixed_bcss'))
    shutil.copytree(osp.join(tiny_data, 'training'),
                    osp.join(root, 'training'))
    rng = np.random.default_rng(0)
    for split in ('val', 'test'):
        for i, size in enumerate([64, 48, 64, 80, 48]):
            mask = rng.integers(0, 5, (size // 16, size // 16))
            mask = np.kron(mask, np.ones((16, 16), np.int64))
            make_split(root, split, {f'{split}_{i}': mask}, size=size)
    return root


def test_mixed_size_test_split_equals_batch_size_one(mixed_data,
                                                    tiny_trained, tmp_path):
    """Defect 4: 'The image size in a batch should be the same.'"""
    _, checkpoint = tiny_trained
    opts = data_root_options(mixed_data)
    metrics = []
    for batch_size in (4, 1):
        work = str(tmp_path / f'bs{batch_size}')
        run_tool(['tools/test.py', TINY_CONFIG, checkpoint, '--work-dir',
                  work, '--cfg-options', *opts,
                  f'test_dataloader.batch_size={batch_size}'])
        metrics.append(_metrics(work))
    # grouping by size predicts each image as it would be alone
    assert metrics[0] == metrics[1]


def test_two_process_training_and_testing_on_cpu(mixed_data, tmp_path):
    """Defect 3: torchrun on CPU died in torch.cuda.set_device, then on
    DDP's device_ids."""
    opts = data_root_options(mixed_data)
    work = str(tmp_path / 'dist_train')
    text = _dist('tools/dist_train.sh', TINY_CONFIG, '2', '--work-dir', work,
                 '--cfg-options', *opts, 'model.mask_refiner.type=MaskRefiner',
                 'model.mask_refiner.encoder=ema',
                 'model.mask_refiner.max_pairs=4')
    assert 'Distributed training: True' in text
    assert 'refine.loss_refine' in text  # the refiner trained, under DDP
    assert 'Iter(val) [1/1]' in text  # 5 mixed-size images, 2 ranks
    checkpoint = osp.join(work, 'iter_4.pth')
    assert osp.isfile(checkpoint)
    model_opts = ['model.mask_refiner.type=MaskRefiner',
                  'model.mask_refiner.encoder=ema']
    one = str(tmp_path / 'test_1proc')
    run_tool(['tools/test.py', TINY_CONFIG, checkpoint, '--work-dir', one,
              '--cfg-options', *opts, *model_opts])
    two = str(tmp_path / 'test_2proc')
    _dist('tools/dist_test.sh', TINY_CONFIG, checkpoint, '2', '--work-dir',
          two, '--cfg-options', *opts, *model_opts)
    assert _metrics(two) == _metrics(one)
