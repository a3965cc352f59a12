#!/usr/bin/env python
"""Scale benchmark: big images and big folders.

1. Tiled (``mode='slide'``) inference on square images of growing size with
   the paper model (MiT-B1, random weights: memory and time do not depend
   on them): peak resident memory and seconds per image, each size in a
   fresh process; plus the clear refusal of whole-image mode on the largest.
2. Scanning a training folder of 25,000 names (the real BCSS-WSSS has
   23,422) and a val/test folder of 5,000 image/mask pairs: seconds to build
   the data set (names are parsed, files are not opened).

    python benchmarks/scale.py
    python benchmarks/scale.py --sizes 1024 2048 --device cuda
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from benchmarks.common import (  # noqa: E402
    REPO,
    RESULTS,
    command_line,
    environment,
    peak_rss_mb,
    reset_peak_rss,
    write_json,
)

CONFIG = 'configs/lpd/lpd_mit-b1_1xb10-18.7k_bcss-wsss-224x224.py'


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--quick', action='store_true',
                        help='smoke run: one 256 px image, 500 names')
    parser.add_argument('--sizes', nargs='+', type=int,
                        default=[512, 1024, 2048, 4096])
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--num-train-names', type=int, default=25000)
    parser.add_argument('--num-pairs', type=int, default=5000)
    parser.add_argument('--out', default=osp.join(RESULTS, 'scale.json'))
    parser.add_argument('--child-size', type=int, help=argparse.SUPPRESS)
    return parser


def child(size, device):
    """Measure one image size in this (fresh) process."""
    import numpy as np
    import torch

    import lpd_mmseg  # noqa: F401
    from lpd_mmseg.apis import init_segmentor, predict
    options = {'model.test_cfg.mode': 'slide',
               'model.test_cfg.crop_size': (224, 224),
               'model.test_cfg.stride': (192, 192)}
    model = init_segmentor(osp.join(REPO, CONFIG), None, device=device,
                           cfg_options=options)
    image = np.random.default_rng(0).integers(0, 256, (size, size, 3),
                                              dtype=np.uint8)
    torch.set_grad_enabled(False)
    reset_peak_rss()
    base = peak_rss_mb()
    start = time.perf_counter()
    out = predict(model, [image])[0]
    seconds = time.perf_counter() - start
    assert tuple(out.pred_sem_seg.data.shape[1:]) == (size, size)
    result = dict(size=size, seconds=round(seconds, 2),
                  rss_after_model_mb=round(base, 1),
                  peak_rss_mb=round(peak_rss_mb(), 1),
                  image_mb=round(size * size * 3 / 2**20, 1))
    if device.startswith('cuda'):
        result['peak_gpu_mem_mb'] = round(
            torch.cuda.max_memory_allocated() / 2**20, 1)
    if size >= 4096:
        whole = init_segmentor(osp.join(REPO, CONFIG), None, device=device)
        try:
            predict(whole, [image])
        except ValueError as e:
            result['whole_mode_error'] = str(e)
    print(json.dumps(result))


def bench_big_images(args):
    rows = []
    for size in args.sizes:
        print(f'[scale] slide inference {size}x{size} ...', flush=True)
        out = subprocess.run(
            [sys.executable, __file__, '--child-size', str(size), '--device',
             args.device], cwd=REPO, capture_output=True, text=True,
            env=dict(os.environ, PYTHONPATH=REPO))
        if out.returncode != 0:
            raise RuntimeError(out.stderr[-3000:])
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    return rows


def _placeholder(path):
    # one byte: the scan measures listing and name parsing, and refuses
    # 0-byte files as unreadable
    with open(path, 'wb') as f:
        f.write(b'\0')


def bench_scan(args):
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS

    import lpd_mmseg  # noqa: F401
    init_default_scope('mmseg')
    root = tempfile.mkdtemp(prefix='lpd_scan_')
    train = osp.join(root, 'training')
    os.makedirs(train)
    for i in range(args.num_train_names):
        label = format(1 + i % 15, '04b')
        name = (f'TCGA-A{i % 9}-A0SK-DX1_xmin{i * 7}_ymin{i * 13}_'
                f'MPP-0.2500+{i % 40}[{label}].png')
        _placeholder(osp.join(train, name))
    for sub in ('img', 'mask'):
        os.makedirs(osp.join(root, 'test', sub))
        for i in range(args.num_pairs):
            _placeholder(osp.join(root, 'test', sub, f'patch_{i:05d}.png'))
    timings = {}
    for split, count in (('train', args.num_train_names),
                         ('test', args.num_pairs)):
        start = time.perf_counter()
        ds = DATASETS.build(dict(type='BCSSWSSSDataset', data_root=root,
                                 split=split, pipeline=[]))
        seconds = time.perf_counter() - start
        assert len(ds) == count
        timings[split] = dict(files=count, seconds=round(seconds, 3))
        print(f'[scale] scan {split}: {count} samples in {seconds:.2f} s',
              flush=True)
    return timings


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.quick:
        args.sizes, args.num_train_names, args.num_pairs = [256], 500, 100
    if args.child_size:
        child(args.child_size, args.device)
        return
    os.chdir(REPO)
    payload = dict(command=command_line(), environment=environment(),
                   settings=dict(config=CONFIG, crop=224, stride=192,
                                 device=args.device))
    payload['dataset_scan'] = bench_scan(args)
    payload['slide_inference'] = bench_big_images(args)
    write_json(args.out, payload)
    print(f'[scale] written to {args.out}')
    return payload


if __name__ == '__main__':
    main()
