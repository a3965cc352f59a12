"""Segment a folder of patches into ``<out>/<folder name>/``: masks/ (one
palette PNG per image, named after it), overlays/, areas.csv (one row per
image and class), run.json."""
import os
import os.path as osp
import time
import warnings
from dataclasses import asdict
from typing import List, Optional, Tuple

import numpy as np
from PIL import Image

from .engine import TileOptions, run_grid
from .model import SlideModel
from .reader import SlideError, SlideReader, SlideWarning
from .runner import check_upsampling, target_mpp_of, versions
from .writers import StagedFolder, area_rows, write_csv, write_json

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.tif', '.tiff', '.bmp')


def list_images(folder: str) -> Tuple[List[str], List[str]]:
    """``(image paths, other file names)`` of a folder, sorted; hidden
    files are ignored."""
    images, others = [], []
    for name in sorted(os.listdir(folder)):
        if name.startswith('.'):
            continue
        path = osp.join(folder, name)
        if osp.isfile(path) and name.lower().endswith(IMAGE_SUFFIXES):
            images.append(path)
        else:
            others.append(name)
    return images, others


def _save_mask(path: str, labels: np.ndarray, palette) -> None:
    image = Image.fromarray(labels.astype(np.uint8), mode='L')
    flat = [v for rgb in palette for v in rgb]
    image.putpalette(flat + [0] * (768 - len(flat)))
    image.save(path)


def image_area_row(name: str, counts: np.ndarray, class_names,
                   mpp: float) -> dict:
    """One CSV row for one image: ``image``, ``mpp``, ``tissue_mm2`` and
    ``<class>_pixels`` / ``<class>_mm2`` / ``<class>_share`` per class
    (share of tissue; empty for the background)."""
    row = dict(image=name, mpp=mpp)
    per_class = area_rows(counts, class_names, mpp)
    row['tissue_mm2'] = round(sum(r['area_mm2'] for r in per_class[:-1]),
                              6)
    for r in per_class:
        row[f"{r['class']}_pixels"] = r['pixels']
        row[f"{r['class']}_mm2"] = r['area_mm2']
        row[f"{r['class']}_share"] = r['share_of_tissue']
    return row


def segment_folder(slide_model: SlideModel, folder: str, out_root: str,
                   opts: TileOptions, mpp: Optional[float] = None,
                   mpp_slide: Optional[float] = None,
                   overwrite: bool = False, progress=None,
                   run_info: Optional[dict] = None) -> dict:
    """Segment every image of ``folder``; patches are taken to be at the
    target MPP unless ``mpp_slide`` (or the file) says otherwise."""
    from ...visualization.overlay import overlay_figure, save_figure
    start = time.time()
    images, others = list_images(folder)
    notes = []
    if others:
        msg = (f'{folder}: skipping {len(others)} entries that are not '
               f'images ({", ".join(others[:5])}'
               f'{", ..." if len(others) > 5 else ""}); images end in '
               f'{", ".join(IMAGE_SUFFIXES)}')
        warnings.warn(msg, SlideWarning)
        notes.append(msg)
    if not images:
        raise SlideError(f'{folder}: no images found (expected files '
                         f'ending in {", ".join(IMAGE_SUFFIXES)})')
    target = target_mpp_of(slide_model, mpp, folder)
    final = osp.join(out_root, osp.basename(osp.normpath(folder)))
    staged = StagedFolder(final, overwrite)
    names, palette = slide_model.class_names, slide_model.palette
    background = len(names) - 1
    rows, per_image = [], []
    bar = progress(total=len(images)) if progress is not None else None
    try:
        os.makedirs(staged.file('masks'))
        os.makedirs(staged.file('overlays'))
        for path in images:
            with SlideReader(path, mpp_slide if mpp_slide is not None
                             else None) as reader:
                if reader.mpp is None:
                    reader.mpp, reader.mpp_source = target, 'assumed target'
                res = reader.resolution(target)
                note = check_upsampling(path, res)
                parts = []
                grid = run_grid(slide_model, reader, res, opts,
                                lambda first, lab: parts.append(lab))
                labels = np.concatenate(parts, axis=0)
                rgb = reader.read(res, 0, 0, *res.size)
            name = osp.basename(path)
            stem = osp.splitext(name)[0]
            _save_mask(staged.file(osp.join('masks', stem + '.png')),
                       labels, palette)
            save_figure(staged.file(osp.join('overlays', stem + '.png')),
                        overlay_figure(rgb, [('image', None),
                                             ('prediction', labels)],
                                       names, palette, background,
                                       title=name))
            rows.append(image_area_row(name, grid.counts, names,
                                       res.target_mpp))
            per_image.append(dict(
                image=name, mpp=res.base_mpp, mpp_source=reader.mpp_source,
                size=res.size, tiles_run=grid.tiles_run,
                tiles_skipped=grid.tiles_total - grid.tiles_run,
                warnings=[n for n in [note] + grid.notes if n]))
            if bar is not None:
                bar.update(1)
        write_csv(staged.file('areas.csv'), rows, list(rows[0]))
        info = dict(run_info or {})
        info.update(folder=osp.abspath(folder), target_mpp=target,
                    tiling=asdict(opts), images=per_image, warnings=notes,
                    versions=versions(),
                    seconds=round(time.time() - start, 3))
        write_json(staged.file('run.json'), info)
        staged.commit()
    except BaseException:
        staged.discard()
        raise
    finally:
        if bar is not None:
            bar.close()
    return dict(masks=osp.join(final, 'masks'),
                overlays=osp.join(final, 'overlays'),
                **{'areas.csv': osp.join(final, 'areas.csv'),
                   'run.json': osp.join(final, 'run.json')})
