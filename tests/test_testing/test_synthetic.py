"""Synthetic BCSS-WSSS generator: layout, labels, determinism, safety, CLI."""
import importlib.util
import json
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
from mmseg.registry import DATASETS
from PIL import Image

import lpd_mmseg  # noqa: F401  (registers BCSSWSSSDataset)
from lpd_mmseg.datasets import label_from_mask, parse_label_from_name
from lpd_mmseg.testing.synthetic import (
    CLASS_NAMES,
    MANIFEST_NAME,
    MORPHOLOGIES,
    PALETTE,
    generate_synthetic_bcss,
    min_class_pixels,
    render_patch,
    render_sample,
    slide_style,
)

from conftest import REPO

TOOL = osp.join(REPO, 'tools', 'make_synthetic_bcss.py')
SMALL = dict(seed=0, num_train=12, num_val=4, num_test=4, size=64,
             with_train_masks=True, progress=False)
FLAT_PALETTE = [v for colour in PALETTE for v in colour]


def _all_files(root):
    """Relative path -> bytes of every file below ``root``."""
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = osp.join(folder, name)
            with open(path, 'rb') as f:
                out[osp.relpath(path, root)] = f.read()
    return out


def _mtimes(root):
    return {
        osp.join(folder, name): os.stat(osp.join(folder, name)).st_mtime_ns
        for folder, _, files in os.walk(root) for name in files
    }


@pytest.fixture(scope='module')
def small_set(tmp_path_factory):
    out = str(tmp_path_factory.mktemp('synthetic') / 'bcss')
    manifest = generate_synthetic_bcss(out, workers=1, **SMALL)
    return out, manifest


@pytest.fixture(scope='module')
def moderate_set(tmp_path_factory):
    """200 tiny training patches: enough for class statistics."""
    out = str(tmp_path_factory.mktemp('synthetic') / 'moderate')
    manifest = generate_synthetic_bcss(
        out, seed=3, num_train=200, num_val=0, num_test=0, size=32,
        with_train_masks=True, progress=False)
    return out, manifest


# ------------------------------------------------------------ render_patch
def test_render_patch_shapes_values_and_min_area():
    min_pixels = min_class_pixels(64)
    for seed in range(12):
        rgb, mask = render_patch(np.random.default_rng(seed), 64)
        assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8
        assert mask.shape == (64, 64) and mask.dtype == np.uint8
        values, counts = np.unique(mask, return_counts=True)
        assert set(values.tolist()) <= {0, 1, 2, 3, 4}
        assert any(v < 4 for v in values), 'a patch needs tissue'
        for v, c in zip(values, counts):
            if v < 4:
                assert c >= min_pixels, (seed, v, c)


def test_render_patch_is_deterministic():
    a = render_patch(np.random.default_rng(5), 64)
    b = render_patch(np.random.default_rng(5), 64)
    c = render_patch(np.random.default_rng(6), 64)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])


def test_render_patch_honours_classes():
    rgb, mask = render_patch(np.random.default_rng(0), 64, classes=(2, ))
    assert set(np.unique(mask).tolist()) == {2}
    _, mask = render_patch(np.random.default_rng(1), 96, classes=(0, 3, 4))
    assert set(np.unique(mask).tolist()) == {0, 3, 4}


@pytest.mark.parametrize('kwargs', [
    dict(size=31), dict(size=64.0), dict(size=64, classes=(4, )),
    dict(size=64, classes=(0, 5)), dict(size=64, classes=(1, 1))
])
def test_render_patch_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        render_patch(np.random.default_rng(0), **kwargs)


def test_not_separable_by_mean_colour():
    """Nearest-centroid on mean RGB of single-class patches stays weak."""
    styles = [slide_style(0, 'train', k) for k in range(8)]
    feats, labels = [], []
    for cls in range(4):
        for i in range(24):
            rng = np.random.default_rng([11, cls, i])
            rgb, _ = render_patch(rng, 48, classes=(cls, ),
                                  style=styles[i % 8])
            feats.append(rgb.reshape(-1, 3).mean(0))
            labels.append(cls)
    feats, labels = np.array(feats), np.array(labels)
    train = np.arange(len(labels)) % 2 == 0
    centroids = np.stack(
        [feats[train & (labels == c)].mean(0) for c in range(4)])
    dist = ((feats[~train, None] - centroids[None])**2).sum(-1)
    accuracy = (dist.argmin(1) == labels[~train]).mean()
    assert accuracy < 0.7, accuracy


def test_morphologies_are_varied():
    assert all(len(MORPHOLOGIES[c]) >= 3 for c in range(4))
    seen = {c: set() for c in range(4)}
    for i in range(40):
        sample = render_sample(np.random.default_rng(i), 32, classes=(i % 4, ))
        seen[i % 4].update(sample.morphologies.values())
    assert all(len(names) >= 2 for names in seen.values()), seen


# --------------------------------------------------------------- data set
def test_layout_loads_with_bcss_dataset(small_set):
    out, manifest = small_set
    assert manifest['counts'] == dict(train=12, val=4, test=4)
    train = DATASETS.build(
        dict(type='BCSSWSSSDataset', data_root=out, split='train',
             pipeline=[]))
    assert len(train) == 12
    for i in range(len(train)):
        info = train.get_data_info(i)
        label = info['gt_image_label']
        assert label.shape == (4, ) and label.sum() >= 1
        assert '[' not in osp.dirname(info['img_path'])
        assert Image.open(info['img_path']).size == (64, 64)
    for split in ('val', 'test'):
        ds = DATASETS.build(
            dict(type='BCSSWSSSDataset', data_root=out, split=split,
                 pipeline=[]))
        assert len(ds) == 4
        for i in range(len(ds)):
            info = ds.get_data_info(i)
            assert '[' not in osp.basename(info['img_path'])
            mask = Image.open(info['seg_map_path'])
            assert mask.mode == 'P'
            assert mask.getpalette()[:15] == FLAT_PALETTE
            values = np.unique(np.array(mask))
            assert set(values.tolist()) <= {0, 1, 2, 3, 4}


def test_pipeline_reads_masks(small_set):
    out, _ = small_set
    ds = DATASETS.build(
        dict(type='BCSSWSSSDataset', data_root=out, split='val',
             pipeline=[dict(type='LoadImageFromFile'),
                       dict(type='LoadHistoAnnotations')]))
    sample = ds[0]
    assert sample['gt_seg_map'].shape == (64, 64)
    assert sample['gt_image_label'].sum() >= 1


def test_training_label_matches_training_mask(small_set):
    out, _ = small_set
    names = sorted(os.listdir(osp.join(out, 'training')))
    assert sorted(os.listdir(osp.join(out, 'training_masks'))) == names
    for name in names:
        label = parse_label_from_name(name, 4)
        mask = np.array(Image.open(osp.join(out, 'training_masks', name)))
        np.testing.assert_array_equal(label, label_from_mask(mask, 4))


def test_bracket_group_in_data_root_does_not_leak_into_labels(tmp_path):
    # A path such as /data/[1111]/bcss must not label every patch [1111]:
    # labels come from the file names only.
    out = str(tmp_path / '[1111]' / 'bcss')
    generate_synthetic_bcss(out, seed=4, num_train=8, num_val=2, num_test=0,
                            size=32, with_train_masks=True, progress=False)
    train = DATASETS.build(
        dict(type='BCSSWSSSDataset', data_root=out, split='train',
             pipeline=[]))
    assert len(train) == 8
    labels = []
    for i in range(len(train)):
        info = train.get_data_info(i)
        name = osp.basename(info['img_path'])
        assert '[1111]' in info['img_path']
        label = info['gt_image_label']
        np.testing.assert_array_equal(label,
                                      parse_label_from_name(name, 4))
        mask = np.array(Image.open(osp.join(out, 'training_masks', name)))
        np.testing.assert_array_equal(label, label_from_mask(mask, 4))
        labels.append(label.tolist())
    assert any(label != [1, 1, 1, 1] for label in labels)
    val = DATASETS.build(
        dict(type='BCSSWSSSDataset', data_root=out, split='val',
             pipeline=[dict(type='LoadImageFromFile'),
                       dict(type='LoadHistoAnnotations')]))
    for i in range(len(val)):
        sample = val[i]
        np.testing.assert_array_equal(
            sample['gt_image_label'],
            label_from_mask(sample['gt_seg_map'], 4))


def test_manifest_matches_disk(small_set):
    out, manifest = small_set
    with open(osp.join(out, MANIFEST_NAME)) as f:
        on_disk = json.load(f)
    assert {k: v for k, v in manifest.items()
            if k not in ('reused', 'out_dir')} == on_disk
    assert on_disk['params']['seed'] == 0
    freqs = on_disk['splits']['val']['pixel_frequencies']
    assert list(freqs) == list(CLASS_NAMES)
    assert abs(sum(freqs.values()) - 1) < 1e-4


def test_class_statistics(moderate_set):
    out, manifest = moderate_set
    stats = manifest['splits']['train']
    assert all(stats['pixel_frequencies'][c] > 0 for c in CLASS_NAMES)
    assert all(n >= 3 for n in stats['single_label_counts'].values()), stats
    labels = stats['image_label_counts']
    # BCSS-like: TUM and STR most common, NEC the rarest.
    assert min(labels['TUM'], labels['STR']) > labels['LYM'] > labels['NEC']
    for cls, counts in stats['morphology_counts'].items():
        assert sum(n > 0 for n in counts.values()) >= 3, (cls, counts)
    # The statistics agree with the names written.
    names = os.listdir(osp.join(out, 'training'))
    bits = np.array([parse_label_from_name(n, 4) for n in names])
    assert bits.sum(1).min() >= 1
    assert bits.sum(0).tolist() == [labels[c] for c in CLASS_NAMES[:4]]


# ---------------------------------------------------------- determinism
def test_generation_is_deterministic_and_worker_independent(
        small_set, tmp_path):
    out, _ = small_set
    again = str(tmp_path / 'again')
    generate_synthetic_bcss(again, workers=2, **SMALL)
    assert _all_files(again) == _all_files(out)
    other = str(tmp_path / 'other')
    generate_synthetic_bcss(other, **dict(SMALL, seed=1))
    a = _all_files(out)
    b = _all_files(other)
    assert sorted(a) != sorted(b) or any(a[k] != b[k] for k in a)


# ------------------------------------------------------------- safety
def test_reuses_identical_data_set(tmp_path):
    out = str(tmp_path / 'd')
    kwargs = dict(seed=2, num_train=3, num_val=1, num_test=1, size=32,
                  progress=False)
    first = generate_synthetic_bcss(out, **kwargs)
    assert first['reused'] is False
    before = _mtimes(out)
    second = generate_synthetic_bcss(out, **kwargs)
    assert second['reused'] is True
    assert _mtimes(out) == before
    assert second['counts'] == first['counts']


def test_refuses_other_parameters_until_overwrite(tmp_path):
    out = str(tmp_path / 'd')
    kwargs = dict(num_train=3, num_val=1, num_test=1, size=32, progress=False)
    generate_synthetic_bcss(out, seed=0, **kwargs)
    with pytest.raises(FileExistsError, match='seed'):
        generate_synthetic_bcss(out, seed=1, **kwargs)
    manifest = generate_synthetic_bcss(out, seed=1, overwrite=True, **kwargs)
    assert manifest['params']['seed'] == 1 and not manifest['reused']
    assert len(os.listdir(osp.join(out, 'training'))) == 3


def test_refuses_foreign_folder_and_keeps_foreign_files(tmp_path):
    out = tmp_path / 'user_data'
    out.mkdir()
    (out / 'notes.txt').write_text('keep me')
    kwargs = dict(num_train=2, num_val=1, num_test=1, size=32, progress=False)
    with pytest.raises(FileExistsError, match='overwrite'):
        generate_synthetic_bcss(str(out), **kwargs)
    assert os.listdir(out) == ['notes.txt']
    generate_synthetic_bcss(str(out), overwrite=True, **kwargs)
    assert (out / 'notes.txt').read_text() == 'keep me'
    assert (out / MANIFEST_NAME).is_file()


def test_never_deletes_a_real_data_set_even_with_overwrite(tmp_path):
    out = tmp_path / 'BCSS-WSSS'
    (out / 'training').mkdir(parents=True)
    real = out / 'training' / 'TCGA-A1+0[1000].png'
    real.write_bytes(b'real patch')
    kwargs = dict(num_train=2, num_val=1, num_test=1, size=32, progress=False)
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match='real data set'):
            generate_synthetic_bcss(str(out), overwrite=overwrite, **kwargs)
    assert real.read_bytes() == b'real patch'
    assert os.listdir(out / 'training') == [real.name]


def test_refuses_a_file_as_out_dir(tmp_path):
    path = tmp_path / 'file.txt'
    path.write_text('x')
    with pytest.raises(FileExistsError):
        generate_synthetic_bcss(str(path), num_train=1, num_val=0,
                                num_test=0, size=32, progress=False)


@pytest.mark.parametrize('kwargs', [
    dict(num_train=-1), dict(num_val=-2), dict(size=16), dict(size=64.5),
    dict(seed=-1), dict(workers=0), dict(num_train='3'),
    dict(num_train=0, num_val=0, num_test=0)
])
def test_bad_arguments(tmp_path, kwargs):
    out = tmp_path / 'd'
    with pytest.raises(ValueError):
        generate_synthetic_bcss(str(out), progress=False, **kwargs)
    assert not out.exists()


def test_class_mix_multi_changes_the_label_mix(tmp_path):
    common = dict(seed=3, num_train=200, num_val=0, num_test=0, size=32,
                  progress=False)
    shares = {}
    for mix in ('bcss', 'multi'):
        manifest = generate_synthetic_bcss(str(tmp_path / mix),
                                           class_mix=mix, **common)
        train = manifest['splits']['train']
        counts = train['image_label_counts']
        shares[mix] = dict(
            nec=counts['NEC'] / 200,
            multi=sum(n for label, n in train['label_combinations'].items()
                      if label.count('1') >= 3) / 200)
        # the default is not written, so older manifests still match
        assert ('class_mix' in manifest['params']) == (mix == 'multi')
    # 'multi' draws NEC in 0.49 of the random compositions against 0.24,
    # and 3-4 classes in 0.38 against 0.21
    assert shares['multi']['nec'] > shares['bcss']['nec'] + 0.1
    assert shares['multi']['multi'] > shares['bcss']['multi'] + 0.08


def test_class_mix_unknown_name(tmp_path):
    with pytest.raises(ValueError, match="class_mix must be one of "
                       "bcss, multi, got 'luad'"):
        generate_synthetic_bcss(str(tmp_path / 'd'), class_mix='luad',
                                progress=False)
    assert not (tmp_path / 'd').exists()


# ---------------------------------------------------------------- CLI
def test_cli_help():
    result = subprocess.run([sys.executable, TOOL, '--help'],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for flag in ('--out', '--seed', '--num-train', '--num-val', '--num-test',
                 '--size', '--with-train-masks', '--overwrite', '--workers'):
        assert flag in result.stdout


def test_cli_generates(tmp_path):
    out = str(tmp_path / 'cli')
    cmd = [sys.executable, TOOL, '--out', out, '--seed', '4',
           '--num-train', '3', '--num-val', '1', '--num-test', '1',
           '--size', '32', '--with-train-masks']
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                            cwd=REPO)
    assert result.returncode == 0, result.stderr
    summary = result.stdout.strip().splitlines()[-1]
    assert out in summary and 'TUM' in summary and 'written' in summary
    assert len(os.listdir(osp.join(out, 'training_masks'))) == 3


def test_cli_reports_bad_arguments(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location('make_synthetic_bcss', TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = str(tmp_path / 'bad')
    assert tool.main(['--out', out, '--size', '8', '--no-progress']) == 2
    assert 'size' in capsys.readouterr().err
    assert not osp.exists(out)
