#!/usr/bin/env python
"""Segment whole-slide images, large regions or folders of patches.

    python tools/segment_slide.py CONFIG CKPT slide.svs --out results/
    python tools/segment_slide.py CONFIG CKPT patches/ --out results/

See ``--help`` and docs/slides.md.
"""
import sys

import lpd_mmseg  # noqa: F401
from lpd_mmseg.apis.slide.cli import main

if __name__ == '__main__':
    sys.exit(main())
