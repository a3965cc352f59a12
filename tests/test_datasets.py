import os
import os.path as osp
import warnings

import numpy as np
import pytest
import torch
from mmseg.registry import DATASETS

from lpd_mmseg.datasets import (DataLoadError, LabelParseError,
                                label_from_mask, parse_label_from_name)

from helpers import make_split, make_training, write_mask, write_rgb

BCSS_NAMES = [
    'TCGA-A1-A0SK-DX1_xmin45749_ymin25055_MPP-0.2500+0[1101].png',
    'TCGA-A2-A0CM-DX1_xmin18562_ymin56852_MPP-0.2500+12[0100].png',
    'TCGA-AR-A1AR-DX1_xmin12345_ymin678_MPP-0.2500+3[0011].png',
]
LUAD_NAMES = [
    '1031280-2300-27920-[1 0 0 1].png',
    '1031280-2300-28144-[0 1 0 0].png',
]
TEST_PIPELINE = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadHistoAnnotations'),
    dict(type='PackWeakSegInputs'),
]
TRAIN_PIPELINE = [dict(type='LoadImageFromFile'),
                  dict(type='PackWeakSegInputs')]


# --------------------------------------------------------------- parsing
@pytest.mark.parametrize('name, expected', [
    (BCSS_NAMES[0], [1, 1, 0, 1]),
    (BCSS_NAMES[1], [0, 1, 0, 0]),
    ('some/dir[1111]/TCGA-X+0[0010].png', [0, 0, 1, 0]),
    ('weird[0000]name+5[1000].png', [1, 0, 0, 0]),
])
def test_parse_bcss(name, expected):
    assert parse_label_from_name(name, 4, 'compact').tolist() == expected


@pytest.mark.parametrize('name, expected', [
    (LUAD_NAMES[0], [1, 0, 0, 1]),
    (LUAD_NAMES[1], [0, 1, 0, 0]),
    ('/data/[1 1 1 1]/436219-7159-48057-[0 0 1 1].png', [0, 0, 1, 1]),
])
def test_parse_luad(name, expected):
    assert parse_label_from_name(name, 4, 'spaced').tolist() == expected


@pytest.mark.parametrize('name, fmt, pattern', [
    ('TCGA-A1+0.png', 'compact', 'no .*label group'),
    ('/root/train[1101]/TCGA-A1+0.png', 'compact', 'no .*label group'),
    ('TCGA+0[110].png', 'compact', '3 entries where 4'),
    ('TCGA+0[11011].png', 'compact', '5 entries where 4'),
    ('TCGA+0[1 1 0 1].png', 'compact', 'entries where 4'),
    ('TCGA+0[1201].png', 'compact', r"\['2'\]"),
    ('TCGA+0[1a01].png', 'compact', r"\['a'\]"),
    ('1-2-3-[1 0 1].png', 'spaced', '3 entries where 4'),
    ('1-2-3-[1001].png', 'spaced', '1 entries where 4'),
    ('1-2-3-[1 0 2 1].png', 'spaced', r"\['2'\]"),
])
def test_bad_names_are_named_in_error(name, fmt, pattern):
    with pytest.raises(LabelParseError, match=pattern) as info:
        parse_label_from_name(name, 4, fmt)
    assert name in str(info.value)


def test_label_from_mask_ignores_background_and_ignore():
    mask = np.array([[0, 4, 255], [3, 3, 4]])
    assert label_from_mask(mask, 4).tolist() == [1, 0, 0, 1]


# ------------------------------------------------------------- data sets
def _build(root, split, kind='BCSSWSSSDataset', pipeline=None, **kw):
    return DATASETS.build(
        dict(type=kind, data_root=str(root), split=split,
             pipeline=pipeline if pipeline is not None else [], **kw))


@pytest.mark.parametrize('folder', ['training', 'train'])
def test_training_split_labels_reach_samples(tmp_path, folder):
    make_training(tmp_path, BCSS_NAMES, folder)
    ds = _build(tmp_path, 'train', pipeline=TRAIN_PIPELINE)
    assert len(ds) == 3
    labels = {osp.basename(ds.get_data_info(i)['img_path']):
              ds.get_data_info(i)['gt_image_label'].tolist()
              for i in range(3)}
    assert labels[BCSS_NAMES[0]] == [1, 1, 0, 1]
    sample = ds[0]['data_samples']
    assert 'gt_sem_seg' not in sample
    assert sample.gt_image_label.dtype == torch.float32
    assert sample.gt_image_label.shape == (4, )


def test_luad_dataset_and_metainfo(tmp_path):
    make_training(tmp_path, LUAD_NAMES)
    ds = _build(tmp_path, 'train', kind='LUADHistoSegDataset')
    assert ds.metainfo['classes'] == ('TE', 'NEC', 'LYM', 'TAS', 'BACK')
    assert ds.metainfo['palette'][3] == [255, 165, 0]
    assert ds.get_data_info(0)['gt_image_label'].tolist() == [1, 0, 0, 1]


def test_bcss_metainfo():
    from lpd_mmseg.datasets import BCSSWSSSDataset
    meta = BCSSWSSSDataset.METAINFO
    assert meta['classes'] == ('TUM', 'STR', 'LYM', 'NEC', 'BACK')
    assert meta['palette'] == [[255, 0, 0], [0, 255, 0], [0, 0, 255],
                               [153, 0, 255], [255, 255, 255]]


def test_val_split_label_from_mask_and_background_kept(tmp_path):
    mask = np.zeros((32, 32), np.uint8)
    mask[:, 16:] = 4
    mask[:4, :4] = 2
    make_split(tmp_path, 'val', {'patch_a': mask})
    ds = _build(tmp_path, 'val', pipeline=TEST_PIPELINE, test_mode=True)
    sample = ds[0]['data_samples']
    assert sample.gt_image_label.tolist() == [1, 0, 1, 0]
    seg = sample.gt_sem_seg.data
    assert seg.shape == (1, 32, 32)
    # background (4) stays 4 so both evaluation protocols are possible
    assert set(torch.unique(seg).tolist()) == {0, 2, 4}


def test_training_name_with_bad_label_is_refused(tmp_path):
    make_training(tmp_path, BCSS_NAMES + ['TCGA-X+1[12].png'])
    with pytest.raises(LabelParseError, match=r'TCGA-X\+1\[12\]\.png'):
        _build(tmp_path, 'train')


def test_all_zero_label_policy(tmp_path):
    make_training(tmp_path, BCSS_NAMES + ['TCGA-X+1[0000].png'])
    with pytest.raises(LabelParseError, match='1 of 4 .*all-zero'):
        _build(tmp_path, 'train')
    with pytest.warns(UserWarning, match='1 of 4 .*all-zero'):
        ds = _build(tmp_path, 'train', empty_label='warn')
    assert len(ds) == 4


def test_image_without_mask_and_mask_without_image(tmp_path):
    make_split(tmp_path, 'test', {'a': np.zeros((32, 32)),
                                  'b': np.zeros((32, 32))})
    os.remove(tmp_path / 'test' / 'mask' / 'a.png')
    with pytest.raises(FileNotFoundError, match='have no mask.*a.png'):
        _build(tmp_path, 'test')
    write_mask(tmp_path / 'test' / 'mask' / 'a.png', np.zeros((32, 32)))
    write_mask(tmp_path / 'test' / 'mask' / 'orphan.png', np.zeros((32, 32)))
    with pytest.raises(FileNotFoundError, match='have no image.*orphan.png'):
        _build(tmp_path, 'test')


def test_mask_with_unknown_values_names_file(tmp_path):
    mask = np.zeros((32, 32), np.uint8)
    mask[0, 0] = 7
    make_split(tmp_path, 'val', {'bad': mask})
    ds = _build(tmp_path, 'val', pipeline=TEST_PIPELINE, test_mode=True)
    with pytest.raises(DataLoadError, match=r'bad\.png.*\[7\].*0, 1, 2, 3, 4'):
        ds[0]


def test_rgb_mask_and_size_mismatch_are_refused(tmp_path):
    make_split(tmp_path, 'val', {'a': np.zeros((32, 32))})
    write_rgb(tmp_path / 'val' / 'mask' / 'a.png', 32)
    ds = _build(tmp_path, 'val', pipeline=TEST_PIPELINE, test_mode=True)
    with pytest.raises(DataLoadError, match='single-channel'):
        ds[0]
    write_mask(tmp_path / 'val' / 'mask' / 'a.png', np.zeros((16, 32)))
    with pytest.raises(DataLoadError, match='32x16 but its image'):
        ds[0]


def test_truncated_png_names_file(tmp_path):
    make_training(tmp_path, BCSS_NAMES, size=64)
    path = tmp_path / 'training' / BCSS_NAMES[1]
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    ds = _build(tmp_path, 'train', pipeline=TRAIN_PIPELINE)
    index = [osp.basename(ds.get_data_info(i)['img_path'])
             for i in range(len(ds))].index(BCSS_NAMES[1])
    with pytest.raises(DataLoadError, match=r'\+12\[0100\]\.png'):
        ds[index]


def test_missing_split_and_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match='does not exist'):
        _build(tmp_path / 'nowhere', 'train')
    with pytest.raises(FileNotFoundError, match='no training split'):
        _build(tmp_path, 'train')
    with pytest.raises(FileNotFoundError, match="val/img' does not exist"):
        _build(tmp_path, 'val')
    with pytest.raises(ValueError, match="split must be"):
        _build(tmp_path, 'validation')


def test_empty_image_folder(tmp_path):
    os.makedirs(tmp_path / 'training')
    with pytest.raises(FileNotFoundError, match="no '\\*.png' images"):
        _build(tmp_path, 'train')


def test_no_warnings_on_clean_data(tmp_path):
    make_training(tmp_path, BCSS_NAMES)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        _build(tmp_path, 'train')
