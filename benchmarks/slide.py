#!/usr/bin/env python
"""Slide benchmark: throughput and peak memory of tools/segment_slide.py
against slide size.

Generated pyramidal TIFFs (lpd_mmseg.testing.slides.write_test_slide, 0.25
um/px, tissue in two rectangles covering 25 % of the slide, the rest glass)
of growing side are segmented with the tiny test model
(tests/configs/lpd_tiny.py, random weights: time and memory do not depend
on them), each in a fresh process whose peak resident memory is measured.
Reported per size: level-0 and target-grid megapixels, tiles run / skipped
by tissue detection, seconds, target-grid Mpx/s, peak RSS.

    python benchmarks/slide.py                       # 4k, 16k, 32k
    python benchmarks/slide.py --sizes 2048 4096 --mpp 0.5
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

CONFIG = osp.join(REPO, 'tests', 'configs', 'lpd_tiny.py')
BOXES = ((0.1, 0.1, 0.45, 0.45), (0.55, 0.5, 0.9, 0.9))  # 0.1225 + 0.14


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--sizes', type=int, nargs='+',
                   default=[4096, 16384, 32768],
                   help='slide sides in level-0 pixels')
    p.add_argument('--mpp', type=float, default=1.0,
                   help='target MPP (the slides are at 0.25)')
    p.add_argument('--tile', type=int, default=512)
    p.add_argument('--batch-size', type=int, default=8)
    p.add_argument('--device', default='cpu')
    p.add_argument('--out', default=osp.join(RESULTS, 'slide.json'))
    p.add_argument('--one', nargs=3, metavar=('SLIDE', 'CKPT', 'OUT'),
                   help=argparse.SUPPRESS)
    return p


def one(args) -> None:
    """Child process: segment one slide, print a JSON line."""
    reset_peak_rss()
    from lpd_mmseg.apis.slide import (
        TileOptions,
        build_slide_model,
        segment_slide,
    )
    slide, ckpt, out = args.one
    model = build_slide_model(CONFIG, ckpt, args.device)
    start = time.time()
    outputs = segment_slide(model, slide, out, TileOptions(
        tile=args.tile, overlap=64, batch_size=args.batch_size, workers=2),
        mpp=args.mpp)
    seconds = time.time() - start
    run = json.load(open(outputs['run.json']))
    print(json.dumps(dict(seconds=round(seconds, 2),
                          peak_rss_mb=round(peak_rss_mb(), 1),
                          tiles=run['tiles'], target=run['target'])))


def tiny_checkpoint(path: str) -> str:
    import torch

    from lpd_mmseg.apis import init_segmentor
    model = init_segmentor(CONFIG)
    torch.save(dict(state_dict=model.state_dict(), meta={}), path)
    return path


def main():
    args = build_parser().parse_args()
    if args.one:
        return one(args)
    from lpd_mmseg.testing.slides import write_test_slide
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = tiny_checkpoint(osp.join(tmp, 'tiny.pth'))
        for size in args.sizes:
            slide = osp.join(tmp, f'slide_{size}.tif')
            start = time.time()
            write_test_slide(slide, (size, size), BOXES, mpp=0.25,
                             compression=None)
            made = time.time() - start
            env = dict(os.environ, PYTHONPATH=REPO)
            out = subprocess.run(
                [sys.executable, __file__, '--one', slide, ckpt,
                 osp.join(tmp, 'out'), '--mpp', str(args.mpp), '--tile',
                 str(args.tile), '--batch-size', str(args.batch_size),
                 '--device', args.device], cwd=REPO, env=env,
                capture_output=True, text=True)
            if out.returncode != 0:
                raise RuntimeError(out.stderr[-3000:])
            res = json.loads(out.stdout.strip().splitlines()[-1])
            width, height = res['target']['size']
            row = dict(
                level0_side=size, level0_mpx=round(size * size / 1e6, 1),
                target_mpp=args.mpp, target_mpx=round(width * height / 1e6,
                                                      1),
                tiles_run=res['tiles']['run'],
                tiles_skipped=res['tiles']['skipped'],
                seconds=res['seconds'],
                target_mpx_per_s=round(width * height / 1e6
                                       / res['seconds'], 2),
                peak_rss_mb=res['peak_rss_mb'],
                slide_file_mb=round(os.path.getsize(slide) / 2**20, 1),
                seconds_to_generate=round(made, 1))
            rows.append(row)
            print(json.dumps(row), flush=True)
            os.remove(slide)
            import shutil
            shutil.rmtree(osp.join(tmp, 'out'), ignore_errors=True)
    write_json(args.out, dict(
        command=command_line(), environment=environment(),
        config=osp.relpath(CONFIG, REPO), tile=args.tile,
        batch_size=args.batch_size, tissue_boxes=BOXES, results=rows))
    print(f'results written to {args.out}')


if __name__ == '__main__':
    main()
