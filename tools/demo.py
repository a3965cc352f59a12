#!/usr/bin/env python
"""The `make demo` job: generate data, train LPD on CPU, evaluate, report.

    python tools/demo.py                      # defaults, a few minutes
    python tools/demo.py --iters 200 --num-train 200
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from lpd_mmseg.apis.demo import main  # noqa: E402

if __name__ == '__main__':
    main()
