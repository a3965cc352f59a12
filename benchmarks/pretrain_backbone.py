#!/usr/bin/env python
"""Pre-train the CPU demo backbone once, on generated data disjoint from
the benchmark's, as a stand-in for the ImageNet weights that real recipes
start from.

The task is multi-label classification from image-level labels only (the
``cam`` benchmark config: one prototype per class, no diversity), on a
generated set with its own data seed, so no pixel mask and no benchmark
patch is seen.  The backbone's weights (keys without the ``backbone.``
prefix, stored as float16 to halve the file) are written as a
checkpoint that ``benchmarks/quality.py --backbone-init`` (and any config,
through ``model.backbone.init_cfg=dict(type='Pretrained', ...)``) loads.

    python benchmarks/pretrain_backbone.py                 # 4-6 min, 2 cores
    python benchmarks/quality.py --backbone-init \\
        work_dirs/bench_pretrain/backbone_gen100.pth \\
        --work-dir work_dirs/bench_quality_pre --methods cam lpd

The repository ships one such file,
``lpd_mmseg/testing/weights/mit-tiny_gen100-cls_backbone.pth`` (made by this
script with its default settings; its record, with the command and the
SHA-256, lies beside it), and the CPU demo configs start
from it.  The result is not bit-identical between machines (float
reductions differ between CPUs), which is why the file is shipped rather
than rebuilt.  An existing ``--out`` is never overwritten (use another
path).
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
    command_line,
    environment,
    write_json,
)


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--data-seed', type=int, default=100,
                        help='generator seed of the pre-training set; keep '
                        'it apart from the benchmark data seeds (0, 1)')
    parser.add_argument('--num-train', type=int, default=1200)
    parser.add_argument('--iters', type=int, default=1200)
    parser.add_argument('--seed', type=int, default=0,
                        help='training seed')
    parser.add_argument('--data-root', default='data/bench-pretrain')
    parser.add_argument('--work-dir', default='work_dirs/bench_pretrain')
    parser.add_argument('--out', default=None,
                        help='backbone checkpoint to write (default: '
                        'WORK_DIR/backbone_gen<DATA_SEED>.pth)')
    parser.add_argument('--quick', action='store_true',
                        help='tiny smoke run (tests)')
    return parser


def backbone_state_dict(state_dict, dtype=torch.float16):
    """The ``backbone.*`` entries of a segmentor's state dict, prefix
    removed, floating-point tensors cast to ``dtype``.

    Raises:
        KeyError: no key starts with ``backbone.``.
    """
    prefix = 'backbone.'
    out = {k[len(prefix):]: (v.to(dtype) if v.is_floating_point() else v)
           for k, v in state_dict.items() if k.startswith(prefix)}
    if not out:
        raise KeyError(f'no {prefix!r} keys in the state dict (found e.g. '
                       f'{sorted(state_dict)[:3]})')
    return out


def main(argv=None):
    args = build_parser().parse_args(argv)
    out = osp.abspath(args.out or osp.join(
        args.work_dir, f'backbone_gen{args.data_seed}.pth'))
    if osp.exists(out):
        raise FileExistsError(f'{out} exists; give another --out')
    os.chdir(REPO)
    from lpd_mmseg.apis.checkpoint import safe_load_checkpoint, sha256_of
    from lpd_mmseg.testing.synthetic import generate_synthetic_bcss
    qargs = quality.build_parser().parse_args([
        '--data-root', args.data_root, '--work-dir', args.work_dir,
        '--iters', str(args.iters)] + (['--quick'] if args.quick else []))
    if args.quick:
        qargs = quality.quick_settings(qargs)
        qargs.iters = args.iters
        qargs.data_root = args.data_root
        args.num_train = 60
    manifest = generate_synthetic_bcss(
        args.data_root, seed=args.data_seed, num_train=args.num_train,
        num_val=min(qargs.num_val, 20), num_test=min(qargs.num_test, 20),
        size=qargs.size,
        progress=False)
    print(f'[pretrain] classification on {args.num_train} generated '
          f'patches (data seed {args.data_seed}), {args.iters} iterations',
          flush=True)
    checkpoint, seconds, _ = quality.train(qargs, 'pretrain-cam', 'cam',
                                           args.seed)
    state = safe_load_checkpoint(checkpoint)['state_dict']
    weights = backbone_state_dict(state)
    os.makedirs(osp.dirname(out), exist_ok=True)
    torch.save(dict(state_dict=weights,
                    meta=dict(data_seed=args.data_seed,
                              num_train=args.num_train, iters=args.iters,
                              seed=args.seed, task='multi-label '
                              'classification (cam config)')), out)
    write_json(osp.splitext(out)[0] + '.json', dict(
        command=command_line(), environment=environment(),
        checkpoint=osp.relpath(out, REPO),
        source=checkpoint, train_seconds=round(seconds, 1),
        data=dict(root=args.data_root, seed=args.data_seed,
                  counts=manifest['counts']),
        iters=args.iters, tensors=len(weights),
        parameters=sum(v.numel() for v in weights.values()),
        sha256=sha256_of(out)))
    print(f'[pretrain] wrote {out} ({len(weights)} tensors)', flush=True)
    return out


if __name__ == '__main__':
    main()
