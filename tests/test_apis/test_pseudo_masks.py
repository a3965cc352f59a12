"""Pseudo-masks for the training split (lpd_mmseg.apis.pseudo_masks,
tools/make_pseudo_masks.py) and the second-stage config trained on them."""
import contextlib
import io
import json
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from lpd_mmseg.apis import CheckpointMismatchError
from lpd_mmseg.apis.pseudo_masks import (
    META_FILE,
    class_pixel_counts,
    labelled_argmax,
    make_pseudo_masks,
    mask_name_for,
    pseudo_mask_dataset_cfg,
)
from lpd_mmseg.datasets import BCSSWSSSDataset, parse_label_from_name

from helpers import make_training
from tool_fixtures import (
    REPO,
    STEM,
    TRAIN_NAMES,
    load_tool,
    tiny_lpd,  # noqa: F401 (fixture)
)

SECOND_STAGE = osp.join(
    REPO, 'configs', 'second_stage',
    'segformer_mit-b1_1xb10-18.7k_bcss-wsss-pseudo-224x224.py')


def run_tool(argv):
    """``tools/make_pseudo_masks.py`` in-process: (exit code, stdout,
    stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = load_tool('make_pseudo_masks').main(argv)
    return code, out.getvalue(), err.getvalue()


# The colours the dataset declares, flattened as PIL stores them.
BCSS_FLAT = [v for rgb in BCSSWSSSDataset.METAINFO['palette'] for v in rgb]


def read_mask(path):
    with Image.open(path) as img:
        return img.mode, np.array(img), img.getpalette()[:15]


@pytest.fixture(scope='module')
def pseudo_run(tiny_lpd, tmp_path_factory):  # noqa: F811
    """One default run of the tool over the tiny training split."""
    out = str(tmp_path_factory.mktemp('pseudo') / 'masks')
    code, stdout, stderr = run_tool([
        tiny_lpd.config, tiny_lpd.checkpoint, '--out', out, '--batch-size',
        '4', '--num-workers', '0'
    ])
    assert code == 0, stderr
    return out, stdout


# ------------------------------------------------------------ pure helpers
def test_labelled_argmax_hand_computed():
    # C = 2 tissue classes + background; one row of three pixels.
    logits = torch.tensor([[[5.0, 0.1, 0.0]],     # class 0
                           [[1.0, 0.2, 0.9]],     # class 1
                           [[0.0, 0.3, 0.5]]])    # background
    assert labelled_argmax(logits, torch.tensor([1, 1])).tolist() == \
        [[0, 2, 1]]
    # Class 0 ruled out: pixel 0 falls to class 1 despite its 5.0.
    assert labelled_argmax(logits, torch.tensor([0, 1])).tolist() == \
        [[1, 2, 1]]
    # No tissue class allowed: everything is background.
    assert labelled_argmax(logits, torch.tensor([0, 0])).tolist() == \
        [[2, 2, 2]]
    with pytest.raises(ValueError, match='gate has 3 entries'):
        labelled_argmax(logits, torch.tensor([1, 1, 1]))


def test_class_pixel_counts():
    mask = np.array([[0, 0, 4], [2, 4, 4]])
    assert class_pixel_counts(mask, 5).tolist() == [2, 0, 1, 0, 3]
    with pytest.raises(ValueError, match='outside 0..4'):
        class_pixel_counts(np.array([[5]]), 5)


def test_mask_name_keeps_the_image_name():
    assert mask_name_for('/d/training/x+0[1101].png') == 'x+0[1101].png'
    assert mask_name_for('/d/img/y.jpg') == 'y.png'


def test_dataset_cfg_is_deterministic_and_unwrapped():
    from mmengine.config import Config
    inner = dict(type='BCSSWSSSDataset', data_root='r', split='train',
                 pipeline=[dict(type='LoadImageFromFile'),
                           dict(type='RandomRotate90'),
                           dict(type='PackWeakSegInputs')])
    cfg = Config(dict(train_dataloader=dict(dataset=dict(
        type='RepeatDataset', times=3, dataset=inner))))
    ds = pseudo_mask_dataset_cfg(cfg, 'train', data_root='/x')
    assert ds['type'] == 'BCSSWSSSDataset' and ds['data_root'] == '/x'
    assert [t['type'] for t in ds['pipeline']] == [
        'LoadImageFromFile', 'PackWeakSegInputs']
    assert pseudo_mask_dataset_cfg(cfg, 'val')['split'] == 'val'
    with pytest.raises(ValueError, match='split'):
        pseudo_mask_dataset_cfg(cfg, 'training')


# -------------------------------------------------------------- end to end
def test_one_palette_mask_per_training_image(pseudo_run):
    out, stdout = pseudo_run
    assert sorted(os.listdir(out)) == sorted(TRAIN_NAMES + [META_FILE])
    for name in TRAIN_NAMES:
        mode, mask, palette = read_mask(osp.join(out, name))
        assert mode == 'P' and palette == BCSS_FLAT
        assert mask.shape == (64, 64)
        assert set(np.unique(mask).tolist()) <= {0, 1, 2, 3, 4}
        # The label in the file name gates the classes.
        label = parse_label_from_name(name, 4)
        tissue = set(np.unique(mask[mask < 4]).tolist())
        assert tissue <= set(np.flatnonzero(label).tolist()), name
    assert f'wrote {len(TRAIN_NAMES)} pseudo-masks' in stdout
    assert 'pixel share' in stdout and 'TUM' in stdout


def test_meta_file(pseudo_run, tiny_lpd):  # noqa: F811
    out, _ = pseudo_run
    with open(osp.join(out, META_FILE)) as f:
        meta = json.load(f)
    assert meta['num_masks'] == len(TRAIN_NAMES)
    assert meta['gate'] == 'labels' and meta['crf'] == 'none'
    assert meta['config'] == osp.abspath(tiny_lpd.config)
    assert meta['checkpoint'] == osp.abspath(tiny_lpd.checkpoint)
    assert meta['classes'] == ['TUM', 'STR', 'LYM', 'NEC', 'BACK']
    assert sum(meta['pixel_counts'].values()) == len(TRAIN_NAMES) * 64 * 64
    assert abs(sum(meta['pixel_shares'].values()) - 1) < 1e-9
    # A class occurs in at most the masks whose label names it.
    labels = np.stack([parse_label_from_name(n, 4) for n in TRAIN_NAMES])
    for c, name in enumerate(meta['classes'][:4]):
        assert meta['images_with_class'][name] <= labels[:, c].sum()


def test_refuses_to_overwrite_then_overwrites(
        pseudo_run, tiny_lpd):  # noqa: F811
    out, _ = pseudo_run
    target = osp.join(out, TRAIN_NAMES[0])
    before = os.stat(target).st_mtime_ns
    code, _, err = run_tool([tiny_lpd.config, tiny_lpd.checkpoint, '--out',
                             out, '--num-workers', '0', '--no-progress'])
    assert code == 1
    assert f"output folder '{out}'" in err and '--overwrite' in err
    assert os.stat(target).st_mtime_ns == before
    with pytest.raises(FileExistsError, match='refusing to overwrite'):
        make_pseudo_masks(tiny_lpd.config, tiny_lpd.checkpoint, out,
                          num_workers=0, progress=False)
    code, _, err = run_tool([tiny_lpd.config, tiny_lpd.checkpoint, '--out',
                             out, '--num-workers', '0', '--no-progress',
                             '--overwrite'])
    assert code == 0, err
    assert sorted(os.listdir(out)) == sorted(TRAIN_NAMES + [META_FILE])


def test_labels_hold_after_crf(tiny_lpd, tmp_path):  # noqa: F811
    # A CRF can move probability onto gated-out classes; masks must not.
    root = str(tmp_path / 'data')
    names = [f'{STEM}+0[0010].png', f'{STEM}+1[1001].png']
    make_training(root, names, size=48)
    out = str(tmp_path / 'crf')
    summary = make_pseudo_masks(tiny_lpd.config, tiny_lpd.checkpoint, out,
                                data_root=root, crf='torch', num_workers=0,
                                progress=False)
    assert summary['crf'] == 'torch' and summary['num_masks'] == 2
    for name in names:
        _, mask, _ = read_mask(osp.join(out, name))
        allowed = set(np.flatnonzero(parse_label_from_name(name, 4))) | {4}
        assert set(np.unique(mask).tolist()) <= allowed


def test_val_split_needs_predicted_gate(tiny_lpd, tmp_path):  # noqa: F811
    out = str(tmp_path / 'val_masks')
    code, _, err = run_tool([tiny_lpd.config, tiny_lpd.checkpoint, '--out',
                             out, '--split', 'val', '--num-workers', '0'])
    assert code == 1 and '--gate predicted' in err
    assert not osp.exists(out)
    summary = make_pseudo_masks(tiny_lpd.config, tiny_lpd.checkpoint, out,
                                split='val', gate='predicted', num_workers=0,
                                progress=False)
    assert summary['gate'] == 'predicted'
    assert sorted(os.listdir(out)) == sorted(
        os.listdir(tiny_lpd.val_img_dir) + [META_FILE])


def test_checkpoint_of_another_class_count(tiny_lpd, tmp_path):  # noqa: F811
    out = str(tmp_path / 'm')
    code, _, err = run_tool([tiny_lpd.config, tiny_lpd.bad_checkpoint,
                             '--out', out, '--num-workers', '0'])
    assert code == 1
    assert 'does not fit this model' in err
    assert 'decode_head.prototypes' in err
    with pytest.raises(CheckpointMismatchError):
        make_pseudo_masks(tiny_lpd.config, tiny_lpd.bad_checkpoint, out,
                          num_workers=0, progress=False)
    assert not osp.exists(out)  # refused before anything was written


def test_missing_inputs(tiny_lpd, tmp_path):  # noqa: F811
    out = str(tmp_path / 'm')
    code, _, err = run_tool([tiny_lpd.config, str(tmp_path / 'nope.pth'),
                             '--out', out])
    assert code == 1 and 'nope.pth: no such file' in err
    code, _, err = run_tool([tiny_lpd.config, tiny_lpd.checkpoint, '--out',
                             out, '--data-root', str(tmp_path / 'absent')])
    assert code == 1 and 'absent' in err


def test_help_in_process_and_as_script(capsys):
    with pytest.raises(SystemExit) as exc:
        load_tool('make_pseudo_masks').main(['--help'])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ('--out', '--split', '--data-root', '--batch-size',
                 '--device', '--crf', '--gate', '--overwrite'):
        assert flag in text
    result = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools', 'make_pseudo_masks.py'),
         '--help'], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert 'pseudo_masks_meta.json' in result.stdout


# ------------------------------------------------------------ second stage
def test_second_stage_config_trains_one_step(
        pseudo_run, tiny_lpd, tmp_path):  # noqa: F811
    from mmengine.config import Config
    from mmengine.runner import Runner
    out, _ = pseudo_run
    cfg = Config.fromfile(SECOND_STAGE)
    assert cfg.model.type == 'EncoderDecoder'
    assert cfg.model.decode_head.type == 'SegformerHead'
    assert cfg.model.decode_head.num_classes == 5
    assert cfg.train_dataloader.dataset.data_prefix == dict(
        img_path='training', seg_map_path='pseudo_masks')
    loaders = {}
    for split in ('train', 'val', 'test'):
        loaders.update({
            f'{split}_dataloader.dataset.data_root': tiny_lpd.data_root,
            f'{split}_dataloader.num_workers': 0,
            f'{split}_dataloader.persistent_workers': False,
        })
    cfg.merge_from_dict({
        # A tiny MiT instead of MiT-B1, no pre-trained weights.
        'model.backbone.embed_dims': 8,
        'model.backbone.num_layers': [1, 1, 1, 1],
        'model.backbone.num_heads': [1, 1, 2, 4],
        'model.backbone.mlp_ratio': 2,
        'model.backbone.init_cfg': None,
        'model.decode_head.in_channels': [8, 8, 16, 32],
        'model.decode_head.channels': 16,
        'train_dataloader.dataset.data_prefix.seg_map_path': out,
        'train_dataloader.batch_size': 2,
        'train_cfg.max_iters': 1,
        'train_cfg.val_interval': 1,
        'default_hooks.checkpoint.interval': 1,
        'default_hooks.logger.interval': 1,
        **loaders
    })
    cfg.work_dir = str(tmp_path / 'work')
    runner = Runner.from_cfg(cfg)
    # (Not next(iter(loader)): that would close InfiniteSampler's shared
    # index generator for the training loop.)
    dataset = runner.train_dataloader.dataset
    assert len(dataset) == len(TRAIN_NAMES)
    sample = dataset[0]['data_samples']
    assert sample.gt_sem_seg.data.max() <= 4
    runner.train()
    assert osp.isfile(osp.join(cfg.work_dir, 'iter_1.pth'))
    scalars = runner.message_hub.log_scalars
    assert np.isfinite(scalars['train/loss'].current())
    assert 'val/mIoU' in scalars

    # The next round of self-training: the second stage labels the same
    # training patches, gated by their file-name labels.
    checkpoint = osp.join(cfg.work_dir, 'iter_1.pth')
    again = str(tmp_path / 'round2')
    summary = make_pseudo_masks(cfg, checkpoint, again, num_workers=0,
                                progress=False)
    assert summary['num_masks'] == len(TRAIN_NAMES)
    assert summary['gate'] == 'labels' and summary['crf'] == 'none'
    for name in TRAIN_NAMES:
        mode, mask, _ = read_mask(osp.join(again, mask_name_for(name)))
        assert mode == 'P'
        allowed = set(np.flatnonzero(parse_label_from_name(name, 4))) | {4}
        assert set(np.unique(mask)) <= allowed, name
    for kwargs, message in ((dict(gate='predicted'), 'class probabilities'),
                            (dict(crf='torch'), 'crf none')):
        with pytest.raises(ValueError, match=message):
            make_pseudo_masks(cfg, checkpoint, str(tmp_path / 'refused'),
                              num_workers=0, progress=False, **kwargs)


def test_plain_segmentor_masks_hand_computed():
    """A plain segmentor's scores: argmax over background and the
    labelled classes only; gate 'none' keeps the plain argmax."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    from lpd_mmseg.apis.pseudo_mask_models import _plain_batch_masks
    # 3 tissue classes + background, 1 x 3 pixels
    scores = torch.tensor([[[5., 0., 0.]],     # class 0 (not labelled)
                           [[4., 1., 0.]],     # class 1 (labelled)
                           [[0., 3., 0.]],     # class 2 (not labelled)
                           [[1., 2., 1.]]])    # background
    sample = SegDataSample(metainfo=dict(img_path='x.png'))
    sample.gt_image_label = torch.tensor([0, 1, 0])

    class Plain:
        def predict(self, inputs, samples):
            out = SegDataSample()
            out.seg_logits = PixelData(data=scores)
            return [out]

    labelled = _plain_batch_masks(Plain(), None, [sample], 'labels')[0]
    assert labelled.tolist() == [[1, 3, 3]]
    free = _plain_batch_masks(Plain(), None, [sample], 'none')[0]
    assert free.tolist() == [[0, 2, 3]]


# ------------------------------------------------- second-stage weights
def test_balanced_class_weights_hand_computed():
    from lpd_mmseg.apis.pseudo_mask_io import balanced_class_weights

    # 1 / sqrt -> (1.25, 2.5, 5, 2.5), mean 2.8125
    assert balanced_class_weights([0.64, 0.16, 0.04, 0.16]) == [
        0.4444, 0.8889, 1.7778, 0.8889]
    # an absent class gets 1 and stays out of the mean: (1.25, 5) / 3.125
    assert balanced_class_weights([0.64, 0.0, 0.04]) == [0.4, 1.0, 1.6]
    assert balanced_class_weights([0.3, 0.3]) == [1.0, 1.0]


@pytest.mark.parametrize('shares', [[], [0.0, 0.0], [0.5, -0.1],
                                    [float('nan'), 1.0]])
def test_balanced_class_weights_bad_shares(shares):
    from lpd_mmseg.apis.pseudo_mask_io import balanced_class_weights
    with pytest.raises(ValueError, match='pixel shares must be >= 0'):
        balanced_class_weights(shares)


def test_stage2_class_weight_reads_the_meta_file(tmp_path):
    import json

    from lpd_mmseg.apis.pseudo_mask_io import META_FILE, stage2_class_weight
    with pytest.raises(FileNotFoundError, match='no pseudo-mask meta file'):
        stage2_class_weight(str(tmp_path))
    meta = dict(classes=['A', 'B', 'C', 'D'],
                pixel_shares=dict(B=0.16, A=0.64, D=0.16, C=0.04))
    (tmp_path / META_FILE).write_text(json.dumps(meta))
    # in the meta's class order, not the dict's
    assert stage2_class_weight(str(tmp_path)) == [0.4444, 0.8889, 1.7778,
                                                  0.8889]
    (tmp_path / META_FILE).write_text(json.dumps(dict(classes=['A'])))
    with pytest.raises(KeyError, match='pixel_shares'):
        stage2_class_weight(str(tmp_path))
