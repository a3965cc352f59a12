#!/usr/bin/env python
"""Build the k-means prototype bank of the clustering baseline ahead of
training (PrototypeBankHook builds it on the fly otherwise).

    python tools/build_prototype_bank.py \
        configs/baselines/bank_mit-b1_1xb10-18.7k_bcss-wsss-224x224.py \
        --out work_dirs/bank/prototype_bank.pth
    # then train with the hook reading it:
    python tools/train.py \
        configs/baselines/bank_mit-b1_1xb10-18.7k_bcss-wsss-224x224.py \
        --work-dir work_dirs/bank
"""
import argparse

import lpd_mmseg  # noqa: F401
from lpd_mmseg.apis.bank import build_bank_from_config


def parse_args():
    parser = argparse.ArgumentParser(
        description='Cluster the pooled backbone features of single-label '
        'training patches into k prototypes per class and stage '
        "(LPDHead prototype_mode='frozen_bank').")
    parser.add_argument('config', help='a frozen_bank config')
    parser.add_argument('--out', required=True,
                        help='bank file (.pth) to write')
    parser.add_argument('--checkpoint', help='take the backbone weights from '
                        'this checkpoint instead of the config init_cfg')
    parser.add_argument('--no-init', action='store_true',
                        help='skip the init_cfg weights (random backbone)')
    parser.add_argument('--max-per-class', type=int,
                        help='at most this many single-label images per '
                        'class')
    parser.add_argument('--batch-size', type=int, default=16)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--seed', type=int, default=0, help='k-means seed')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace an existing --out file')
    return parser.parse_args()


def main():
    args = parse_args()
    summary = build_bank_from_config(
        args.config, args.out, checkpoint=args.checkpoint,
        max_per_class=args.max_per_class, batch_size=args.batch_size,
        device=args.device, init_weights=not args.no_init, seed=args.seed,
        overwrite=args.overwrite)
    print(f"prototype bank written to {summary['out']}: per-stage shapes "
          f"{summary['shapes']}, built in {summary['seconds']} s")


if __name__ == '__main__':
    main()
