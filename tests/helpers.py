"""Writers for tiny data sets in the real on-disk layouts."""
import glob
import json
import os
import os.path as osp

import numpy as np
from PIL import Image

from lpd_mmseg.datasets.palette import BCSS_PALETTE, palette_bytes


def write_rgb(path, size=32, seed=0):
    rng = np.random.default_rng(seed)
    os.makedirs(osp.dirname(path), exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
                    ).save(path)


def write_mask(path, mask):
    """BCSS palette PNG of any uint8 values, also ones without a colour
    (``save_palette_mask`` refuses those; the loaders' checks need them)."""
    os.makedirs(osp.dirname(path), exist_ok=True)
    img = Image.fromarray(np.asarray(mask, dtype=np.uint8), mode='P')
    img.putpalette(palette_bytes(BCSS_PALETTE))
    img.save(path)


def make_split(root, split, masks, size=32):
    """val/test split: ``masks`` maps stem -> (H, W) array."""
    for i, (stem, mask) in enumerate(masks.items()):
        write_rgb(osp.join(root, split, 'img', stem + '.png'), size, i)
        write_mask(osp.join(root, split, 'mask', stem + '.png'), mask)


def make_training(root, names, folder='training', size=32):
    for i, name in enumerate(names):
        write_rgb(osp.join(root, folder, name), size, i)


def latest_test_metrics(work_dir):
    """Metrics of the latest ``tools/test.py`` run in ``work_dir`` (the
    json mmengine writes in its timestamped folder)."""
    runs = sorted(glob.glob(osp.join(work_dir, '*', '*.json')),
                  key=osp.getmtime)
    assert runs, f'no metrics json under {work_dir}'
    with open(runs[-1]) as f:
        return json.loads(f.read().strip().splitlines()[-1])


def metric_keys(metrics):
    """The metric entries of a metrics dict (no timing fields)."""
    return {k: v for k, v in metrics.items()
            if k in ('mIoU', 'mDice', 'FwIoU', 'aAcc') or '.' in k}
