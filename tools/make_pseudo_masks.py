#!/usr/bin/env python
"""Write pixel-level pseudo-masks for the weakly labelled training split.

    python tools/make_pseudo_masks.py \\
        configs/lpd/lpd_mit-b1_1xb10-18.7k_bcss-wsss-224x224.py \\
        work_dirs/lpd/best.pth --out data/BCSS-WSSS/pseudo_masks \\
        --crf torch --device cuda:0

One palette PNG per training patch, with the patch's file name, values
0..C-1 for the tissue classes and C for background.  Then train any MMSeg
segmentor on them, e.g.
configs/second_stage/segformer_mit-b1_1xb10-18.7k_bcss-wsss-pseudo-224x224.py.
A trained second stage (its config and checkpoint) labels the patches
again the same way: the next round of self-training.
All logic lives in :mod:`lpd_mmseg.apis.pseudo_masks`.
"""
import argparse
import sys

import lpd_mmseg  # noqa: F401  (compat fixes + registration, first)
from lpd_mmseg.apis.checkpoint import (
    CheckpointMismatchError,
    UnsafeCheckpointError,
)
from lpd_mmseg.apis.pseudo_masks import (
    CRF_CHOICES,
    GATE_CHOICES,
    format_pseudo_mask_summary,
    make_pseudo_masks,
)
from lpd_mmseg.datasets import LabelParseError

#: Errors caused by the arguments or the files: reported in one line.
USER_ERRORS = (FileNotFoundError, FileExistsError, NotADirectoryError,
               CheckpointMismatchError, UnsafeCheckpointError,
               LabelParseError, ValueError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=(
            'Turn a trained LPD model (or a trained second stage, for a '
            'further round of self-training) into pseudo-masks for the '
            'weakly labelled training split: one palette PNG per training '
            'image, '
            'with the same file name, pixel values 0..C-1 for the tissue '
            'classes and C for background (colours from the checkpoint\'s '
            'dataset palette).  Also writes OUT/pseudo_masks_meta.json '
            '(settings, counts, class pixel shares).  Existing files are '
            'never replaced without --overwrite.'),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('config', help='LPD (or second-stage) config the '
                        'checkpoint was trained with; its '
                        'train_dataloader.dataset gives the images')
    parser.add_argument('checkpoint', help='trained checkpoint (.pth); must '
                        'match the config exactly')
    parser.add_argument('--out', required=True, metavar='DIR',
                        help='output folder for the masks (created if '
                        'missing), e.g. data/BCSS-WSSS/pseudo_masks')
    parser.add_argument(
        '--split', default='train', choices=['train', 'val', 'test'],
        help="which split's images to label; 'train' is the weakly "
        'labelled one (val/test need --gate predicted)')
    parser.add_argument('--data-root', metavar='ROOT',
                        help="data set root replacing the config's "
                        'data_root')
    parser.add_argument('--batch-size', type=int, default=8, metavar='N',
                        help='images per forward pass')
    parser.add_argument('--num-workers', type=int, default=2, metavar='W',
                        help='data loading processes (0: load in the main '
                        'process)')
    parser.add_argument('--device', default='cpu',
                        help="torch device, e.g. 'cpu' or 'cuda:0'")
    parser.add_argument(
        '--crf', choices=CRF_CHOICES,
        help="dense CRF on each mask: 'torch' (no extra install), "
        "'pydensecrf' (the reference's), or 'none'; by default the config's "
        'test_cfg.crf')
    parser.add_argument(
        '--gate', choices=GATE_CHOICES, default='labels',
        help="which tissue classes a mask may contain: 'labels' = the "
        "image-level label in each file name (a mask never holds a class "
        "the label rules out), 'predicted' = the model's own class "
        'probabilities')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace masks (and the meta file) already in '
                        '--out')
    parser.add_argument('--no-progress', action='store_true',
                        help='hide the progress bar')
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error('--batch-size must be >= 1')
    if args.num_workers < 0:
        parser.error('--num-workers must be >= 0')
    try:
        summary = make_pseudo_masks(
            args.config, args.checkpoint, args.out, split=args.split,
            data_root=args.data_root, batch_size=args.batch_size,
            num_workers=args.num_workers, device=args.device, crf=args.crf,
            gate=args.gate, overwrite=args.overwrite,
            progress=not args.no_progress)
    except USER_ERRORS as e:
        print(f'make_pseudo_masks.py: error: {e}', file=sys.stderr)
        return 1
    print(format_pseudo_mask_summary(summary))
    return 0


if __name__ == '__main__':
    sys.exit(main())
