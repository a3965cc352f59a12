#!/usr/bin/env python
"""Show what each learnt prototype responds to, and measure how the
prototypes of a class share its region.

    python tools/visualize_prototypes.py CONFIG CKPT \\
        data/BCSS-WSSS/test/img/a.png data/BCSS-WSSS/test/img/b.png \\
        --out work_dirs/prototypes --masks data/BCSS-WSSS/test/mask

Writes OUT/<image>_prototypes.png (image, predicted mask with legend, one
heatmap per prototype: rows = classes, columns = prototypes),
OUT/prototype_coverage.png and OUT/prototype_coverage.json; existing
outputs of these names are only replaced with --overwrite.
All logic lives in :mod:`lpd_mmseg.apis.visualization` (the run),
:mod:`lpd_mmseg.evaluation.prototype_coverage` (the numbers) and
:mod:`lpd_mmseg.visualization.prototype_figures` (the figures).
"""
import argparse
import os.path as osp
import sys

import lpd_mmseg  # noqa: F401  (compat fixes + registration, first)
from lpd_mmseg.apis.checkpoint import (
    CheckpointMismatchError,
    UnsafeCheckpointError,
)
from lpd_mmseg.apis.visualization import (
    COVERAGE_JSON,
    check_masks_exist,
    check_output_folder,
    expand_image_inputs,
    visualize_prototypes,
)
from lpd_mmseg.evaluation.prototype_coverage import format_coverage

#: Errors caused by the arguments or the files: reported in one line.
USER_ERRORS = (FileNotFoundError, FileExistsError, NotADirectoryError,
               CheckpointMismatchError, UnsafeCheckpointError, ValueError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=(
            'Draw, for each image, the image, the predicted tissue mask and '
            'a heatmap of every prototype (rows = classes, columns = the k '
            'prototypes of the class), and measure prototype coverage: for '
            'each class, the share of its region where each of its '
            'prototypes is the strongest of the class\'s k prototypes '
            '(aggregate and per image, in OUT/prototype_coverage.json). '
            'Evenly split shares mean diverse prototypes; one prototype '
            'winning everywhere means they collapsed.'),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('config', help='LPD config of the checkpoint')
    parser.add_argument('checkpoint', help='trained checkpoint (.pth); must '
                        'match the config exactly')
    parser.add_argument('images', nargs='+', metavar='IMG',
                        help='image files, or folders whose images are all '
                        'used')
    parser.add_argument('--out', required=True, metavar='DIR',
                        help='output folder for the figures and the JSON '
                        '(created if missing; existing outputs of the same '
                        'names are only replaced with --overwrite)')
    parser.add_argument('--stage', type=int, default=-1,
                        help="which of the head's used backbone stages to "
                        'show, as an index into its in_index (-1: the '
                        'last, deepest one)')
    parser.add_argument('--device', default='cpu',
                        help="torch device, e.g. 'cpu' or 'cuda:0'")
    parser.add_argument('--masks', metavar='MASK_DIR',
                        help='folder of ground-truth masks with the images\' '
                        'file names; coverage is then measured on the true '
                        'class regions instead of the predicted ones')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace panels and prototype_coverage.png/json '
                        'already in --out')
    parser.add_argument('--no-progress', action='store_true',
                        help='hide the progress bar')
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        images = expand_image_inputs(args.images)
        for path, what in ((args.config, 'config'),
                           (args.checkpoint, 'checkpoint')):
            if not osp.isfile(path):
                raise FileNotFoundError(f'{what} {path}: no such file')
        if args.masks is not None:
            check_masks_exist(images, args.masks)
        check_output_folder(args.out, images, args.overwrite)
        from lpd_mmseg.apis import init_segmentor
        model = init_segmentor(args.config, args.checkpoint,
                               device=args.device)
        report = visualize_prototypes(
            model, images, args.out, stage=args.stage, mask_dir=args.masks,
            progress=not args.no_progress,
            provenance=dict(config=osp.abspath(args.config),
                            checkpoint=osp.abspath(args.checkpoint)),
            overwrite=args.overwrite)
    except USER_ERRORS as e:
        print(f'visualize_prototypes.py: error: {e}', file=sys.stderr)
        return 1
    print(format_coverage(report))
    print(f'figures and {COVERAGE_JSON} written to {osp.abspath(args.out)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
