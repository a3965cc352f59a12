"""Tile grid, blending window and the streaming band that stitches tile
predictions into a label map without seams.

Tiles of ``tile`` pixels overlap by ``overlap`` pixels; the last tile of a
row or column is moved back to end at the image border.  Each tile's class
probabilities are weighted by a window that falls linearly to a small
value over the overlap, summed, and the label is the argmax of the sum:
where two tiles meet, the prediction fades from one to the other instead
of jumping at a tile edge.  (Dividing by the summed weight would not change
an argmax, so it is never computed.)

The band holds only one row of tiles at a time: when the next tile row
starts at ``y``, every image row above ``y`` is final and leaves the band,
so memory is ``(C + 1) x tile x width`` (float16), whatever the height.
"""
from typing import Iterator, List, Tuple

import numpy as np

WINDOW_FLOOR = 1e-3  # weight at a tile's outermost pixel (never zero)


def tile_starts(length: int, tile: int, stride: int) -> List[int]:
    """Start offsets covering ``0..length`` with tiles of ``tile`` pixels
    every ``stride`` pixels; the last one ends at ``length``.

    >>> tile_starts(10, 4, 3)
    [0, 3, 6]
    >>> tile_starts(3, 4, 3)
    [0]
    """
    if tile <= 0 or stride <= 0 or stride > tile:
        raise ValueError(f'need 0 < stride <= tile, got tile={tile}, '
                         f'stride={stride}')
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def tile_grid(width: int, height: int, tile: int,
              overlap: int) -> List[Tuple[int, int, int, int]]:
    """``(x, y, w, h)`` boxes in row-major order (rows by increasing
    ``y``); ``w``/``h`` are smaller than ``tile`` only when the image is.
    """
    if not 0 <= overlap < tile:
        raise ValueError(f'overlap must be in [0, tile), got {overlap} for '
                         f'tile {tile}')
    stride = tile - overlap
    boxes = []
    for y in tile_starts(height, tile, stride):
        for x in tile_starts(width, tile, stride):
            boxes.append((x, y, min(tile, width), min(tile, height)))
    return boxes


def ramp(length: int, overlap: int, start: bool = True,
         end: bool = True) -> np.ndarray:
    """``(length,)`` float32 weights: 1 in the middle, falling linearly to
    :data:`WINDOW_FLOOR` over ``overlap`` pixels at the start and/or end
    (a side that lies on the image border, where no other tile blends in,
    keeps weight 1)."""
    weights = np.ones(length, np.float32)
    n = min(overlap, length // 2)
    if n > 0:
        edge = np.linspace(WINDOW_FLOOR, 1.0, n + 1, dtype=np.float32)[:-1]
        if start:
            weights[:n] = edge
        if end:
            weights[length - n:] = edge[::-1]
    return weights


def window(box: Tuple[int, int, int, int], width: int, height: int,
           overlap: int) -> np.ndarray:
    """``(h, w)`` separable blending window of the tile ``box`` =
    ``(x, y, w, h)`` in a ``width x height`` image (outer product of two
    :func:`ramp`, flat on sides at the image border)."""
    x, y, w, h = box
    rows = ramp(h, overlap, y > 0, y + h < height)
    cols = ramp(w, overlap, x > 0, x + w < width)
    return rows[:, None] * cols[None, :]


class BandStitcher:
    """Accumulate weighted tile probabilities, row of tiles by row of tiles,
    and hand back finished label rows.

    Args:
        width (int): image width.
        height (int): image height.
        num_channels (int): ``C + 1`` (tissue classes and background).
        band_height (int): the tile height.
        background (int): label of pixels no tile covered (``C``).
    """

    def __init__(self, width: int, height: int, num_channels: int,
                 band_height: int, background: int):
        self.width, self.height = width, height
        self.background = background
        self.band = np.zeros((num_channels, min(band_height, height), width),
                             np.float16)
        self.top = 0  # image row of band row 0
        self.done = 0  # rows already handed out

    def _flush_to(self, y: int) -> Iterator[Tuple[int, np.ndarray]]:
        """Yield ``(first row, labels (rows, width) uint8)`` up to ``y``
        and shift the band down so that it starts at ``y``."""
        band_rows = self.band.shape[1]
        while self.done < y:
            rows = min(y - self.done, band_rows)
            part = self.band[:, :rows]
            labels = part.argmax(axis=0).astype(np.uint8)
            labels[part.max(axis=0) <= 0] = self.background
            yield self.done, labels
            keep = band_rows - rows
            if keep > 0:
                self.band[:, :keep] = self.band[:, rows:]
            self.band[:, keep:] = 0
            self.done += rows
        self.top = max(self.top, y)

    def add(self, x: int, y: int, probs: np.ndarray,
            weights: np.ndarray) -> Iterator[Tuple[int, np.ndarray]]:
        """Add one tile; yields the rows that became final.

        Args:
            x, y (int): top-left of the tile in the image.
            probs (np.ndarray): ``(C + 1, h, w)`` probabilities.
            weights (np.ndarray): ``(h, w)`` blending window.
        """
        if y < self.top:
            raise ValueError(f'tiles must come in rows of increasing y: got '
                             f'y={y} after y={self.top}')
        yield from self._flush_to(y)
        h, w = probs.shape[1:]
        if y + h - self.top > self.band.shape[1]:
            raise ValueError(f'tile of height {h} at y={y} does not fit the '
                             f'band of {self.band.shape[1]} rows')
        region = self.band[:, y - self.top:y - self.top + h, x:x + w]
        region += (probs * weights[None]).astype(np.float16)

    def finish(self) -> Iterator[Tuple[int, np.ndarray]]:
        """Yield the remaining rows down to the image bottom."""
        yield from self._flush_to(self.height)
