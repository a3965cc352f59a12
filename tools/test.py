#!/usr/bin/env python
"""Evaluate a checkpoint (same flags as MMSeg's tools/test.py, plus --gate,
--crf and --background).

    python tools/test.py CONFIG CKPT                       # honest protocol
    python tools/test.py CONFIG CKPT --tta --crf torch     # paper pipeline
    python tools/test.py CONFIG CKPT --gate oracle         # published tables
    python tools/test.py CONFIG CKPT --show-dir vis --out preds
"""
import lpd_mmseg  # noqa: F401
from lpd_mmseg.apis.launch import test

if __name__ == '__main__':
    test()
