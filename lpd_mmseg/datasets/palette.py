"""Class names, colours and palette-PNG masks: the one home of all three.

Masks of both data sets are 8-bit palette ("P" mode) PNGs whose pixel
values are class indices: the tissue classes first, the background last.
The datasets' ``METAINFO``, the synthetic generator, the metric's
prediction writer and the pseudo-mask writer all take their names and
colours from here and write through :func:`save_palette_mask`.
"""
import os
import os.path as osp
from typing import List, Optional, Sequence

import numpy as np

#: BCSS-WSSS classes in label order; index 4 is the background.
BCSS_CLASSES = ('TUM', 'STR', 'LYM', 'NEC', 'BACK')
#: Colour (RGB) of each BCSS-WSSS class, as in the released masks.
BCSS_PALETTE = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (153, 0, 255),
                (255, 255, 255))
#: LUAD-HistoSeg classes in label order; index 4 is the background.
LUAD_CLASSES = ('TE', 'NEC', 'LYM', 'TAS', 'BACK')
#: Colour (RGB) of each LUAD-HistoSeg class, as in the released masks.
LUAD_PALETTE = ((205, 51, 51), (0, 255, 0), (65, 105, 225), (255, 165, 0),
                (255, 255, 255))

#: Image modes that hold one class index per pixel.
INDEX_MODES = ('P', 'L', 'I', 'I;16')


def metainfo(classes: Sequence[str],
             palette: Sequence[Sequence[int]],
             mpp: Optional[float] = None) -> dict:
    """MMSeg ``METAINFO`` dict: class names and ``[R, G, B]`` lists, plus
    the patches' microns per pixel when known (``mpp``, the default
    resolution of slide inference)."""
    if len(classes) != len(palette):
        raise ValueError(f'{len(classes)} class names but {len(palette)} '
                         'colours; expected one colour per class')
    meta = dict(classes=tuple(classes),
                palette=[list(rgb) for rgb in palette])
    if mpp is not None:
        meta['mpp'] = float(mpp)
    return meta


def palette_bytes(palette: Sequence[Sequence[int]]) -> List[int]:
    """Flat 768-entry PIL palette from RGB triples (zero-padded).

    A full 256-colour palette keeps the PNG at 8 bits per pixel whatever
    the largest value is (PIL packs a short palette into fewer bits).
    """
    flat = [int(v) for rgb in palette for v in rgb]
    if len(flat) > 768 or len(flat) % 3:
        raise ValueError(f'palette must hold at most 256 RGB triples, got '
                         f'{len(flat) / 3:g}')
    return flat + [0] * (768 - len(flat))


def save_palette_mask(mask: np.ndarray, path: str,
                      palette: Sequence[Sequence[int]]) -> None:
    """Write ``(H, W)`` class indices as a palette ("P" mode) PNG.

    The file is written under a temporary name and then renamed, so an
    interrupted run never leaves a truncated mask behind.

    Args:
        mask (np.ndarray): ``(H, W)`` integers in ``0..len(palette)-1``.
        path (str): output ``.png`` path.
        palette (list): RGB triples, one per class value.

    Raises:
        ValueError: ``mask`` is not 2-D or holds a value without a colour.
    """
    from PIL import Image
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f'{path}: mask must be (H, W), got shape '
                         f'{mask.shape}')
    if mask.size and (mask.min() < 0 or mask.max() >= len(palette)):
        raise ValueError(f'{path}: mask values [{mask.min()}, {mask.max()}] '
                         f'have no colour in a {len(palette)}-entry palette')
    image = Image.fromarray(np.ascontiguousarray(mask, np.uint8), mode='L')
    image.putpalette(palette_bytes(palette))  # 'L' -> 'P'
    partial = path + '.partial'
    image.save(partial, format='PNG')
    os.replace(partial, path)


def read_index_mask(path: str) -> np.ndarray:
    """Read a palette or greyscale PNG of class indices as ``(H, W)``.

    Returns:
        np.ndarray: the stored indices (not the colours), dtype as stored.

    Raises:
        FileNotFoundError: no such file.
        ValueError: an RGB (or other multi-channel) image.
    """
    from PIL import Image
    if not osp.isfile(path):
        raise FileNotFoundError(f"mask '{path}': no such file")
    with Image.open(path) as img:
        if img.mode not in INDEX_MODES:
            raise ValueError(f"mask '{path}' is a {img.mode} image; expected "
                             'a palette or greyscale PNG of class indices')
        return np.array(img)
