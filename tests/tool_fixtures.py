"""Shared set-up of the tool tests: a tiny data set in the BCSS-WSSS
layout, a tiny LPD config and a randomly initialised checkpoint of it.

Import the ``tiny_lpd`` fixture into a test module.  It is built once per
test session (a module-level cache), even when several modules import it.
"""
import importlib.util
import os.path as osp
import types

import numpy as np
import pytest
import torch

from helpers import make_split, make_training

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
BASE_CONFIG = osp.join(REPO, 'configs', 'lpd',
                       'lpd_mit-tiny_1xb8-600_synthetic-bcss-128x128.py')
SIZE = 64
STEM = 'TCGA-A1-A0SK-DX1_xmin45749_ymin25055_MPP-0.2500'
#: Training names covering single, double, triple and all-class labels.
TRAIN_NAMES = [
    f'{STEM}+0[1000].png', f'{STEM}+1[0100].png', f'{STEM}+2[0011].png',
    f'{STEM}+3[1101].png', f'{STEM}+4[0010].png', f'{STEM}+5[1111].png'
]
NUM_PROTOTYPES = 3

_CONFIG_TEMPLATE = '''\
# Tiny LPD for tests: a narrow MiT with 3 prototypes per class.
_base_ = [{base!r}]
data_root = {data_root!r}
model = dict(
    backbone=dict(embed_dims=8, num_layers=[1, 1, 1, 1],
                  num_heads=[1, 1, 2, 4], mlp_ratio=2, init_cfg=None),
    decode_head=dict(in_channels=[8, 16, 32], num_classes={num_classes},
                     num_prototypes={k}, prototype_dim=16, warmup_iters=0),
    # CRF off by default; `--crf torch` turns the lattice CRF on.
    test_cfg=dict(crf=dict(backend=None)))
train_dataloader = dict(num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root))
val_dataloader = dict(num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
'''

_CACHE = {}
_TOOLS = {}


def write_config(path: str, data_root: str, num_classes: int = 4) -> str:
    with open(path, 'w') as f:
        f.write(_CONFIG_TEMPLATE.format(base=BASE_CONFIG, data_root=data_root,
                                        num_classes=num_classes,
                                        k=NUM_PROTOTYPES))
    return path


def save_random_checkpoint(config: str, path: str, seed: int = 0) -> str:
    """A randomly initialised model of ``config`` in mmengine's checkpoint
    format (``meta.dataset_meta`` + ``state_dict``)."""
    from lpd_mmseg.apis import init_segmentor
    torch.manual_seed(seed)
    model = init_segmentor(config, None)
    meta = dict(dataset_meta=dict(
        classes=list(model.dataset_meta['classes']),
        palette=[list(c) for c in model.dataset_meta['palette']]))
    torch.save(dict(meta=meta, state_dict=model.state_dict()), path)
    return path


def val_masks(num: int = 2):
    """Masks of the val split: left half TUM, right half background, a STR
    square in the middle."""
    masks = {}
    for i in range(num):
        mask = np.zeros((SIZE, SIZE), np.uint8)
        mask[:, SIZE // 2:] = 4
        mask[24:40, 24:40] = 1
        masks[f'{STEM}+{i}'] = mask
    return masks


def _build(root) -> types.SimpleNamespace:
    root = str(root)
    data_root = osp.join(root, 'data')
    make_training(data_root, TRAIN_NAMES, size=SIZE)
    make_split(data_root, 'val', val_masks(), size=SIZE)
    make_split(data_root, 'test', val_masks(), size=SIZE)
    config = write_config(osp.join(root, 'tiny_lpd.py'), data_root)
    checkpoint = save_random_checkpoint(config, osp.join(root, 'tiny.pth'))
    other = write_config(osp.join(root, 'tiny_lpd_3cls.py'), data_root,
                         num_classes=3)
    # A checkpoint of another class count (3 tissue classes).
    bad = save_random_checkpoint(other, osp.join(root, 'tiny_3cls.pth'))
    return types.SimpleNamespace(
        root=root, data_root=data_root, config=config, checkpoint=checkpoint,
        bad_checkpoint=bad, train_dir=osp.join(data_root, 'training'),
        val_img_dir=osp.join(data_root, 'val', 'img'),
        val_mask_dir=osp.join(data_root, 'val', 'mask'),
        num_classes=4, num_prototypes=NUM_PROTOTYPES)


@pytest.fixture(scope='session')
def tiny_lpd(tmp_path_factory):
    """Tiny data, config and checkpoints (see :func:`_build`)."""
    if 'env' not in _CACHE:
        _CACHE['env'] = _build(tmp_path_factory.mktemp('tiny_lpd'))
    return _CACHE['env']


def load_tool(name: str):
    """Import ``tools/<name>.py`` as a module (its ``main(argv)`` is then
    callable in-process)."""
    if name not in _TOOLS:
        path = osp.join(REPO, 'tools', name + '.py')
        spec = importlib.util.spec_from_file_location(f'_tool_{name}', path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _TOOLS[name] = module
    return _TOOLS[name]
