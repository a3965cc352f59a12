import glob
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.structures import PixelData
from mmseg.structures import SegDataSample
from PIL import Image

from lpd_mmseg.visualization import TissueSegVisualizer

from conftest import TINY_CONFIG, data_root_options, run_tool

META = dict(classes=('TUM', 'STR', 'BACK'),
            palette=[[255, 0, 0], [0, 255, 0], [255, 255, 255]])


def test_gt_and_prediction_panels(tmp_path):
    vis = TissueSegVisualizer(name='tissue_vis_test',
                              vis_backends=[dict(type='LocalVisBackend')],
                              save_dir=str(tmp_path))
    vis.dataset_meta = META
    sample = SegDataSample(metainfo=dict(img_path='a/b/patch.png'))
    gt = torch.zeros(1, 40, 40, dtype=torch.long)
    gt[0, :, 20:] = 255  # ignore is drawn as background
    sample.gt_sem_seg = PixelData(data=gt)
    sample.pred_sem_seg = PixelData(data=torch.ones(1, 40, 40,
                                                    dtype=torch.long))
    out = str(tmp_path / 'fig.png')
    vis.add_datasample('x', np.full((40, 40, 3), 230, np.uint8), sample,
                       out_file=out)
    fig = np.asarray(Image.open(out))
    assert fig.shape[1] == 2 * 40 * 10 + 8  # two enlarged panels
    with pytest.raises(ValueError, match='classes'):
        vis.dataset_meta = {}
        vis.add_datasample('x', np.zeros((4, 4, 3), np.uint8), sample)


@pytest.mark.slow
def test_tools_test_show_dir_uses_the_overlays(tiny_trained, tiny_data,
                                               tmp_path):
    work_dir, ckpt = tiny_trained
    show = str(tmp_path / 'show')
    run_tool(['tools/test.py', TINY_CONFIG, ckpt, '--work-dir',
              str(tmp_path / 'w'), '--show-dir', show, '--cfg-options'] +
             data_root_options(tiny_data))
    files = sorted(glob.glob(osp.join(show, '**', '*.png'), recursive=True))
    assert len(files) == 6  # one per test image
    fig = np.asarray(Image.open(files[0]))
    # 64 px test images: two panels of 384 px, titles and a legend
    assert fig.shape[1] == 2 * 384 + 8 and fig.shape[0] > 384
