"""Class names, colours and palette PNGs (lpd_mmseg.datasets.palette)."""
import os

import numpy as np
import pytest
from PIL import Image

from lpd_mmseg.datasets import BCSSWSSSDataset, LUADHistoSegDataset
from lpd_mmseg.datasets.palette import (
    BCSS_CLASSES,
    BCSS_PALETTE,
    metainfo,
    palette_bytes,
    read_index_mask,
    save_palette_mask,
)


def read_mask(path):
    with Image.open(path) as img:
        return img.mode, np.array(img), img.getpalette()[:15]


def test_save_palette_mask_round_trip(tmp_path):
    palette = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [153, 0, 255],
               [255, 255, 255]]
    mask = np.array([[0, 1, 2], [3, 4, 4]], np.int64)
    path = str(tmp_path / 'a[1111].png')
    save_palette_mask(mask, path, palette)
    mode, values, pal = read_mask(path)
    assert mode == 'P' and pal == [v for rgb in palette for v in rgb]
    np.testing.assert_array_equal(values, mask)
    np.testing.assert_array_equal(read_index_mask(path), mask)
    assert os.listdir(tmp_path) == ['a[1111].png']  # no temporary left
    with pytest.raises(ValueError, match='no colour'):
        save_palette_mask(np.array([[5]]), path, palette)
    with pytest.raises(ValueError, match=r'\(H, W\)'):
        save_palette_mask(np.zeros((2, 2, 1)), path, palette)


def test_masks_stay_8_bit_with_a_short_palette(tmp_path):
    # PIL would pack a 5-colour palette into 4 bits per pixel; the full
    # 256-entry palette keeps one byte per pixel.
    path = str(tmp_path / 'm.png')
    save_palette_mask(np.full((4, 4), 4), path, BCSS_PALETTE)
    with Image.open(path) as img:
        assert img.mode == 'P' and len(img.getpalette()) == 768
    assert len(palette_bytes(BCSS_PALETTE)) == 768
    with pytest.raises(ValueError, match='256 RGB triples'):
        palette_bytes([[0, 0, 0]] * 257)


def test_datasets_take_names_and_colours_from_here():
    assert BCSSWSSSDataset.METAINFO['classes'] == BCSS_CLASSES
    assert BCSSWSSSDataset.METAINFO['palette'] == [
        [255, 0, 0], [0, 255, 0], [0, 0, 255], [153, 0, 255],
        [255, 255, 255]]
    assert LUADHistoSegDataset.METAINFO['classes'] == (
        'TE', 'NEC', 'LYM', 'TAS', 'BACK')
    assert len(LUADHistoSegDataset.METAINFO['palette']) == 5
    with pytest.raises(ValueError, match='one colour per class'):
        metainfo(('A', 'B'), [(0, 0, 0)])


def test_read_index_mask_refuses_rgb_and_missing_files(tmp_path):
    path = str(tmp_path / 'rgb.png')
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(path)
    with pytest.raises(ValueError, match='RGB image'):
        read_index_mask(path)
    with pytest.raises(FileNotFoundError, match='no such file'):
        read_index_mask(str(tmp_path / 'none.png'))
