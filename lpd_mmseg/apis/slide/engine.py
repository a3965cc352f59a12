"""Run a model over the tissue tiles of one image on the target grid and
stream out finished label rows (glass = background)."""
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterator, List, Optional, Tuple

import numpy as np

from .model import SlideModel, predict_tiles
from .reader import Resolution, SlideReader, SlideWarning
from .tiling import BandStitcher, tile_grid, window
from .tissue import box_tissue_fraction, tissue_mask

PREVIEW_MAX_SIDE = 2048  # thumbnail for tissue detection and overlays


@dataclass
class TileOptions:
    """How an image is cut and which tiles run.

    Attributes:
        tile (int): tile side on the target grid, pixels.
        overlap (int): overlap of neighbouring tiles, pixels.
        batch_size (int): tiles per model call.
        tissue_threshold (int, optional): saturation threshold 0..255
            (default: Otsu, clamped; see :mod:`.tissue`).
        min_tissue (float): a tile runs when more than this share of it
            is tissue (default 0: any tissue).
        workers (int): threads reading tiles ahead of the model (0: read
            in the main thread).
    """
    tile: int = 512
    overlap: int = 64
    batch_size: int = 8
    tissue_threshold: Optional[int] = None
    min_tissue: float = 0.0
    workers: int = 0


@dataclass
class GridResult:
    """What :func:`run_grid` measured."""
    counts: np.ndarray
    tiles_total: int
    tiles_run: int
    tissue_fraction: float
    tissue_threshold: int
    preview: np.ndarray
    preview_factor: int
    notes: List[str] = field(default_factory=list)


def preview_factor(size: Tuple[int, int],
                   max_side: int = PREVIEW_MAX_SIDE) -> int:
    """Smallest power of two ``d`` with ``max(size) / d <= max_side``."""
    d = 1
    while -(-max(size) // d) > max_side:
        d *= 2
    return d


def _batches(items: Iterator, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _tile_reader(reader: SlideReader, res: Resolution, boxes: list,
                 opts: TileOptions) -> Iterator[Tuple[tuple, np.ndarray]]:
    def read(box):
        return box, reader.read(res, *box)
    if opts.workers <= 0:
        yield from map(read, boxes)
        return
    # bounded look-ahead: at most two batches read ahead of the model
    ahead = max(2 * opts.batch_size, opts.workers)
    with ThreadPoolExecutor(max_workers=opts.workers) as pool:
        pending = [pool.submit(read, b) for b in boxes[:ahead]]
        nxt = ahead
        while pending:
            item = pending.pop(0).result()
            if nxt < len(boxes):
                pending.append(pool.submit(read, boxes[nxt]))
                nxt += 1
            yield item


def run_grid(slide_model: SlideModel, reader: SlideReader, res: Resolution,
             opts: TileOptions, emit: Callable[[int, np.ndarray], None],
             progress=None) -> GridResult:
    """Detect tissue, run the tissue tiles, stitch them and pass every
    finished block of label rows to ``emit(first_row, labels)``.

    Labels are ``0..C-1`` for tissue classes and ``C`` (background) on
    glass and on pixels of tiles that were not run.

    Args:
        slide_model (SlideModel): the model.
        reader (SlideReader): the open slide.
        res (Resolution): its target grid.
        opts (TileOptions): tiling options.
        emit (callable): receives ``(first_row, (rows, width) uint8)`` in
            row order, every row exactly once.
        progress (callable, optional): ``progress(total=n)`` returns an
            object with ``update(n)`` and ``close()`` (e.g. ``tqdm``).
    """
    width, height = res.size
    background = slide_model.num_classes - 1
    factor = preview_factor(res.size)
    preview = reader.read_downsampled(res, factor)
    tissue, threshold = tissue_mask(preview, res.target_mpp * factor,
                                    opts.tissue_threshold)
    boxes = tile_grid(width, height, opts.tile, opts.overlap)
    todo = [b for b in boxes
            if box_tissue_fraction(tissue, factor, *b) > opts.min_tissue]
    notes = []
    if not todo:
        msg = (f'{reader.path}: no tissue found (saturation threshold '
               f'{threshold}); the result is all background')
        warnings.warn(msg, SlideWarning)
        notes.append(msg)
    counts = np.zeros(slide_model.num_classes, np.int64)
    cols = np.arange(width) // factor

    def finish_rows(first, labels):
        rows = np.arange(first, first + len(labels)) // factor
        glass = ~tissue[rows[:, None], cols[None, :]]
        labels[glass] = background
        counts[:] += np.bincount(labels.ravel(),
                                 minlength=len(counts))[:len(counts)]
        emit(first, labels)

    stitcher = BandStitcher(width, height, slide_model.num_classes,
                            min(opts.tile, height), background)
    bar = progress(total=len(todo)) if progress is not None else None
    try:
        for batch in _batches(_tile_reader(reader, res, todo, opts),
                              opts.batch_size):
            probs = predict_tiles(slide_model, [t for _, t in batch])
            for (box, _), p in zip(batch, probs):
                weights = window(box, width, height, opts.overlap)
                for first, labels in stitcher.add(box[0], box[1], p,
                                                  weights):
                    finish_rows(first, labels)
            if bar is not None:
                bar.update(len(batch))
        for first, labels in stitcher.finish():
            finish_rows(first, labels)
    finally:
        if bar is not None:
            bar.close()
    return GridResult(counts, len(boxes), len(todo),
                      float(tissue.mean()) if tissue.size else 0.0,
                      threshold, preview, factor, notes)
