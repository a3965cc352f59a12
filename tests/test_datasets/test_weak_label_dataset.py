import os
import os.path as osp
import warnings

import numpy as np
import pytest
import torch
from mmseg.registry import DATASETS

from lpd_mmseg.datasets import (
    DataLoadError,
    LabelParseError,
    label_from_mask,
    parse_label_from_name,
)

from conftest import REPO
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
    ('TCGA+0[1 1 0 1].png', 'compact', 'malformed.*without spaces'),
    ('TCGA+0[1201].png', 'compact', r"\['2'\]"),
    ('TCGA+0[1a01].png', 'compact', r"\['a'\]"),
    ('1-2-3-[1 0 1].png', 'spaced', '3 entries where 4'),
    ('1-2-3-[1001].png', 'spaced', '1 entries where 4'),
    ('1-2-3-[1 0 2 1].png', 'spaced', r"\['2'\]"),
    ('1-2-3-[10 0 1 1].png', 'spaced', r"\['10'\]"),
    ('1-2-3-[].png', 'spaced', '0 entries where 4'),
    ('/data/[1 1 1 1]/436219-7159-48057.png', 'spaced', 'no .*label group'),
])
def test_bad_names_are_named_in_error(name, fmt, pattern):
    with pytest.raises(LabelParseError, match=pattern) as info:
        parse_label_from_name(name, 4, fmt)
    assert name in str(info.value)


@pytest.mark.parametrize('group', [
    '[1  0 0 1]',  # double space
    '[1\t0\t0\t1]',  # tabs
    '[1 0\t0 1]',
    '[ 1 0 0 1 ]',  # padded: the published names never are
    '[1 0 0 1 ]',
    '[ 1 0 0 1]',
])
def test_luad_malformed_spacing_is_not_a_count_error(group):
    name = f'1031280-2300-27920-{group}.png'
    with pytest.raises(LabelParseError, match='separated by single spaces'
                       ) as info:
        parse_label_from_name(name, 4, 'spaced')
    message = str(info.value)
    assert 'entries where' not in message
    # shown escaped, so that a tab is visible
    assert repr(group) in message and "'name-[1 0 0 0].png'" in message


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


def test_luad_label_group_only_in_parent_folder_is_refused(tmp_path):
    root = tmp_path / '[1 0 0 1]' / 'LUAD-HistoSeg'
    make_training(root, ['1031280-2300-27920.png'], folder='train')
    assert osp.isdir(root / 'train')
    with pytest.raises(LabelParseError,
                       match=r"1031280-2300-27920\.png: no '\[\.\.\.\]'"):
        _build(root, 'train', kind='LUADHistoSegDataset')


@pytest.mark.parametrize('damage', ['truncate', 'garbage'])
def test_truncated_or_unreadable_mask_names_mask_file(tmp_path, damage):
    rng = np.random.default_rng(0)
    make_split(tmp_path, 'val',
               {'good': np.zeros((64, 64)),
                'broken': rng.integers(0, 5, (64, 64))}, size=64)
    path = tmp_path / 'val' / 'mask' / 'broken.png'
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2] if damage == 'truncate' else
                     b'not a png' * 10)
    ds = _build(tmp_path, 'val', pipeline=TEST_PIPELINE, test_mode=True)
    index = [osp.basename(ds.get_data_info(i)['img_path'])
             for i in range(len(ds))].index('broken.png')
    ds[1 - index]  # the intact sample still loads
    with pytest.raises(DataLoadError) as info:
        ds[index]
    message = str(info.value)
    # named by the transform itself, not only by the data set's wrapper
    assert f'{path}: cannot decode the mask' in message
    assert 'single-channel PNG' in message


def test_suffix_differing_in_case_is_refused(tmp_path):
    upper = ['TCGA-X+0[1000].PNG', 'TCGA-Y+0[0100].Png']
    make_training(tmp_path, BCSS_NAMES + upper)
    with pytest.raises(FileNotFoundError,
                       match=r"2 files in .*training' end in '\.png' only up "
                       r'to letter case: TCGA-X\+0\[1000\]\.PNG, '
                       r'TCGA-Y\+0\[0100\]\.Png; .*img_suffix'):
        _build(tmp_path, 'train')
    for name in upper:
        os.remove(tmp_path / 'training' / name)
    make_split(tmp_path, 'val', {'a': np.zeros((32, 32))})
    os.rename(tmp_path / 'val' / 'mask' / 'a.png',
              tmp_path / 'val' / 'mask' / 'a.PNG')
    with pytest.raises(FileNotFoundError,
                       match=r'a\.PNG; .*Rename them, or set seg_map_suffix'):
        _build(tmp_path, 'val')


def test_other_entries_warn_and_hidden_files_are_quiet(tmp_path):
    make_training(tmp_path, BCSS_NAMES)
    folder = tmp_path / 'training'
    (folder / 'README.txt').write_text('notes')
    os.makedirs(folder / 'extra')
    (folder / '.DS_Store').write_bytes(b'')
    (folder / '._TCGA-A1+0[1000].png').write_bytes(b'AppleDouble')
    with pytest.warns(UserWarning) as record:
        ds = _build(tmp_path, 'train')
    assert len(ds) == 3
    messages = [str(w.message) for w in record]
    assert len(messages) == 1
    assert "ignored 2 entries in '" in messages[0]
    assert "not '*.png' files: README.txt, extra/" in messages[0]
    assert 'DS_Store' not in messages[0] and '._' not in messages[0]
    # only hidden files: no warning at all
    os.remove(folder / 'README.txt')
    os.rmdir(folder / 'extra')
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert len(_build(tmp_path, 'train')) == 3


def test_both_training_and_train_folders_are_refused(tmp_path):
    make_training(tmp_path, BCSS_NAMES[:2], folder='training')
    make_training(tmp_path, BCSS_NAMES[2:], folder='train')
    with pytest.raises(ValueError) as info:
        _build(tmp_path, 'train')
    message = str(info.value)
    assert str(tmp_path / 'training') in message
    assert str(tmp_path / 'train') + "'" in message
    assert 'data_prefix' in message
    ds = DATASETS.build(
        dict(type='BCSSWSSSDataset', data_root=str(tmp_path),
             data_prefix=dict(img_path='train'), pipeline=[]))
    assert len(ds) == 1


@pytest.mark.parametrize('name', ['bcss_wsss', 'luad_histoseg'])
def test_base_config_eval_datasets_are_in_test_mode(tmp_path, name):
    from mmengine.config import Config
    repo = REPO
    cfg = Config.fromfile(
        osp.join(repo, 'configs', '_base_', 'datasets', name + '.py'))
    assert cfg.train_dataloader.dataset.get('test_mode', False) is False
    mask = np.full((32, 32), 4, np.uint8)
    mask[:8] = 1
    for split in ('val', 'test'):
        make_split(tmp_path, split, {'a': mask})
        ds_cfg = cfg[f'{split}_dataloader'].dataset.to_dict()
        assert ds_cfg['split'] == split and ds_cfg['test_mode'] is True
        ds = DATASETS.build(dict(ds_cfg, data_root=str(tmp_path)))
        assert ds.test_mode
        assert ds[0]['data_samples'].gt_image_label.tolist() == [0, 1, 0, 0]


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
