"""Open a slide or a large image and read it on a target-MPP grid.

Whole-slide formats (SVS, NDPI, MRXS, generic tiled / pyramidal TIFF, ...)
are read with OpenSlide (``openslide-python`` + the ``openslide-bin``
wheel); plain PNG / JPEG / untiled TIFF regions fall back to Pillow through
``openslide.ImageSlide``.  Every read returns RGB uint8, with transparent
(unscanned) areas composited onto white, i.e. glass.

The *target grid* is the slide resampled to the target microns per pixel:
output pixel ``(x, y)`` covers level-0 pixels ``x * f .. (x + 1) * f`` with
``f = target_mpp / base_mpp``.
"""
import math
import os.path as osp
from dataclasses import dataclass
from typing import Optional, Tuple

import cv2
import numpy as np

from .cvthreads import single_threaded

# A target MPP finer than the base level by more than this factor would
# invent detail: refused (SlideError).  2x upsampling is allowed with a
# warning, so a 20x scan (~0.5 um/px) can be run with a 40x (0.25) model.
MAX_UPSAMPLE = 2.05
# Plain images carry a DPI; below this many dots per inch it is a screen
# or print default (72, 96, 300, ...), not a microscope calibration.
MIN_MICROSCOPE_DPI = 2540.0
# Pillow refuses images above ~179 Mpx by default (decompression-bomb
# guard); large regions given on purpose are allowed up to this size.
MAX_PLAIN_IMAGE_PIXELS = 2_000_000_000


class SlideError(ValueError):
    """A slide that cannot be read or run as asked; the message names the
    file."""


class SlideWarning(UserWarning):
    """Something the user should know about a slide (upsampling, no
    tissue)."""


@dataclass
class Resolution:
    """How a slide maps onto the target grid.

    Attributes:
        base_mpp (float): microns per pixel of level 0.
        target_mpp (float): microns per pixel of the target grid.
        level (int): pyramid level the pixels are read from.
        level_mpp (float): microns per pixel of that level.
        size (tuple): ``(width, height)`` of the target grid.
    """
    base_mpp: float
    target_mpp: float
    level: int
    level_mpp: float
    size: Tuple[int, int]

    @property
    def to_level0(self) -> float:
        """Level-0 pixels per target pixel."""
        return self.target_mpp / self.base_mpp


def choose_level(level_downsamples, base_mpp: float,
                 target_mpp: float) -> int:
    """Index of the coarsest pyramid level that is still at least as fine
    as the target (within 5 %), so that reading only ever shrinks; level 0
    when even level 0 is coarser than the target."""
    best = 0
    for i, ds in enumerate(level_downsamples):
        if base_mpp * float(ds) <= target_mpp * 1.05:
            if float(ds) >= float(level_downsamples[best]):
                best = i
    return best


def _mpp_from_dpi(image_info: dict) -> Optional[float]:
    dpi = image_info.get('dpi')
    if not dpi:
        return None
    value = float(dpi[0]) if isinstance(dpi, (tuple, list)) else float(dpi)
    if value < MIN_MICROSCOPE_DPI:
        return None
    return 25400.0 / value


class SlideReader:
    """A slide (or plain image) with its pixel size.

    Args:
        path (str): the file.
        mpp (float, optional): microns per pixel of level 0, overriding
            (or standing in for) what the file records.
    """

    def __init__(self, path: str, mpp: Optional[float] = None):
        import openslide
        from PIL import Image
        self.path = path
        if not osp.isfile(path):
            raise SlideError(f'{path}: no such file')
        Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0,
                                     MAX_PLAIN_IMAGE_PIXELS)
        try:
            self._slide = openslide.open_slide(path)
        except Exception as e:  # OpenSlide / Pillow errors vary by format
            raise SlideError(
                f'{path}: neither OpenSlide nor Pillow can read this file '
                f'({type(e).__name__}: {e}). Expected a whole-slide image '
                '(SVS, NDPI, MRXS, tiled TIFF, ...) or a PNG/JPEG/TIFF '
                'image.') from e
        self.backend = ('openslide' if isinstance(self._slide,
                                                  openslide.OpenSlide)
                        else 'pillow')
        if self.backend == 'pillow':
            # decode once, here: threads reading tiles must not race on
            # Pillow's lazy loading
            image = getattr(self._slide, '_image', None)
            if image is not None:
                try:
                    image.load()
                except Exception as e:
                    raise SlideError(f'{path}: the image cannot be decoded '
                                     f'({type(e).__name__}: {e})') from e
        props = self._slide.properties
        self.vendor = props.get('openslide.vendor', self.backend)
        self.file_mpp = None
        if 'openslide.mpp-x' in props:
            self.file_mpp = float(props['openslide.mpp-x'])
        elif self.backend == 'pillow':
            self.file_mpp = _mpp_from_dpi(self._image_info())
        if mpp is not None and not mpp > 0:
            raise SlideError(f'{path}: --mpp-slide must be > 0, got {mpp}')
        self.mpp = float(mpp) if mpp is not None else self.file_mpp
        self.mpp_source = ('--mpp-slide' if mpp is not None else
                           'file' if self.file_mpp is not None else None)

    def _image_info(self) -> dict:
        image = getattr(self._slide, '_image', None)
        return dict(getattr(image, 'info', {}) or {})

    # ----------------------------------------------------------- geometry
    @property
    def dimensions(self) -> Tuple[int, int]:
        """Level-0 ``(width, height)``."""
        return tuple(self._slide.dimensions)

    @property
    def level_downsamples(self):
        return tuple(float(d) for d in self._slide.level_downsamples)

    def resolution(self, target_mpp: float) -> Resolution:
        """Plan the read for ``target_mpp`` (SlideError if impossible)."""
        if self.mpp is None:
            raise SlideError(
                f'{self.path}: the file records no microns per pixel '
                '(no openslide.mpp-x property / resolution tag). Pass '
                '--mpp-slide with the scan resolution (0.25 for a 40x scan, '
                '0.5 for 20x).')
        if not target_mpp > 0:
            raise SlideError(f'{self.path}: target MPP must be > 0, got '
                             f'{target_mpp}')
        ratio = self.mpp / target_mpp
        if ratio > MAX_UPSAMPLE:
            raise SlideError(
                f'{self.path}: target {target_mpp:g} um/px is {ratio:.1f}x '
                f'finer than the slide itself ({self.mpp:g} um/px at level '
                f'0); at most {MAX_UPSAMPLE:g}x upsampling is allowed. Use '
                f'a model trained at a coarser MPP or pass --mpp '
                f'{self.mpp:g} (or coarser).')
        level = choose_level(self.level_downsamples, self.mpp, target_mpp)
        width, height = self.dimensions
        size = (max(1, int(round(width * self.mpp / target_mpp))),
                max(1, int(round(height * self.mpp / target_mpp))))
        return Resolution(self.mpp, float(target_mpp), level,
                          self.mpp * self.level_downsamples[level], size)

    # -------------------------------------------------------------- pixels
    def _read_level(self, level: int, x: int, y: int, w: int,
                    h: int) -> np.ndarray:
        """``(h, w, 3)`` RGB of a box of level ``level`` pixels whose
        top-left is ``(x, y)`` in that level's pixels."""
        ds = self.level_downsamples[level]
        try:
            region = self._slide.read_region(
                (int(round(x * ds)), int(round(y * ds))), level, (w, h))
        except Exception as e:
            raise SlideError(f'{self.path}: reading a {w}x{h} region at '
                             f'level {level} failed ({e})') from e
        rgba = np.asarray(region.convert('RGBA'), dtype=np.float32)
        alpha = rgba[..., 3:4] / 255.0
        rgb = rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)
        return rgb.round().astype(np.uint8)

    @single_threaded
    def read(self, res: Resolution, x: int, y: int, w: int,
             h: int) -> np.ndarray:
        """``(h, w, 3)`` RGB uint8 of the target-grid box at ``(x, y)``.
        """
        scale = res.target_mpp / res.level_mpp  # level px per target px
        lx0, ly0 = int(math.floor(x * scale)), int(math.floor(y * scale))
        lx1 = max(lx0 + 1, int(math.ceil((x + w) * scale)))
        ly1 = max(ly0 + 1, int(math.ceil((y + h) * scale)))
        box = self._read_level(res.level, lx0, ly0, lx1 - lx0, ly1 - ly0)
        if box.shape[:2] == (h, w):
            return box
        shrink = box.shape[1] > w
        return cv2.resize(box, (w, h), interpolation=cv2.INTER_AREA
                          if shrink else cv2.INTER_LINEAR)

    @single_threaded
    def read_downsampled(self, res: Resolution, factor: int,
                         rows_per_read: int = 256) -> np.ndarray:
        """The whole target grid shrunk by ``factor`` (ceil division, so
        pixel ``i`` stands for target pixels ``i * factor ..``), read from
        the pyramid level nearest that scale in horizontal strips, so
        memory stays at one strip."""
        width, height = res.size
        size = (-(-width // factor), -(-height // factor))
        mpp = res.target_mpp * factor
        level = choose_level(self.level_downsamples, res.base_mpp, mpp)
        thumb = Resolution(res.base_mpp, mpp, level,
                           res.base_mpp * self.level_downsamples[level], size)
        parts = [self.read(thumb, 0, y, size[0],
                           min(rows_per_read, size[1] - y))
                 for y in range(0, size[1], rows_per_read)]
        return np.concatenate(parts, axis=0)

    def close(self) -> None:
        self._slide.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
