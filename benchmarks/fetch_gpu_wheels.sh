#!/usr/bin/env bash
# Download, on a machine with internet, the wheels that benchmarks/gpu.sh
# installs on an offline GPU machine (Python 3.12 there; its torch, numpy,
# opencv, scipy, matplotlib, rich and regex are used as they are).
#   bash benchmarks/fetch_gpu_wheels.sh [DEST=.whl] [PYTHON_VERSION=3.12]
set -euo pipefail
DEST=${1:-.whl}
PYV=${2:-3.12}
mkdir -p "$DEST"
python3 -m pip download --no-deps --only-binary=:all: --python-version "$PYV" \
    --implementation cp --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$DEST" \
    mmengine==0.10.7 mmsegmentation==1.2.2 mmcv-lite==2.1.0 \
    'setuptools<81' addict yapf platformdirs termcolor prettytable \
    wcwidth ftfy
ls -1 "$DEST"
