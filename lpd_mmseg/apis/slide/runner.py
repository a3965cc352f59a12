"""Segment one slide (or large image) into ``<out>/<stem>/``: labels.tif,
overlay.png, <stem>.geojson, areas.csv, run.json."""
import os.path as osp
import time
import warnings
from dataclasses import asdict
from typing import Optional

from .engine import GridResult, TileOptions, run_grid
from .model import SlideModel
from .reader import Resolution, SlideError, SlideReader, SlideWarning
from .vectorize import MIN_REGION_UM2, feature_collection, label_features
from .writers import (
    LevelFiles,
    StagedFolder,
    area_rows,
    write_csv,
    write_json,
    write_pyramid_tiff,
)

VECTOR_MAX_SIDE = 4096  # GeoJSON traced on the pyramid level <= this
AREA_FIELDS = ('class', 'pixels', 'area_mm2', 'share_of_tissue')


def versions() -> dict:
    """Versions of the packages that shaped a result."""
    import mmengine
    import mmseg
    import openslide
    import tifffile
    import torch

    import lpd_mmseg
    return dict(lpd_mmseg=lpd_mmseg.__version__, torch=torch.__version__,
                mmseg=mmseg.__version__, mmengine=mmengine.__version__,
                openslide=getattr(openslide, '__library_version__', ''),
                openslide_python=openslide.__version__,
                tifffile=tifffile.__version__)


def target_mpp_of(slide_model: SlideModel, mpp: Optional[float],
                  source: str) -> float:
    """``--mpp`` or the training MPP of the model's dataset metainfo."""
    if mpp is not None:
        return float(mpp)
    if slide_model.training_mpp is None:
        raise SlideError(
            f'{source}: the config records no training MPP (dataset '
            "metainfo 'mpp'); pass --mpp with the microns per pixel the "
            'model was trained at')
    return slide_model.training_mpp


def check_upsampling(path: str, res: Resolution) -> Optional[str]:
    """A warning text when the target grid is finer than level 0."""
    if res.base_mpp > res.target_mpp * 1.05:
        msg = (f'{path}: the slide ({res.base_mpp:g} um/px) is coarser than '
               f'the target {res.target_mpp:g} um/px; it is upsampled '
               f'{res.base_mpp / res.target_mpp:.2f}x')
        warnings.warn(msg, SlideWarning)
        return msg
    return None


def _level_for(levels: LevelFiles, max_side: int) -> int:
    for k, size in enumerate(levels.sizes):
        if max(size) <= max_side:
            return k
    return len(levels.sizes) - 1


def slide_outputs(out_root: str, path: str) -> str:
    """The result folder of one slide: ``<out_root>/<file stem>``."""
    return osp.join(out_root, osp.splitext(osp.basename(path))[0])


def segment_slide(slide_model: SlideModel, path: str, out_root: str,
                  opts: TileOptions, mpp: Optional[float] = None,
                  mpp_slide: Optional[float] = None, overwrite: bool = False,
                  min_region_um2: float = MIN_REGION_UM2, progress=None,
                  run_info: Optional[dict] = None) -> dict:
    """Segment one slide; returns ``{output name: path}``.

    Nothing appears under ``out_root`` until every output is complete.
    """
    from ...visualization.overlay import overlay_figure, save_figure
    start = time.time()
    final = slide_outputs(out_root, path)
    stem = osp.basename(final)
    staged = StagedFolder(final, overwrite)
    reader = levels = None
    try:
        reader = SlideReader(path, mpp_slide)
        res = reader.resolution(target_mpp_of(slide_model, mpp, path))
        notes = [n for n in [check_upsampling(path, res)] if n]
        levels = LevelFiles(staged.path, *res.size)
        grid: GridResult = run_grid(slide_model, reader, res, opts,
                                    levels.append, progress)
        levels.close()
        notes += grid.notes
        names, palette = slide_model.class_names, slide_model.palette
        background = len(names) - 1
        write_pyramid_tiff(staged.file('labels.tif'), levels,
                           res.target_mpp,
                           f'lpd_mmseg class labels: 0..{background - 1} = '
                           f'{", ".join(names[:-1])}; {background} = '
                           f'{names[-1]}')
        k = _level_for(levels, VECTOR_MAX_SIDE)
        vec_factor = 2 ** k
        features = label_features(
            levels.read_level(k), names, palette,
            vec_factor * res.to_level0,
            min_region_um2 / (res.target_mpp * vec_factor) ** 2)
        write_json(staged.file(f'{stem}.geojson'),
                   feature_collection(features), indent=None)
        preview = levels.read_level(
            grid.preview_factor.bit_length() - 1)[:grid.preview.shape[0],
                                                  :grid.preview.shape[1]]
        save_figure(staged.file('overlay.png'), overlay_figure(
            grid.preview, [('image', None), ('prediction', preview)],
            names, palette, background,
            title=f'{osp.basename(path)} - {res.target_mpp:g} um/px'))
        rows = area_rows(grid.counts, names, res.target_mpp)
        write_csv(staged.file('areas.csv'), rows, AREA_FIELDS)
        levels.remove()
        info = dict(run_info or {})
        info.update(
            slide=dict(path=osp.abspath(path), backend=reader.backend,
                       vendor=reader.vendor, level0_size=reader.dimensions,
                       level_downsamples=reader.level_downsamples,
                       mpp=res.base_mpp, mpp_source=reader.mpp_source),
            target=dict(mpp=res.target_mpp, size=res.size,
                        read_level=res.level, level_mpp=res.level_mpp,
                        level0_pixels_per_label_pixel=res.to_level0),
            tiling=asdict(opts), tiles=dict(
                total=grid.tiles_total, run=grid.tiles_run,
                skipped=grid.tiles_total - grid.tiles_run),
            tissue=dict(saturation_threshold=grid.tissue_threshold,
                        fraction_of_slide=round(grid.tissue_fraction, 6)),
            geojson=dict(features=len(features),
                         min_region_um2=min_region_um2,
                         traced_at_downsample=vec_factor),
            areas=rows, warnings=notes, versions=versions(),
            seconds=round(time.time() - start, 3))
        write_json(staged.file('run.json'), info)
        staged.commit()
    except BaseException:
        if levels is not None:
            levels.close()
        staged.discard()
        raise
    finally:
        if reader is not None:
            reader.close()
    return {name: osp.join(final, name) for name in (
        'labels.tif', 'overlay.png', f'{stem}.geojson', 'areas.csv',
        'run.json')}
