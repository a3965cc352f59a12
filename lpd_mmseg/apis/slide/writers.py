"""Output files of slide inference.

* :class:`LevelFiles` streams finished label rows to one raw file per
  pyramid level (level ``k`` = every ``2**k``-th row and column), so no
  label map of the slide's size is ever held in memory;
  :func:`write_pyramid_tiff` turns them into a tiled pyramidal TIFF that
  OpenSlide and QuPath read (every level a top-level page, reduced ones
  with ``subfiletype=1``, MPP in the resolution tags).
* areas (pixel counts -> mm^2 and share of tissue), CSV and JSON writers.
* :class:`StagedFolder`: everything is written into a hidden temporary
  folder beside the final one and renamed into place at the end, so an
  interrupted run leaves no half-written result.
"""
import csv
import json
import os
import os.path as osp
import shutil
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

TIFF_TILE = 256
SMALLEST_LEVEL = 512  # pyramid stops once the long side is at most this


def pyramid_sizes(width: int, height: int) -> List[Tuple[int, int]]:
    """``(w, h)`` of levels 0, 1, ... (each half the previous, ceil) until
    the long side is at most :data:`SMALLEST_LEVEL`."""
    sizes = [(width, height)]
    while max(sizes[-1]) > SMALLEST_LEVEL:
        w, h = sizes[-1]
        sizes.append((-(-w // 2), -(-h // 2)))
    return sizes


class LevelFiles:
    """Raw uint8 label rows of every pyramid level, appended in order.

    Args:
        folder (str): where the ``level<k>.raw`` files go.
        width, height (int): level-0 size.
    """

    def __init__(self, folder: str, width: int, height: int):
        self.sizes = pyramid_sizes(width, height)
        self.paths = [osp.join(folder, f'.level{k}.raw')
                      for k in range(len(self.sizes))]
        self._files = [open(p, 'wb') for p in self.paths]
        self._next_row = 0

    def append(self, first_row: int, rows: np.ndarray) -> None:
        """Add level-0 rows ``first_row .. first_row + len(rows)``."""
        if first_row != self._next_row:
            raise ValueError(f'rows must come in order: expected row '
                             f'{self._next_row}, got {first_row}')
        for k, f in enumerate(self._files):
            step = 2 ** k
            offset = (-first_row) % step
            f.write(np.ascontiguousarray(rows[offset::step, ::step]).tobytes())
        self._next_row += len(rows)

    def close(self) -> None:
        for f in self._files:
            f.close()

    def read_rows(self, level: int, y: int, rows: int) -> np.ndarray:
        """``(rows, w)`` of level ``level`` starting at row ``y``."""
        w, h = self.sizes[level]
        rows = min(rows, h - y)
        with open(self.paths[level], 'rb') as f:
            f.seek(y * w)
            data = np.fromfile(f, np.uint8, count=rows * w)
        return data.reshape(rows, w)

    def read_level(self, level: int) -> np.ndarray:
        return self.read_rows(level, 0, self.sizes[level][1])

    def remove(self) -> None:
        self.close()
        for p in self.paths:
            if osp.exists(p):
                os.remove(p)


def _tiles(levels: LevelFiles, level: int) -> Iterator[np.ndarray]:
    w, h = levels.sizes[level]
    for y in range(0, h, TIFF_TILE):
        strip = levels.read_rows(level, y, TIFF_TILE)
        for x in range(0, w, TIFF_TILE):
            yield strip[:, x:x + TIFF_TILE]


def write_pyramid_tiff(path: str, levels: LevelFiles, mpp: float,
                       description: str = '') -> None:
    """Tiled, zlib-compressed pyramidal TIFF of the label levels with
    ``mpp`` (microns per level-0 pixel) in the resolution tags."""
    import tifffile
    px_per_cm = 1e4 / mpp
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        for k, (w, h) in enumerate(levels.sizes):
            scale = 2 ** k
            tif.write(_tiles(levels, k), shape=(h, w), dtype=np.uint8,
                      tile=(TIFF_TILE, TIFF_TILE), compression='zlib',
                      photometric='minisblack',
                      subfiletype=1 if k else 0,
                      resolution=(px_per_cm / scale, px_per_cm / scale),
                      resolutionunit='CENTIMETER',
                      description=description if k == 0 else None,
                      metadata=None)


def area_rows(counts: np.ndarray, class_names: Sequence[str],
              mpp: float) -> List[Dict[str, object]]:
    """Per-class area table.

    Args:
        counts (np.ndarray): ``(C + 1,)`` pixel counts, background last.
        class_names (list[str]): ``C + 1`` names.
        mpp (float): microns per counted pixel.

    Returns:
        list[dict]: ``class``, ``pixels``, ``area_mm2`` and
        ``share_of_tissue`` (tissue pixels / all tissue pixels; empty for
        the background, NaN-free: 0 when there is no tissue).
    """
    counts = np.asarray(counts, np.int64)
    tissue = int(counts[:-1].sum())
    mm2_per_px = (mpp * mpp) / 1e6
    rows = []
    for c, name in enumerate(class_names):
        share = '' if c == len(class_names) - 1 else (
            round(counts[c] / tissue, 6) if tissue else 0.0)
        rows.append(dict(**{'class': str(name)}, pixels=int(counts[c]),
                         area_mm2=round(float(counts[c]) * mm2_per_px, 6),
                         share_of_tissue=share))
    return rows


def write_csv(path: str, rows: List[dict], fields: Sequence[str]) -> None:
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(fields))
        writer.writeheader()
        writer.writerows(rows)


def write_json(path: str, data: dict, indent: Optional[int] = 1) -> None:
    with open(path, 'w') as f:
        json.dump(data, f, indent=indent)
        f.write('\n')


class StagedFolder:
    """Write into ``<parent>/.<name>.partial`` and move it to
    ``<parent>/<name>`` on :meth:`commit`.

    Args:
        final (str): the folder the results end up in.
        overwrite (bool): replace an existing ``final`` (only at commit,
            after everything was written); otherwise it must not exist.
    """

    def __init__(self, final: str, overwrite: bool = False):
        self.final = final
        parent, name = osp.split(osp.abspath(final))
        self.path = osp.join(parent, f'.{name}.partial')
        self.overwrite = overwrite
        check_new_output(final, overwrite)
        if osp.exists(self.path):
            shutil.rmtree(self.path)  # left by an interrupted earlier run
        os.makedirs(self.path)

    def file(self, name: str) -> str:
        return osp.join(self.path, name)

    def commit(self) -> str:
        if osp.exists(self.final):
            check_new_output(self.final, self.overwrite)
            old = self.path + '.old'
            os.replace(self.final, old)
            os.replace(self.path, self.final)
            shutil.rmtree(old)
        else:
            os.replace(self.path, self.final)
        return self.final

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def check_new_output(final: str, overwrite: bool) -> None:
    """FileExistsError if ``final`` exists and ``overwrite`` is off."""
    if osp.exists(final) and not overwrite:
        raise FileExistsError(
            f'{final} already exists; pass --overwrite to replace it or '
            'choose another --out folder')
