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
def _denormalize(inputs, preprocessor):
    if getattr(preprocessor, '_enable_normalize', False):
        inputs = inputs * preprocessor.std + preprocessor.mean
    return inputs.clamp(0, 255)


def _restore(maps, meta):
    """(1, K, H, W) at network size -> (K, H0, W0)."""
    import torch.nn.functional as F
    left, right, top, bottom = meta.get(
        'img_padding_size', meta.get('padding_size', [0, 0, 0, 0]))
    height, width = maps.shape[2:]
    maps = maps[:, :, top:height - bottom, left:width - right]
    size = tuple(meta['ori_shape'][:2])
    if tuple(maps.shape[2:]) != size:
        maps = F.interpolate(maps, size=size, mode='bilinear',
                             align_corners=False)
    return maps[0]


@torch.no_grad()
def evaluate(config, checkpoint, args, crf_cfg):
    """Confusion matrices of the four protocols and prototype coverage."""
    from mmengine.dataset import pseudo_collate
    from mmseg.registry import DATASETS
    from torch.utils.data import DataLoader

    from lpd_mmseg.apis import init_segmentor
    from lpd_mmseg.evaluation import confusion_matrix
    from lpd_mmseg.evaluation.prototype_coverage import prototype_coverage
    from lpd_mmseg.models.decode_heads.lpd_head import (
        lpd_scores,
        predicted_class_gate,
    )
    from lpd_mmseg.models.segmentors.lpd_encoder_decoder import present_classes
    from lpd_mmseg.models.utils.crf_config import (
        allowed_channels,
        crf_scores,
        restrict_probs,
    )

    model = init_segmentor(config, checkpoint, cfg_options={
        'test_dataloader.dataset.data_root': args.data_root})
    ds_cfg = model.cfg.test_dataloader.dataset.copy()
    dataset = DATASETS.build(ds_cfg)
    loader = DataLoader(dataset, batch_size=8, collate_fn=pseudo_collate,
                        num_workers=0)
    is_lpd = hasattr(model.decode_head, 'num_prototypes')
    num_classes = 4
    confs = {p: np.zeros((5, 5), np.int64) for p in PROTOCOLS}
    coverage = None
    if is_lpd:
        k = model.decode_head.num_prototypes
        coverage = torch.zeros(num_classes, k, dtype=torch.long)
    for batch in loader:
        data = model.data_preprocessor(batch, False)
        inputs, samples = data['inputs'], data['data_samples']
        if is_lpd:
            feats = model.extract_feat(inputs)
            cams, probs = model.decode_head.predict_cams(
                feats, inputs.shape[2:])
            sims = model.decode_head.forward(feats)[-1]
        else:
            logits = model.inference(inputs, [s.metainfo for s in samples])
        images = _denormalize(inputs, model.data_preprocessor)
        for i, sample in enumerate(samples):
            meta = sample.metainfo
            gt = sample.gt_sem_seg.data[0]
            image = _restore(images[i:i + 1], meta)
            gates = dict(oracle=present_classes(gt, num_classes))
            if is_lpd:
                maps = _restore(torch.cat(
                    [cams[i:i + 1],
                     probs[i:i + 1, :, None, None].expand_as(cams[i:i + 1])],
                    1), meta)
                cam_i, prob_i = maps[:num_classes], maps[num_classes:]
                gates['honest'] = predicted_class_gate(prob_i[None], 0.5)[0]
                alpha = model.decode_head.background_alpha
                scores = {g: lpd_scores(cam_i[None], gate[None], alpha)[0]
                          for g, gate in gates.items()}
                sim_i = torch.nn.functional.interpolate(
                    sims[i:i + 1], size=gt.shape, mode='bilinear',
                    align_corners=False)[0]
                coverage += prototype_coverage(sim_i, gt, num_classes, k)
            else:
                # the supervised model predicts every class; 'honest' is its
                # own output, 'oracle' restricts it to the mask's classes
                full = _restore(logits[i:i + 1], meta)
                gates['honest'] = None
                scores = {g: full for g in gates}
            for name, gate in gates.items():
                allowed = None if gate is None else allowed_channels(
                    gate, scores[name].shape)
                plain = restrict_probs(torch.softmax(scores[name], 0),
                                       allowed).argmax(0)
                refined = crf_scores(scores[name], image, crf_cfg,
                                     gate).argmax(0)
                confs[name] += confusion_matrix(plain, gt, 5)
                confs[name + '+crf'] += confusion_matrix(refined, gt, 5)
    return confs, coverage


def coverage_summary(counts):
    if counts is None or counts.shape[1] < 2:
        return None
    from lpd_mmseg.evaluation.prototype_coverage import (
        coverage_entropy,
        coverage_shares,
    )
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
    from lpd_mmseg.models.crf import _import_pydensecrf
    from lpd_mmseg.testing.synthetic import generate_synthetic_bcss
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
