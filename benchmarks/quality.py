#!/usr/bin/env python
"""Quality benchmark: does LPD beat its baselines on weakly labelled data?

One generated data set in the BCSS-WSSS layout (fixed seed), one backbone
and one schedule for every method:

- supervised: SegformerHead trained on the pixel masks (upper bound);
- cam: one prototype per class, no diversity (plain CAM);
- bank: frozen k-means prototypes from single-label images (PBIP idea);
- lpd-nodiv: k learnable prototypes, no diversity;
- lpd: k learnable prototypes with the Jeffreys diversity loss.

Each is trained for several seeds and evaluated on the test split under
four protocols (honest = gating by the model's own class probabilities,
oracle = gating by the classes of the test mask; each with and without the
dense CRF), background 'count' as in the LPD paper.  Results: JSON in
benchmarks/results/ and a Markdown table.

    python benchmarks/quality.py                 # full run, about an hour
    python benchmarks/quality.py --quick --out /tmp/q.json   # smoke test
"""
import argparse
import os
import os.path as osp
import sys
import time

import numpy as np
import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from benchmarks.common import (  # noqa: E402
    REPO,
    RESULTS,
    command_line,
    environment,
    run_python,
    write_json,
)

METHODS = ('supervised', 'cam', 'bank', 'lpd-nodiv', 'lpd')
PROTOCOLS = ('honest', 'honest+crf', 'oracle', 'oracle+crf')
SUMMARY_KEYS = ('mIoU', 'mDice', 'FwIoU')


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--quick', action='store_true',
                        help='smoke run: tiny data, 1 seed, a few iterations')
    parser.add_argument('--methods', nargs='+', default=list(METHODS),
                        choices=METHODS)
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    parser.add_argument('--iters', type=int, default=600,
                        help='training iterations per run (batch 8)')
    parser.add_argument('--data-seed', type=int, default=0)
    parser.add_argument('--num-train', type=int, default=600)
    parser.add_argument('--num-val', type=int, default=50)
    parser.add_argument('--num-test', type=int, default=200)
    parser.add_argument('--size', type=int, default=128)
    parser.add_argument('--data-root', default='data/bench-quality')
    parser.add_argument('--work-dir', default='work_dirs/bench_quality')
    parser.add_argument('--crf', default='auto',
                        choices=['auto', 'pydensecrf', 'torch'],
                        help='CRF backend (auto: pydensecrf when installed)')
    parser.add_argument('--extra', nargs='*', default=[],
                        help='extra name=cfg-option variants of LPD to '
                        'train as well, e.g. '
                        'lpd-t0.07:model.decode_head.loss_diversity.'
                        'temperature=0.07')
    parser.add_argument('--retrain', action='store_true',
                        help='train again even where a checkpoint of an '
                        'earlier run exists in --work-dir')
    parser.add_argument('--out', default=osp.join(RESULTS, 'quality.json'))
    return parser


def quick_settings(args):
    args.seeds = args.seeds[:1]
    args.iters = 4
    args.num_train, args.num_val, args.num_test, args.size = 60, 4, 6, 64
    args.data_root = osp.join(args.work_dir, 'data')
    return args


# ------------------------------------------------------------ training
def train_options(args, method, seed):
    opts = [f'{s}_dataloader.dataset.data_root={args.data_root}'
            for s in ('train', 'val', 'test')]
    warm = max(1, min(50, args.iters // 10))
    opts += [f'randomness.seed={seed}', f'train_cfg.max_iters={args.iters}',
             f'param_scheduler.0.end={warm}',
             f'param_scheduler.1.begin={warm}',
             f'param_scheduler.1.end={args.iters}']
    if method != 'supervised':
        opts.append(f'model.decode_head.warmup_iters={args.iters // 3}')
    if args.quick:
        opts += ['train_dataloader.batch_size=4',
                 'train_dataloader.num_workers=0',
                 'train_dataloader.persistent_workers=False',
                 'val_dataloader.num_workers=0',
                 'val_dataloader.persistent_workers=False',
                 'test_dataloader.num_workers=0',
                 'test_dataloader.persistent_workers=False',
                 'model.backbone.embed_dims=8',
                 'model.backbone.num_layers=[1,1,1,1]']
        if method == 'supervised':
            opts.append('model.decode_head.in_channels=[8,16,40,64]')
        else:
            opts.append('model.decode_head.in_channels=[16,40,64]')
        if method not in ('supervised', 'cam'):
            # the generator guarantees 2 single-label patches per class in
            # 60 patches, enough for a 2-prototype bank
            opts.append('model.decode_head.num_prototypes=2')
    return opts


def config_for(method):
    return osp.join('benchmarks', 'configs', f'quality_{method}.py')


def train(args, name, method, seed, extra_opts=()):
    """Train one run; returns (checkpoint, seconds, config as trained).

    A run whose checkpoint exists (from an interrupted or earlier benchmark
    with the same work dir) is reused unless ``--retrain``."""
    import json
    config = config_for(method)
    work_dir = osp.join(args.work_dir, f'{name}_seed{seed}')
    checkpoint = osp.join(work_dir, f'iter_{args.iters}.pth')
    # mmengine dumps the merged config (with all overrides) to the work dir
    trained_config = osp.join(work_dir, osp.basename(config))
    timing = osp.join(work_dir, 'train_seconds.json')
    if osp.isfile(checkpoint) and not args.retrain:
        if osp.isfile(timing):
            with open(timing) as f:
                seconds = json.load(f)['seconds']
        else:  # from a run without the timing file: config dump -> ckpt
            seconds = osp.getmtime(checkpoint) - osp.getmtime(trained_config)
        return checkpoint, seconds, trained_config
    start = time.perf_counter()
    run_python(['tools/train.py', config, '--work-dir', work_dir,
                '--cfg-options'] + train_options(args, method, seed) +
               list(extra_opts), osp.join(work_dir, 'train_stdout.log'))
    seconds = time.perf_counter() - start
    with open(timing, 'w') as f:
        json.dump(dict(seconds=seconds), f)
    return checkpoint, seconds, trained_config


# ---------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(config, checkpoint, args, crf_cfg):
    """Confusion matrices of the four protocols and prototype coverage.

    LPD models go through their one post-processing path
    (``model.post_processor``), once per gate source, with and without the
    CRF; the supervised model's own scores are gated the same way."""
    from mmengine.dataset import pseudo_collate
    from mmseg.registry import DATASETS
    from torch.utils.data import DataLoader

    from lpd_mmseg.apis import init_segmentor
    from lpd_mmseg.apis.visualization import prototype_coverage
    from lpd_mmseg.evaluation import confusion_matrix
    from lpd_mmseg.models.gating import gated_argmax, present_classes
    from lpd_mmseg.models.postprocess import build_crf
    from lpd_mmseg.models.utils.geometry import denormalize, restore_geometry

    model = init_segmentor(config, checkpoint, cfg_options={
        'test_dataloader.dataset.data_root': args.data_root})
    ds_cfg = model.cfg.test_dataloader.dataset.copy()
    dataset = DATASETS.build(ds_cfg)
    loader = DataLoader(dataset, batch_size=8, collate_fn=pseudo_collate,
                        num_workers=0)
    is_lpd = hasattr(model, 'post_processor')
    crf = build_crf(crf_cfg)
    num_classes = 4
    confs = {p: np.zeros((5, 5), np.int64) for p in PROTOCOLS}
    coverage = None
    if is_lpd:
        k = model.decode_head.num_prototypes
        coverage = torch.zeros(num_classes, k, dtype=torch.long)
        plain = model.post_processor.replace(crf=None)
        refine = model.post_processor.replace(crf=crf)
    gate_sources = dict(honest='predicted', oracle='oracle')
    for batch in loader:
        data = model.data_preprocessor(batch, False)
        inputs, samples = data['inputs'], data['data_samples']
        metas = [s.metainfo for s in samples]
        if is_lpd:
            restored = model.restore_result(model.inference(inputs, metas),
                                            samples, inputs)
            sims = model.decode_head.forward(model.extract_feat(inputs))[-1]
        else:
            logits = model.inference(inputs, metas)
            images = denormalize(inputs, model.data_preprocessor)
        for i, sample in enumerate(samples):
            gt = sample.gt_sem_seg.data[0]
            for name, source in gate_sources.items():
                if is_lpd:
                    maps = restored[i]
                    args_i = (maps.cams[None], maps.class_probs[None],
                              source, maps.image[None], [gt])
                    masks = tuple(post(*args_i, peaks=maps.peaks[None])[1][0]
                                  for post in (plain, refine))
                else:
                    # the supervised model predicts every class; 'honest'
                    # is its own output, 'oracle' restricts it to the
                    # mask's classes
                    full = restore_geometry(logits[i:i + 1], metas[i],
                                            'bilinear')
                    image = restore_geometry(images[i:i + 1], metas[i],
                                             'bilinear')
                    gate = present_classes(gt, num_classes) \
                        if source == 'oracle' else None
                    refined = crf(full, image, gate)
                    gate = None if gate is None else gate[None]
                    masks = (gated_argmax(full[None], gate)[0],
                             gated_argmax(refined[None], gate)[0])
                confs[name] += confusion_matrix(masks[0], gt, 5)
                confs[name + '+crf'] += confusion_matrix(masks[1], gt, 5)
            if is_lpd:
                sim_i = torch.nn.functional.interpolate(
                    sims[i:i + 1], size=gt.shape, mode='bilinear',
                    align_corners=False)[0]
                coverage += prototype_coverage(sim_i, gt, num_classes, k)
    return confs, coverage


def coverage_summary(counts):
    if counts is None or counts.shape[1] < 2:
        return None
    from lpd_mmseg.apis.visualization import coverage_entropy, coverage_shares
    shares = coverage_shares(counts)
    entropy = coverage_entropy(shares)
    k = counts.shape[1]
    return dict(
        shares=shares.tolist(),
        normalized_entropy=entropy.tolist(),
        effective_prototypes=(k**entropy).tolist(),
        mean_effective_prototypes=float((k**entropy).nanmean()))


def metrics_of(conf):
    from lpd_mmseg.evaluation import tissue_metrics
    out = tissue_metrics(conf, 4, background='count')
    names = ('TUM', 'STR', 'LYM', 'NEC')
    result = {k: round(100 * float(out[k]), 2) for k in
              ('mIoU', 'mDice', 'FwIoU', 'aAcc')}
    result.update({f'IoU.{n}': round(100 * float(v), 2)
                   for n, v in zip(names, out['IoU'])})
    return result


def summarize(runs, methods):
    summary = {}
    for method in methods:
        mine = [r for r in runs if r['method'] == method]
        if not mine:
            continue
        entry = {}
        for protocol in PROTOCOLS:
            entry[protocol] = {}
            for key in SUMMARY_KEYS + tuple(
                    f'IoU.{n}' for n in ('TUM', 'STR', 'LYM', 'NEC')):
                values = np.array([r['metrics'][protocol][key]
                                   for r in mine])
                entry[protocol][key] = dict(
                    mean=round(float(values.mean()), 2),
                    std=round(float(values.std(ddof=1)), 2)
                    if len(values) > 1 else 0.0,
                    values=values.tolist())
        eff = [r['coverage']['mean_effective_prototypes'] for r in mine
               if r.get('coverage')]
        if eff:
            entry['effective_prototypes'] = round(float(np.mean(eff)), 2)
        entry['train_seconds'] = round(float(np.mean(
            [r['train_seconds'] for r in mine])), 1)
        summary[method] = entry
    return summary


def markdown(summary, payload):
    lines = [
        '| method | ' + ' | '.join(f'mIoU {p}' for p in PROTOCOLS) +
        ' | mDice honest | FwIoU honest | eff. prototypes | train s |',
        '|---' * (len(PROTOCOLS) + 5) + '|'
    ]
    for method, entry in summary.items():
        cells = [f"{entry[p]['mIoU']['mean']:.2f} ± "
                 f"{entry[p]['mIoU']['std']:.2f}" for p in PROTOCOLS]
        cells.append(f"{entry['honest']['mDice']['mean']:.2f} ± "
                     f"{entry['honest']['mDice']['std']:.2f}")
        cells.append(f"{entry['honest']['FwIoU']['mean']:.2f} ± "
                     f"{entry['honest']['FwIoU']['std']:.2f}")
        cells.append(str(entry.get('effective_prototypes', '-')))
        cells.append(str(entry['train_seconds']))
        lines.append(f'| {method} | ' + ' | '.join(cells) + ' |')
    per_class = ['', '| method (honest) | TUM | STR | LYM | NEC |',
                 '|---|---|---|---|---|']
    for method, entry in summary.items():
        per_class.append(f'| {method} | ' + ' | '.join(
            f"{entry['honest'][f'IoU.{n}']['mean']:.2f}"
            for n in ('TUM', 'STR', 'LYM', 'NEC')) + ' |')
    return '\n'.join(lines + per_class) + '\n'


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.quick:
        args = quick_settings(args)
    os.chdir(REPO)
    from lpd_mmseg.datasets.synthetic import generate_synthetic_bcss
    from lpd_mmseg.models.crf import _import_pydensecrf
    backend = args.crf
    if backend == 'auto':
        try:
            _import_pydensecrf()
            backend = 'pydensecrf'
        except ImportError:
            backend = 'torch'
    crf_cfg = dict(backend=backend)
    if backend == 'torch' and args.quick:
        crf_cfg.update(truncate=1.0, downsample=4)
    manifest = generate_synthetic_bcss(
        args.data_root, seed=args.data_seed, num_train=args.num_train,
        num_val=args.num_val, num_test=args.num_test, size=args.size,
        with_train_masks=True, progress=False)
    variants = [(m, m, ()) for m in args.methods]
    for spec in args.extra:
        name, _, options = spec.partition(':')
        variants.append((name, 'lpd', tuple(o for o in options.split(',')
                                            if o)))
    runs = []
    payload = dict(
        command=command_line(), environment=environment(),
        data=dict(root=args.data_root, seed=args.data_seed,
                  counts=manifest['counts'], size=args.size),
        iters=args.iters, batch_size=8 if not args.quick else 4,
        seeds=args.seeds, crf=crf_cfg, protocols=dict(
            honest='gate by predicted class probabilities (>= 0.5)',
            oracle='gate by classes present in the test mask',
            crf='dense CRF, paper parameters', background='count'),
        runs=runs)
    for name, kind, extra in variants:
        for seed in args.seeds:
            print(f'[quality] training {name} seed {seed} ...', flush=True)
            checkpoint, seconds, config = train(args, name, kind, seed,
                                                extra)
            confs, coverage = evaluate(config, checkpoint, args, crf_cfg)
            metrics = {p: metrics_of(c) for p, c in confs.items()}
            runs.append(dict(method=name, seed=seed, checkpoint=checkpoint,
                             train_seconds=round(seconds, 1),
                             metrics=metrics,
                             coverage=coverage_summary(coverage),
                             extra_options=list(extra)))
            print(f"[quality] {name} seed {seed}: mIoU honest "
                  f"{metrics['honest']['mIoU']}, oracle+crf "
                  f"{metrics['oracle+crf']['mIoU']}", flush=True)
            payload['summary'] = summarize(runs, [v[0] for v in variants])
            write_json(args.out, payload)
    table = markdown(payload['summary'], payload)
    with open(osp.splitext(args.out)[0] + '.md', 'w') as f:
        f.write(table)
    print(table)
    return payload


if __name__ == '__main__':
    main()
