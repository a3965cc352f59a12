"""Command line of ``tools/segment_slide.py``."""
import argparse
import os.path as osp
import sys
import warnings
from typing import List, Optional

from .engine import TileOptions
from .reader import SlideError
from .vectorize import MIN_REGION_UM2
from .writers import check_new_output

EPILOG = """\
Outputs per slide, in OUT/<slide stem>/: labels.tif (class-index pyramidal
TIFF, background = C), overlay.png, <stem>.geojson (QuPath: File > Import
objects, or drag and drop), areas.csv, run.json.  A folder of patches gives
OUT/<folder>/masks/, overlays/, areas.csv (one row per image), run.json.
See docs/slides.md.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description='Segment whole-slide images (anything OpenSlide '
        'reads: SVS, NDPI, MRXS, tiled TIFF, ...), large PNG/JPEG/TIFF '
        'regions or folders of patches with a trained model.',
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('config', help='model config file')
    p.add_argument('checkpoint', help='checkpoint file')
    p.add_argument('inputs', nargs='+', metavar='INPUT',
                   help='slides, images or folders of patches')
    p.add_argument('--out', required=True, help='output folder')
    p.add_argument('--mpp', type=float, help='microns per pixel to run '
                   "the model at (default: the training MPP in the config's "
                   'dataset metainfo, 0.25 for BCSS-WSSS)')
    p.add_argument('--mpp-slide', type=float, help='microns per pixel of '
                   'the inputs, for files that do not record it (or record '
                   'it wrongly)')
    p.add_argument('--tile', type=int, default=512,
                   help='tile side in pixels at --mpp (default 512)')
    p.add_argument('--overlap', type=int, default=64,
                   help='overlap of neighbouring tiles, blended (default 64)')
    p.add_argument('--batch-size', type=int, default=8,
                   help='tiles per model call (default 8)')
    p.add_argument('--device', default='cpu', help="e.g. 'cpu', 'cuda:0'")
    p.add_argument('--tta', action='store_true',
                   help="the config's test-time augmentation")
    p.add_argument('--crf', choices=['torch', 'pydensecrf'],
                   help='dense CRF on every tile')
    p.add_argument('--gate', choices=['predicted', 'none'],
                   help="class gating per tile (default: the config's)")
    p.add_argument('--tissue-threshold', type=int, metavar='0-255',
                   help='saturation above which a thumbnail pixel is '
                   'tissue (default: Otsu, clamped to 20..45)')
    p.add_argument('--min-tissue', type=float, default=0.0,
                   help='run a tile when more than this share of it is '
                   'tissue (default 0: any tissue)')
    p.add_argument('--min-region', type=float, default=MIN_REGION_UM2,
                   help='GeoJSON regions and holes smaller than this many '
                   f'um^2 are dropped (default {MIN_REGION_UM2:g})')
    p.add_argument('--workers', type=int, default=2,
                   help='threads reading tiles ahead (default 2; 0 = none)')
    p.add_argument('--overwrite', action='store_true',
                   help='replace existing result folders')
    p.add_argument('--no-progress', action='store_true',
                   help='no progress bar')
    return p


def _check_args(args) -> TileOptions:
    if args.tile < 16:
        raise SlideError(f'--tile must be >= 16, got {args.tile}')
    if not 0 <= args.overlap < args.tile:
        raise SlideError(f'--overlap must be in [0, --tile), got '
                         f'{args.overlap}')
    if args.batch_size < 1 or args.workers < 0:
        raise SlideError('--batch-size must be >= 1 and --workers >= 0')
    if not 0 <= args.min_tissue < 1 or args.min_region < 0:
        raise SlideError(f'--min-tissue must be in [0, 1) and --min-region '
                         f'>= 0, got {args.min_tissue}, {args.min_region}')
    if args.tissue_threshold is not None and not \
            0 <= args.tissue_threshold <= 255:
        raise SlideError(f'--tissue-threshold must be in 0..255, got '
                         f'{args.tissue_threshold}')
    return TileOptions(args.tile, args.overlap, args.batch_size,
                       args.tissue_threshold, args.min_tissue, args.workers)


def _planned(args) -> List[str]:
    """Result folders, checked before any model is built."""
    from .runner import slide_outputs
    finals = []
    for path in args.inputs:
        if not osp.exists(path):
            raise SlideError(f'{path}: no such file or folder')
        final = (osp.join(args.out, osp.basename(osp.normpath(path)))
                 if osp.isdir(path) else slide_outputs(args.out, path))
        if final in finals:
            raise SlideError(f'{path}: another input also writes {final}; '
                             'inputs need distinct file names')
        check_new_output(final, args.overwrite)
        finals.append(final)
    return finals


def _warn(message, category, filename, lineno, file=None, line=None):
    print(f'warning: {message}', file=sys.stderr)


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.showwarning = _warn
    try:
        opts = _check_args(args)
        _planned(args)
        if not osp.isfile(args.checkpoint):
            raise SlideError(f'{args.checkpoint}: no such checkpoint')
        return _run(args, opts)
    except (SlideError, FileExistsError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1


def _run(args, opts: TileOptions) -> int:
    from functools import partial

    from tqdm import tqdm

    from ..checkpoint import sha256_of
    from .folder import segment_folder
    from .model import build_slide_model
    from .runner import segment_slide
    model = build_slide_model(args.config, args.checkpoint, args.device,
                              args.gate, args.crf, args.tta)
    run_info = dict(config=osp.abspath(args.config),
                    checkpoint=osp.abspath(args.checkpoint),
                    checkpoint_sha256=sha256_of(args.checkpoint),
                    options=model.options, device=args.device)
    for path in args.inputs:
        name = osp.basename(osp.normpath(path))
        progress = None if args.no_progress else partial(
            tqdm, desc=name[:30], unit='tile' if osp.isfile(path) else 'img',
            dynamic_ncols=True, leave=False)
        common = dict(mpp=args.mpp, mpp_slide=args.mpp_slide,
                      overwrite=args.overwrite, progress=progress,
                      run_info=run_info)
        if osp.isdir(path):
            outputs = segment_folder(model, path, args.out, opts, **common)
        else:
            outputs = segment_slide(model, path, args.out, opts,
                                    min_region_um2=args.min_region, **common)
        print(f'{path}:')
        for key, out in outputs.items():
            print(f'  {key:<12} {out}')
    return 0
