import os
import os.path as osp

import numpy as np
import pytest

from lpd_mmseg.apis.slide.writers import (
    LevelFiles,
    StagedFolder,
    area_rows,
    pyramid_sizes,
    write_pyramid_tiff,
)


def test_pyramid_sizes():
    assert pyramid_sizes(300, 200) == [(300, 200)]
    assert pyramid_sizes(1000, 600) == [(1000, 600), (500, 300)]
    assert pyramid_sizes(1100, 600) == [(1100, 600), (550, 300),
                                        (275, 150)]
    assert pyramid_sizes(2049, 3) == [(2049, 3), (1025, 2), (513, 1),
                                      (257, 1)]


def _levels(tmp_path, labels, block=37):
    levels = LevelFiles(str(tmp_path), labels.shape[1], labels.shape[0])
    for y in range(0, labels.shape[0], block):
        levels.append(y, labels[y:y + block])
    levels.close()
    return levels


def test_level_files_hold_nearest_downsampled_levels(tmp_path):
    labels = np.random.default_rng(0).integers(0, 5, (1300, 1100), np.uint8)
    levels = _levels(tmp_path, labels)
    assert len(levels.sizes) == 3
    for k in range(3):
        np.testing.assert_array_equal(levels.read_level(k),
                                      labels[::2 ** k, ::2 ** k])
    with pytest.raises(ValueError, match='in order'):
        LevelFiles(str(tmp_path), 10, 10).append(3, np.zeros((2, 10)))


def test_pyramidal_tiff_is_read_by_openslide_with_its_mpp(tmp_path):
    import openslide
    labels = np.random.default_rng(1).integers(0, 5, (500, 1000), np.uint8)
    levels = _levels(tmp_path, labels)
    path = str(tmp_path / 'labels.tif')
    write_pyramid_tiff(path, levels, mpp=0.5)
    slide = openslide.OpenSlide(path)
    assert slide.level_count == 2
    assert slide.level_dimensions == ((1000, 500), (500, 250))
    assert float(slide.properties['openslide.mpp-x']) == pytest.approx(0.5)
    for level in (0, 1):
        w, h = slide.level_dimensions[level]
        read = np.asarray(slide.read_region((0, 0), level, (w, h)))[..., 0]
        np.testing.assert_array_equal(read, labels[::2 ** level,
                                                   ::2 ** level])


def test_area_rows_hand_values():
    rows = area_rows(np.array([300, 100, 0, 600]), ['A', 'B', 'C', 'BACK'],
                     mpp=0.5)
    # 0.25 um^2 per pixel: 300 px = 75 um^2 = 7.5e-5 mm^2
    assert rows[0] == {'class': 'A', 'pixels': 300, 'area_mm2': 7.5e-05,
                       'share_of_tissue': 0.75}
    assert rows[1]['share_of_tissue'] == 0.25
    assert rows[2]['share_of_tissue'] == 0.0
    assert rows[3]['share_of_tissue'] == ''
    none = area_rows(np.array([0, 0, 5]), ['A', 'B', 'BACK'], mpp=1.0)
    assert none[0]['share_of_tissue'] == 0.0


def test_staged_folder_appears_only_on_commit(tmp_path):
    final = str(tmp_path / 'slide')
    staged = StagedFolder(final)
    open(staged.file('a.txt'), 'w').write('new')
    assert not osp.exists(final)
    staged.commit()
    assert open(osp.join(final, 'a.txt')).read() == 'new'
    with pytest.raises(FileExistsError, match='--overwrite'):
        StagedFolder(final)
    again = StagedFolder(final, overwrite=True)
    open(again.file('b.txt'), 'w').write('newer')
    assert osp.exists(osp.join(final, 'a.txt'))  # old kept until commit
    again.commit()
    assert sorted(os.listdir(final)) == ['b.txt']
    discarded = StagedFolder(str(tmp_path / 'other'))
    discarded.discard()
    assert sorted(os.listdir(tmp_path)) == ['slide']
