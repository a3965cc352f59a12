"""Generate a synthetic H&E data set in the BCSS-WSSS layout.

Example::

    python tools/make_synthetic_bcss.py --out data/synthetic_bcss --seed 0 \\
        --num-train 600 --num-val 100 --num-test 100 --size 96 --workers 2

All logic lives in :mod:`lpd_mmseg.testing.synthetic`; this script only
parses arguments.
"""
import argparse
import sys


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            'Write synthetic H&E-like tissue patches in the BCSS-WSSS layout: '
            'DIR/training/<name>+<i>[abcd].png (label TUM,STR,LYM,NEC in the '
            'name), DIR/{val,test}/{img,mask}/<name>.png (palette masks, '
            '0 TUM 1 STR 2 LYM 3 NEC 4 background) and '
            'DIR/synthetic_manifest.json.  Re-running with the same '
            'arguments reuses the data set.'),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument(
        '--out', required=True, metavar='DIR',
        help='data set root to create (refused if it holds other data, '
        'unless --overwrite)')
    parser.add_argument(
        '--seed', type=int, default=0,
        help='non-negative seed; the same seed and sizes give '
        'byte-identical files')
    parser.add_argument(
        '--num-train', type=int, default=200, metavar='N',
        help='training patches (weak labels in the file names, no masks)')
    parser.add_argument(
        '--num-val', type=int, default=40, metavar='N',
        help='validation patches with masks')
    parser.add_argument(
        '--num-test', type=int, default=40, metavar='N',
        help='test patches with masks')
    parser.add_argument(
        '--size', type=int, default=224, metavar='PX',
        help='patch side in pixels (32 to 2048)')
    parser.add_argument(
        '--with-train-masks', action='store_true',
        help='also write DIR/training_masks/ (same names as the training '
        'patches) for a fully supervised upper bound; not part of the real '
        'layout')
    parser.add_argument(
        '--class-mix', default='bcss', choices=['bcss', 'multi'],
        help="which classes patches hold: 'bcss' (shares like BCSS-WSSS) "
        "or 'multi' (more multi-class patches, more lymphocytes and "
        'necrosis: a second data configuration for robustness checks)')
    parser.add_argument(
        '--overwrite', action='store_true',
        help='regenerate even if DIR is not empty; removes only training/, '
        'training_masks/, val/, test/ and the manifest of an earlier '
        'generated data set (never a folder without our manifest, which may '
        'be real data)')
    parser.add_argument(
        '--workers', type=int, default=1, metavar='W',
        help='worker processes (the output does not depend on it)')
    parser.add_argument(
        '--no-progress', action='store_true', help='hide the progress bar')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    # Imported after parsing so that --help answers at once.
    from lpd_mmseg.testing.synthetic import (
        format_summary,
        generate_synthetic_bcss,
    )
    try:
        manifest = generate_synthetic_bcss(
            args.out,
            seed=args.seed,
            num_train=args.num_train,
            num_val=args.num_val,
            num_test=args.num_test,
            size=args.size,
            with_train_masks=args.with_train_masks,
            class_mix=args.class_mix,
            overwrite=args.overwrite,
            workers=args.workers,
            progress=not args.no_progress)
    except (ValueError, FileExistsError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    print(format_summary(manifest))
    return 0


if __name__ == '__main__':
    sys.exit(main())
