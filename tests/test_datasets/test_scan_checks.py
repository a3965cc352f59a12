"""Dataset scan: 0-byte files and broken links reported as what they are;
1 px training images (defect 6)."""
import os

import numpy as np
import pytest
from mmseg.registry import TRANSFORMS

from lpd_mmseg.datasets import BCSSWSSSDataset

from helpers import make_split, make_training

NAMES = ['a+0[1000].png', 'b+1[0100].png']


def _val(root):
    make_split(str(root), 'val', {'x': np.zeros((32, 32)),
                                  'y': np.ones((32, 32))})


def test_zero_byte_training_png_is_found_by_the_scan(tmp_path):
    make_training(str(tmp_path), NAMES)
    (tmp_path / 'training' / 'c+2[0010].png').write_bytes(b'')
    with pytest.raises(FileNotFoundError, match=r"1 empty \(0-byte\) files: "
                       r'c\+2\[0010\]\.png'):
        BCSSWSSSDataset(data_root=str(tmp_path), split='train',
                        pipeline=[])


def test_broken_symlink_is_reported_as_broken(tmp_path):
    make_training(str(tmp_path), NAMES)
    os.symlink(tmp_path / 'gone.png', tmp_path / 'training' / 'c+2[0010].png')
    with pytest.raises(FileNotFoundError, match=r'1 broken symbolic links .*'
                       r'c\+2\[0010\]\.png -> .*gone\.png'):
        BCSSWSSSDataset(data_root=str(tmp_path), split='train', pipeline=[])
    _val(tmp_path)
    os.symlink(tmp_path / 'gone.png', tmp_path / 'val' / 'mask' / 'z.png')
    with pytest.raises(FileNotFoundError, match=r'broken symbolic links.*'
                       r'z\.png'):
        BCSSWSSSDataset(data_root=str(tmp_path), split='val', pipeline=[],
                        test_mode=True)


def test_zero_byte_mask_is_found_by_the_scan(tmp_path):
    _val(tmp_path)
    (tmp_path / 'val' / 'mask' / 'y.png').write_bytes(b'')
    with pytest.raises(FileNotFoundError, match=r"'.*val/mask'.*empty "
                       r'\(0-byte\) files: y\.png'):
        BCSSWSSSDataset(data_root=str(tmp_path), split='val', pipeline=[],
                        test_mode=True)


@pytest.mark.parametrize('k', [1, 2, 3])
@pytest.mark.parametrize('direction', ['horizontal', 'vertical'])
def test_one_pixel_training_image_packs_after_flip_and_rotation(k,
                                                                 direction):
    flip = TRANSFORMS.build(dict(type='RandomFlip', prob=1.,
                                 direction=direction))
    pack = TRANSFORMS.build(dict(type='PackWeakSegInputs'))
    results = dict(img=np.arange(3, dtype=np.uint8).reshape(1, 1, 3),
                   img_shape=(1, 1), ori_shape=(1, 1),
                   gt_image_label=np.array([1, 0, 0, 0]), seg_fields=[])
    results = flip(results)
    results['img'] = np.ascontiguousarray(np.rot90(results['img'], k))
    packed = pack(results)
    assert packed['inputs'].tolist() == [[[0]], [[1]], [[2]]]
