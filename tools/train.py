#!/usr/bin/env python
"""Train a segmentor from a config (same flags as MMSeg's tools/train.py).

    python tools/train.py CONFIG  # configs/lpd/lpd_mit-b1_1xb10-18.7k_...py
    python tools/train.py CONFIG --resume            # latest in work dir
    python tools/train.py CONFIG --amp --cfg-options train_cfg.max_iters=5000
"""
import lpd_mmseg  # noqa: F401  (compat fixes + registration)
from lpd_mmseg.apis.launch import train

if __name__ == '__main__':
    train()
