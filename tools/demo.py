#!/usr/bin/env python
"""``make demo``: generate data, train LPD on the CPU, evaluate, report.

    python tools/demo.py                      # defaults, a few minutes
    python tools/demo.py --iters 200 --num-train 200
    python tools/demo.py --two-stage          # + the second stage

``--two-stage`` (``make two-stage``) adds the honest-by-construction route:
pseudo-masks of the training patches gated by their own file-name labels,
a plain SegFormer trained on them, and its test-split numbers, which need
no class gate and read no test mask.

Every step runs the command a user would type (shown before it runs), so
the demo doubles as a walkthrough.  The console gets one header per step,
a few progress lines, the validation mIoU, then the metric tables and the
path of every output.  Everything the steps print (config dumps, hook
lists, full training logs) goes to ``<run folder>/logs/<step>.log``.
"""
import argparse
import glob
import json
import os
import os.path as osp
import re
import subprocess
import sys
import time
from typing import List, Optional

# This script lives in the repository's tools/ and runs the sibling tools.
REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO not in sys.path:  # for the few lpd_mmseg helpers imported below
    sys.path.insert(0, REPO)
DEMO_CONFIG = 'configs/lpd/lpd_mit-tiny_1xb8-600_synthetic-bcss-128x128.py'
STAGE2_CONFIG = ('configs/second_stage/'
                 'segformer_mit-tiny_1xb8-1200_synthetic-bcss-pseudo-128x128.py')
#: ``progress <what>: <done>/<total> (<percent>%)...`` (ProgressLoggerHook,
#: lpd_mmseg.engine.progress).
PROGRESS_LINE = re.compile(r'progress (\w+): \d+/\d+ \((\d+)%\).*')
VAL_LINE = re.compile(r'Iter\(val\) \[\d+/\d+\].*?mIoU: ([\d.]+)')


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
    parser.add_argument('--two-stage', action='store_true',
                        help='also write pseudo-masks of the training '
                        'patches (gated by their file-name labels), train '
                        'the second-stage SegFormer on them and evaluate it '
                        '(no gate, no test mask read)')
    parser.add_argument('--stage2-config', default=STAGE2_CONFIG)
    parser.add_argument('--stage2-iters', type=int, default=None,
                        help="second-stage iterations (default: the "
                        "config's)")
    parser.add_argument('--stage2-unweighted', action='store_true',
                        help='train the second stage with a plain '
                        'cross-entropy (default: classes weighted by the '
                        'inverse square root of their pseudo-mask pixel '
                        'share, so that rare classes are still predicted)')
    parser.add_argument('--every', type=int, default=25,
                        help='show progress every this many percent '
                        '(the step logs hold every line)')
    return parser


class ConsoleFilter:
    """Which lines of a step's output reach the console.

    A progress line each time a loop passes a multiple of ``every``
    percent (so always the last one) and the validation mIoU; the rest
    only goes to the step's log file.
    """

    def __init__(self, every: int = 25):
        self.every = max(1, int(every))
        self.shown = {}

    def __call__(self, line: str) -> Optional[str]:
        match = PROGRESS_LINE.search(line)
        if match:
            what, percent = match.group(1), int(match.group(2))
            if what == 'val':
                return None  # the val mIoU line follows each pass
            last = self.shown.get(what, 0)
            if percent < last:  # a new pass of the same loop
                last = 0
            if percent // self.every > last // self.every:
                self.shown[what] = percent
                return '  ' + match.group(0)
            return None
        match = VAL_LINE.search(line)
        if match:
            return f'  val mIoU {match.group(1)}'
        return None


def run_step(step: str, args: List[str], log_path: str,
             every: int) -> None:
    """Run ``python args`` in the repository; log all, echo a little."""
    shown = ' '.join(a if ' ' not in a else repr(a) for a in args)
    print(f'\n[{step}]\n$ python {shown}', flush=True)
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep +
               os.environ.get('PYTHONPATH', ''), PYTHONUNBUFFERED='1')
    keep = ConsoleFilter(every)
    with open(log_path, 'w') as log:
        log.write(f'$ python {shown}\n')
        proc = subprocess.Popen([sys.executable] + args, cwd=REPO, env=env,
                                stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True,
                                bufsize=1)
        for line in proc.stdout:
            log.write(line)
            echo = keep(line.rstrip('\n'))
            if echo is not None:
                print(echo, flush=True)
        code = proc.wait()
    if code != 0:
        with open(log_path) as f:
            tail = f.read().splitlines()[-30:]
        print('\n'.join(tail), file=sys.stderr)
        raise SystemExit(f'demo step failed: {step} (exit code {code}); the '
                         f'last lines are above, the full output is in '
                         f'{log_path}')


def _latest_metrics(work_dir: str) -> dict:
    runs = sorted(glob.glob(osp.join(work_dir, '*', '*.json')),
                  key=osp.getmtime)
    if not runs:
        raise SystemExit(f'no metrics were written under {work_dir}')
    with open(runs[-1]) as f:
        return json.loads(f.read().strip().splitlines()[-1])


def _latest(pattern: str) -> str:
    found = sorted(glob.glob(pattern), key=osp.getmtime)
    return found[-1] if found else '(none)'


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
    log_dir = osp.join(run_dir, 'logs')
    os.makedirs(log_dir, exist_ok=True)
    train_dir = osp.join(run_dir, 'train')
    data_opts = [f'{split}_dataloader.dataset.data_root={args.data_root}'
                 for split in ('train', 'val', 'test')]
    print(f'Demo run folder: {run_dir} (step logs in {log_dir})')

    steps = 7 if args.two_stage else 4

    def step(number: int, name: str, title: str, tool_args: List[str]):
        run_step(f'{number}/{steps} {title}', tool_args,
                 osp.join(log_dir, f'{number}_{name}.log'), args.every)

    step(1, 'data', 'generate the data set (BCSS-WSSS layout)', [
        'tools/make_synthetic_bcss.py', '--out', args.data_root, '--seed',
        str(args.seed), '--num-train', str(args.num_train), '--num-val',
        str(args.num_val), '--num-test', str(args.num_test), '--size',
        str(args.size)
    ])
    step(2, 'train', 'train LPD (image-level labels only)', [
        'tools/train.py', args.config, '--work-dir', train_dir,
        '--cfg-options'] + data_opts + _schedule_opts(args.seed, args.iters))
    checkpoint = _checkpoint_of(train_dir)

    honest_dir = osp.join(run_dir, 'test_honest')
    step(3, 'test_honest', 'evaluate on the test split, honest protocol '
         '(the model gates classes with its own predictions)', [
             'tools/test.py', args.config, checkpoint, '--work-dir',
             honest_dir, '--show-dir', 'overlays', '--out',
             osp.join(honest_dir, 'masks'), '--cfg-options'] + data_opts)
    paper_dir = osp.join(run_dir, 'test_paper')
    step(4, 'test_paper', 'evaluate with the paper protocol (TTA, oracle '
         'gating from the test masks, dense CRF)', [
             'tools/test.py', args.config, checkpoint, '--tta', '--gate',
             'oracle', '--crf', 'torch', '--work-dir', paper_dir,
             '--cfg-options'] + data_opts)

    outputs = []
    stage2 = None
    if args.two_stage:
        stage2, outputs = _second_stage(args, step, run_dir, checkpoint,
                                        data_opts)

    honest = _latest_metrics(honest_dir)
    paper = _latest_metrics(paper_dir)
    summary_path = osp.join(run_dir, 'demo_summary.json')
    minutes = (time.time() - start) / 60
    result = dict(checkpoint=checkpoint, honest=honest, paper=paper,
                  run_dir=run_dir, minutes=minutes)
    if stage2 is not None:
        result['stage2'] = stage2
    with open(summary_path, 'w') as f:
        json.dump(result, f, indent=2)
    print('\n' + format_table(
        'Test split, honest protocol (predicted-label gating, no CRF, '
        "background 'count'):", honest))
    print('\n' + format_table(
        'Test split, paper protocol (TTA + oracle gating + CRF, background '
        "'count'):", paper))
    if stage2 is not None:
        print('\n' + format_table(
            'Test split, two-stage route (SegFormer on label-gated '
            "pseudo-masks, no gate, no CRF, background 'count'):",
            stage2['metrics']))
    config_name = osp.basename(args.config)
    outputs = [
        ('run folder', run_dir),
        ('step logs', log_dir),
        ('checkpoint', checkpoint),
        ('train log', _latest(osp.join(train_dir, '*', '*.log'))),
        ('config dump', osp.join(train_dir, config_name)),
        ('honest metrics', _latest(osp.join(honest_dir, '*', '*.json'))),
        ('paper metrics', _latest(osp.join(paper_dir, '*', '*.json'))),
        ('overlays', osp.join(honest_dir, 'overlays')),
        ('masks', osp.join(honest_dir, 'masks')),
        ('data set', args.data_root),
    ] + outputs + [('summary', summary_path)]
    print(f'\nDemo finished in {minutes:.1f} min.')
    for name, path in outputs:
        print(f'  {name:<16}: {path}')
    return result


def _schedule_opts(seed: int, iters: Optional[int]) -> List[str]:
    """Seed and, for another length than the config's, the iterations
    and scaled warm-up (:func:`lpd_mmseg.apis.schedule.schedule_options`)."""
    opts = [f'randomness.seed={seed}']
    if iters is not None:
        from lpd_mmseg.apis.schedule import schedule_options
        opts += schedule_options(iters)
    return opts


def _checkpoint_of(train_dir: str) -> str:
    """The best-by-val checkpoint of a run, else its latest one."""
    best = sorted(glob.glob(osp.join(train_dir, 'best_mIoU_iter_*.pth')))
    return best[-1] if best else _latest(osp.join(train_dir, 'iter_*.pth'))


def _second_stage(args, step, run_dir: str, checkpoint: str,
                  data_opts: List[str]):
    """Steps 5-7: label-gated pseudo-masks, second-stage training, test.

    Returns:
        tuple: (dict with the stage-2 checkpoint and test metrics, list of
        (name, path) outputs).
    """
    masks = osp.abspath(osp.join(run_dir, 'pseudo_masks'))
    step(5, 'pseudo_masks', 'pseudo-masks of the training patches, gated '
         'by their file-name labels', [
             'tools/make_pseudo_masks.py', args.config, checkpoint, '--out',
             masks, '--data-root', args.data_root, '--gate', 'labels'])
    train_dir = osp.join(run_dir, 'stage2_train')
    stage2_opts = [
        f'train_dataloader.dataset.data_prefix.seg_map_path={masks}']
    if not args.stage2_unweighted:
        from lpd_mmseg.apis.pseudo_mask_io import (
            class_weight_option,
            stage2_class_weight,
        )
        stage2_opts.append(class_weight_option(stage2_class_weight(masks)))
    step(6, 'stage2_train', 'train the second stage (SegFormer on the '
         'pseudo-masks, classes weighted by 1/sqrt(pixel share))', [
             'tools/train.py', args.stage2_config, '--work-dir', train_dir,
             '--cfg-options'] + data_opts + stage2_opts +
         _schedule_opts(args.seed, args.stage2_iters))
    stage2_ckpt = _checkpoint_of(train_dir)
    test_dir = osp.join(run_dir, 'test_stage2')
    step(7, 'test_stage2', 'evaluate the second stage on the test split '
         '(no gate, no test mask read)', [
             'tools/test.py', args.stage2_config, stage2_ckpt, '--work-dir',
             test_dir, '--show-dir', 'overlays', '--out',
             osp.join(test_dir, 'masks'), '--cfg-options'] + data_opts)
    outputs = [('pseudo-masks', masks), ('stage-2 ckpt', stage2_ckpt),
               ('stage-2 metrics', _latest(osp.join(test_dir, '*', '*.json'))),
               ('stage-2 overlays', osp.join(test_dir, 'overlays'))]
    return dict(checkpoint=stage2_ckpt,
                metrics=_latest_metrics(test_dir)), outputs


if __name__ == '__main__':
    main()
