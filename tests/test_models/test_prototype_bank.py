import os.path as osp

import pytest
import torch

from lpd_mmseg.models.prototype_bank import spherical_kmeans

from conftest import REPO, data_root_options, run_tool

BANK_CONFIG = osp.join(REPO, 'tests', 'configs', 'bank_tiny.py')


def test_spherical_kmeans_separates_directions():
    torch.manual_seed(0)
    a = torch.tensor([1.0, 0.0, 0.0]) + 0.05 * torch.randn(20, 3)
    b = torch.tensor([0.0, 0.0, 2.0]) + 0.05 * torch.randn(20, 3)
    centres = spherical_kmeans(torch.cat([a, b]), 2, seed=1)
    assert torch.allclose(centres.norm(dim=1), torch.ones(2))
    found = sorted(centres.argmax(dim=1).tolist())
    assert found == [0, 2]
    # deterministic for a seed
    assert torch.equal(centres, spherical_kmeans(torch.cat([a, b]), 2,
                                                 seed=1))


def test_spherical_kmeans_needs_enough_points():
    with pytest.raises(ValueError, match='3 points cannot make 4'):
        spherical_kmeans(torch.randn(3, 2), 4)


@pytest.fixture(scope='module')
def bank_data(tmp_path_factory):
    from lpd_mmseg.testing.synthetic import generate_synthetic_bcss
    root = str(tmp_path_factory.mktemp('bank_data'))
    # 60 patches hold 2 single-label patches of each class
    generate_synthetic_bcss(root, seed=0, num_train=60, num_val=4,
                            num_test=4, size=64, progress=False)
    return root


@pytest.mark.slow
def test_bank_hook_builds_saves_and_resumes(bank_data, tmp_path):
    work = str(tmp_path / 'bank')
    opts = data_root_options(bank_data) + ['train_cfg.max_iters=2']
    out = run_tool(['tools/train.py', BANK_CONFIG, '--work-dir', work,
                    '--cfg-options'] + opts)
    text = out.stdout + out.stderr
    assert 'prototype bank: 2 k-means prototypes per class' in text
    bank = torch.load(osp.join(work, 'prototype_bank.pth'),
                      weights_only=True)
    assert [tuple(b.shape) for b in bank] == [(8, 16), (8, 40), (8, 64)]
    ckpt = torch.load(osp.join(work, 'iter_2.pth'), weights_only=True)
    head = {k[len('decode_head.'):]: v for k, v in ckpt['state_dict'].items()
            if k.startswith('decode_head.')}
    assert bool(head['bank_ready'])
    # frozen: the bank in the checkpoint is the clustered one
    assert torch.equal(head['bank_2'], bank[2])
    assert not any(k == 'prototypes' for k in head)
    resumed = run_tool(['tools/train.py', BANK_CONFIG, '--work-dir', work,
                        '--resume', '--cfg-options'] +
                       data_root_options(bank_data) +
                       ['train_cfg.max_iters=4'])
    assert 'already present (from checkpoint)' in resumed.stdout + \
        resumed.stderr


@pytest.mark.slow
def test_build_prototype_bank_tool(bank_data, tmp_path):
    out = str(tmp_path / 'bank.pth')
    from mmengine.config import Config
    cfg = Config.fromfile(BANK_CONFIG)
    cfg.merge_from_dict({'train_dataloader.dataset.data_root': bank_data})
    config_copy = str(tmp_path / 'bank_cfg.py')
    cfg.dump(config_copy)
    args = ['tools/build_prototype_bank.py', config_copy, '--out', out,
            '--no-init']
    run_tool(args)
    assert [tuple(b.shape) for b in torch.load(out, weights_only=True)] == \
        [(8, 16), (8, 40), (8, 64)]
    again = run_tool(args, check=False)
    assert again.returncode != 0 and 'exists' in again.stderr


def test_too_few_single_label_images_is_clear(bank_data):
    from mmseg.registry import DATASETS, MODELS

    from lpd_mmseg.models.prototype_bank import build_prototype_bank

    from model_cfgs import tiny_head, tiny_segmentor
    model = MODELS.build(tiny_segmentor(head=tiny_head(
        num_prototypes=5, prototype_mode='frozen_bank',
        loss_diversity=None)))
    dataset = DATASETS.build(dict(
        type='BCSSWSSSDataset', data_root=bank_data, split='train',
        pipeline=[dict(type='LoadImageFromFile'),
                  dict(type='PackWeakSegInputs')]))
    with pytest.raises(ValueError,
                       match=r'at least k=5 .*too few for: \w+ \(\d+\)'):
        build_prototype_bank(model, dataset, progress=False,
                             class_names=['TUM', 'STR', 'LYM', 'NEC'])
