"""``make demo``: generate data, train LPD on CPU, evaluate, report.

Every step runs the same command a user would type (printed before it
runs), so the demo doubles as a walkthrough.
"""
import argparse
import glob
import json
import os
import os.path as osp
import subprocess
import sys
import time
from typing import List, Optional

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEMO_CONFIG = 'configs/lpd/lpd_mit-tiny_1xb8-600_synthetic-bcss-128x128.py'


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description='Generate a small data set in the BCSS-WSSS layout, '
        'train LPD on it on the CPU, evaluate on the test split (honest '
        'protocol, then the paper protocol) and say where everything is.')
    parser.add_argument('--work-dir', default='work_dirs/demo',
                        help='parent folder; each run gets its own '
                        'run_<timestamp> folder inside, so nothing from an '
                        'earlier run is overwritten')
    parser.add_argument('--data-root', default='data/synthetic-bcss-demo',
                        help='where the generated data set goes (reused when '
                        'it exists with the same parameters)')
    parser.add_argument('--config', default=DEMO_CONFIG)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--num-train', type=int, default=600)
    parser.add_argument('--num-val', type=int, default=100)
    parser.add_argument('--num-test', type=int, default=100)
    parser.add_argument('--size', type=int, default=128)
    parser.add_argument('--iters', type=int, default=None,
                        help="training iterations (default: the config's)")
    return parser


def _run(step: str, args: List[str]) -> None:
    shown = ' '.join(a if ' ' not in a else repr(a) for a in args)
    print(f'\n=== {step}\n$ python {shown}\n', flush=True)
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep +
               os.environ.get('PYTHONPATH', ''))
    result = subprocess.run([sys.executable] + args, cwd=REPO, env=env)
    if result.returncode != 0:
        raise SystemExit(f'demo step failed: {step} (exit code '
                         f'{result.returncode}); see the output above')


def _latest_metrics(work_dir: str) -> dict:
    runs = sorted(glob.glob(osp.join(work_dir, '*', '*.json')),
                  key=osp.getmtime)
    if not runs:
        raise SystemExit(f'no metrics were written under {work_dir}')
    with open(runs[-1]) as f:
        return json.loads(f.read().strip().splitlines()[-1])


def format_table(title: str, metrics: dict) -> str:
    """A plain-text table of per-class IoU/Dice and the summary metrics."""
    classes = [k.split('.', 1)[1] for k in metrics if k.startswith('IoU.')]
    lines = [title, f"{'class':<8}{'IoU':>8}{'Dice':>8}"]
    for name in classes:
        lines.append(f"{name:<8}{metrics[f'IoU.{name}']:>8.2f}"
                     f"{metrics[f'Dice.{name}']:>8.2f}")
    lines.append(f"mIoU {metrics['mIoU']:.2f}  mDice {metrics['mDice']:.2f}"
                 f"  FwIoU {metrics['FwIoU']:.2f}  aAcc {metrics['aAcc']:.2f}"
                 '  (means over the 4 tissue classes)')
    return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> dict:
    args = build_parser().parse_args(argv)
    start = time.time()
    run_dir = osp.join(args.work_dir, time.strftime('run_%Y%m%d_%H%M%S'))
    train_dir = osp.join(run_dir, 'train')
    data_opts = [f'{split}_dataloader.dataset.data_root={args.data_root}'
                 for split in ('train', 'val', 'test')]

    _run('1/4 generate the data set (BCSS-WSSS layout)', [
        'tools/make_synthetic_bcss.py', '--out', args.data_root, '--seed',
        str(args.seed), '--num-train', str(args.num_train), '--num-val',
        str(args.num_val), '--num-test', str(args.num_test), '--size',
        str(args.size)
    ])
    train_opts = list(data_opts) + [f'randomness.seed={args.seed}']
    if args.iters is not None:
        train_opts += [f'train_cfg.max_iters={args.iters}',
                       f'param_scheduler.1.end={args.iters}']
    _run('2/4 train LPD (image-level labels only)', [
        'tools/train.py', args.config, '--work-dir', train_dir,
        '--cfg-options'] + train_opts)
    best = sorted(glob.glob(osp.join(train_dir, 'best_mIoU_iter_*.pth')))
    checkpoint = best[-1] if best else sorted(
        glob.glob(osp.join(train_dir, 'iter_*.pth')), key=osp.getmtime)[-1]

    honest_dir = osp.join(run_dir, 'test_honest')
    _run('3/4 evaluate on the test split, honest protocol (the model gates '
         'classes with its own predictions)', [
             'tools/test.py', args.config, checkpoint, '--work-dir',
             honest_dir, '--show-dir', 'overlays', '--out',
             osp.join(honest_dir, 'masks'), '--cfg-options'] + data_opts)
    paper_dir = osp.join(run_dir, 'test_paper')
    _run('4/4 evaluate with the paper protocol (TTA, oracle gating from the '
         'test masks, dense CRF)', [
             'tools/test.py', args.config, checkpoint, '--tta', '--gate',
             'oracle', '--crf', 'torch', '--work-dir', paper_dir,
             '--cfg-options'] + data_opts)

    honest = _latest_metrics(honest_dir)
    paper = _latest_metrics(paper_dir)
    logs = sorted(glob.glob(osp.join(train_dir, '*', '*.log')))
    print('\n' + format_table(
        'Test split, honest protocol (predicted-label gating, no CRF, '
        "background 'count'):", honest))
    print('\n' + format_table(
        'Test split, paper protocol (TTA + oracle gating + CRF, background '
        "'count'):", paper))
    print(f'\nDemo finished in {(time.time() - start) / 60:.1f} min.\n'
          f'  checkpoint : {checkpoint}\n'
          f'  train log  : {logs[-1] if logs else train_dir}\n'
          f'  overlays   : {osp.join(honest_dir, "overlays")}\n'
          f'  masks      : {osp.join(honest_dir, "masks")}\n'
          f'  data set   : {args.data_root}')
    summary = dict(checkpoint=checkpoint, honest=honest, paper=paper,
                   run_dir=run_dir, minutes=(time.time() - start) / 60)
    with open(osp.join(run_dir, 'demo_summary.json'), 'w') as f:
        json.dump(summary, f, indent=2)
    return summary
