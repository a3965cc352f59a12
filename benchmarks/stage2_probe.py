#!/usr/bin/env python
"""Stage-2 probe: can the second stage's own output close the honest gap?

Runs on the finished runs of ``benchmarks/quality.py`` (same work dir and
data root; nothing of them is changed) and, per seed, compares on the test
split:

- ``stage2-lpd-bal`` (or the ``--stage2`` method): the second stage as it
  is;
- ``stage2-self>t``: the same, with every class that covers less than a
  share ``t`` of the image's stage-2 mask removed from its argmax (a
  presence gate from the model's own output);
- ``lpd-s2gate>t``: the first-stage LPD's CAMs, tissue prior on, gated by
  the classes that cover at least ``t`` of the stage-2 mask (instead of
  LPD's own classifier);
- ``fusion``: stage-2 softmax times the soft-max of LPD's ungated scores;
- ``lpd-predicted`` and ``lpd-oracle`` (tissue prior on) for reference;
  only ``lpd-oracle`` reads the test masks.

With ``--warm-start`` it first trains (or reuses) ``stage2-lpd-warm``: the
balanced second stage whose backbone starts from the first-stage LPD
checkpoint's backbone instead of random weights
(``benchmarks/configs/quality_stage2_warm.py``), and adds its row.

    python benchmarks/stage2_probe.py --seeds 0 1 2
    python benchmarks/stage2_probe.py --seeds 0 --warm-start
"""
import argparse
import os
import os.path as osp
import sys

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from benchmarks import quality  # noqa: E402
from benchmarks.common import (  # noqa: E402
    REPO,
    RESULTS,
    command_line,
    environment,
    write_json,
)

SHARES = (0.02, 0.05, 0.1)
WARM_CONFIG = osp.join('benchmarks', 'configs', 'quality_stage2_warm.py')


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    parser.add_argument('--iters', type=int, default=600)
    parser.add_argument('--data-root', default='data/bench-quality')
    parser.add_argument('--work-dir', default='work_dirs/bench_quality')
    parser.add_argument('--stage2', default='stage2-lpd-bal',
                        choices=sorted(quality.STAGE2_SOURCES),
                        help='the finished second-stage method probed')
    parser.add_argument('--warm-start', action='store_true',
                        help='also train (or reuse) the second stage '
                        'started from the first-stage backbone')
    parser.add_argument('--out',
                        default=osp.join(RESULTS, 'stage2_probe.json'))
    return parser


def class_shares(mask: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(C,)``: the share of the pixels of ``mask (H, W)`` that hold each
    of the classes ``0..C-1`` (other values, e.g. background, count in
    the total only)."""
    counts = torch.bincount(mask.reshape(-1).long().clamp(0, num_classes),
                            minlength=num_classes + 1)[:num_classes]
    return counts.double() / mask.numel()


def share_gate(shares: torch.Tensor, min_share: float) -> torch.Tensor:
    """``(C,)`` 0/1: the classes whose share reaches ``min_share``; the
    largest class is always on."""
    gate = (shares >= min_share).float()
    gate[shares.argmax()] = 1
    return gate


def warm_start(args, seed):
    """Train (or reuse) the warm-started balanced second stage."""
    _, options, _ = quality.pseudo_masks_for(args, 'stage2-lpd-bal', seed)
    first, _, _ = quality.train(args, 'lpd', 'lpd', seed)
    return quality.train(
        args, 'stage2-lpd-warm', 'stage2-lpd-bal', seed,
        tuple(options) + (
            f'model.backbone.init_cfg.checkpoint={osp.abspath(first)}',),
        config=WARM_CONFIG)


def checkpoint_of(args, name, seed):
    work_dir = osp.join(args.work_dir, f'{name}_seed{seed}')
    checkpoint = osp.join(work_dir, f'iter_{args.iters}.pth')
    configs = sorted(f for f in os.listdir(work_dir) if f.endswith('.py')) \
        if osp.isdir(work_dir) else []
    if not osp.isfile(checkpoint) or not configs:
        raise FileNotFoundError(
            f'{work_dir}: no finished {name} run (run benchmarks/quality.py '
            f'--methods {name} with this --work-dir first)')
    return osp.join(work_dir, configs[0]), checkpoint


@torch.no_grad()
def probe(args, seed, stage2_names):
    from mmengine.dataset import pseudo_collate
    from mmseg.registry import DATASETS
    from torch.utils.data import DataLoader

    from lpd_mmseg.apis import init_segmentor
    from lpd_mmseg.models.gating import gated_argmax
    from lpd_mmseg.models.tissue_prior import TissuePrior
    from lpd_mmseg.models.utils.geometry import restore_geometry

    options = {'test_dataloader.dataset.data_root': args.data_root}
    lpd = init_segmentor(*checkpoint_of(args, 'lpd', seed),
                         cfg_options=options)
    stage2 = {name: init_segmentor(*checkpoint_of(args, name, seed),
                                   cfg_options=options)
              for name in stage2_names}
    post = lpd.post_processor.replace(crf=None, tissue_prior=TissuePrior(),
                                      gate_rule='hard')
    dataset = DATASETS.build(lpd.cfg.test_dataloader.dataset.copy())
    loader = DataLoader(dataset, batch_size=8, collate_fn=pseudo_collate,
                        num_workers=0)
    confs = {}

    def add(row, mask, gt):
        quality.add_confusion(confs, row, mask, gt)

    for batch in loader:
        data = lpd.data_preprocessor(batch, False)
        inputs, samples = data['inputs'], data['data_samples']
        metas = [s.metainfo for s in samples]
        restored = lpd.restore_result(lpd.inference(inputs, metas), samples,
                                      inputs)
        logits = {name: model.inference(
            model.data_preprocessor(batch, False)['inputs'], metas)
            for name, model in stage2.items()}
        for i, sample in enumerate(samples):
            gt = sample.gt_sem_seg.data[0]
            maps = restored[i]
            lpd_args = (maps.cams[None], maps.class_probs[None])
            for source in ('predicted', 'oracle'):
                _, mask = post(*lpd_args, source, maps.image[None], [gt])
                add(f'lpd-{source}', mask[0], gt)
            for name, out in logits.items():
                full = restore_geometry(out[i:i + 1], metas[i], 'bilinear')
                own = full.argmax(0)
                add(name, own, gt)
                if name != args.stage2:
                    continue
                shares = class_shares(own, 4)
                for share in SHARES:
                    gate = share_gate(shares, share)
                    add(f'stage2-self>{share}',
                        gated_argmax(full[None], gate[None])[0], gt)
                    _, mask = post(*lpd_args, 'labels', maps.image[None],
                                   labels=[gate])
                    add(f'lpd-s2gate>{share}', mask[0], gt)
                scores, _ = post(*lpd_args, 'none', maps.image[None])
                fused = full.log_softmax(0) + scores[0].log_softmax(0)
                add('fusion', fused.argmax(0), gt)
    return ({row: quality.metrics_of(conf) for row, conf in confs.items()},
            {row: conf.tolist() for row, conf in confs.items()})


def main(argv=None):
    args = build_parser().parse_args(argv)
    os.chdir(REPO)
    # the quality benchmark's helpers read these
    args.quick, args.retrain = False, False
    names = [args.stage2] + (['stage2-lpd-warm'] if args.warm_start
                             else [])
    runs = []
    for seed in args.seeds:
        if args.warm_start:
            warm_start(args, seed)
        metrics, confusions = probe(args, seed, names)
        # confusion[g][p]: pixels of true class g predicted as p (0..3
        # tissue, 4 background)
        runs.append(dict(seed=seed, metrics=metrics, confusion=confusions))
        print(f'[probe] seed {seed}: ' + ', '.join(
            f"{row} {m['mIoU']}" for row, m in metrics.items()), flush=True)
    rows = list(runs[0]['metrics'])
    summary = {row: {key: quality._stats([r['metrics'][row][key]
                                          for r in runs])
                     for key in ('mIoU', 'IoU.NEC', 'IoU.BACK')}
               for row in rows}
    payload = dict(command=command_line(), environment=environment(),
                   work_dir=args.work_dir, data_root=args.data_root,
                   seeds=args.seeds, runs=runs, summary=summary)
    write_json(args.out, payload)
    lines = ['| row | reads test masks | mIoU | NEC IoU | BACK IoU |',
             '|---|---|---|---|---|']
    for row in rows:
        cells = [quality._cell(summary[row][k])
                 for k in ('mIoU', 'IoU.NEC', 'IoU.BACK')]
        lines.append(f"| {row} | {'yes' if row == 'lpd-oracle' else 'no'} | "
                     + ' | '.join(cells) + ' |')
    table = '\n'.join(lines) + '\n'
    with open(osp.splitext(args.out)[0] + '.md', 'w') as f:
        f.write(f'`{payload["command"]}`\n\n' + table)
    print(table)
    return payload


if __name__ == '__main__':
    main()
