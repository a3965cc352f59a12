"""Seeded random streams, slide styles and TCGA-like file names."""
import math
from typing import List, Tuple

import numpy as np

from .layout import sample_composition
from .params import (
    BACKGROUND,
    BACKGROUND_PROBABILITY,
    CLASS_MIXES,
    FORCED_SINGLE_PERIOD,
    PATCHES_PER_ROI,
    ROIS_PER_SLIDE,
    TISSUE_CLASSES,
)
from .stain import StainStyle, sample_style

_SPLIT_IDS = {'train': 0, 'val': 1, 'test': 2}
_STREAM_SAMPLE, _STREAM_ROI, _STREAM_SLIDE, _STREAM_BARCODE = 0, 1, 2, 3
_TCGA_SITES = ('A1', 'A2', 'A7', 'A8', 'AN', 'AO', 'AR', 'B6', 'BH', 'C8',
               'D8', 'E2', 'E9', 'EW', 'GM', 'LL', 'OL', 'S3')
_BARCODE_CHARS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789'


# -------------------------------------------------------------- naming
def _split_rng(seed: int, split: str, stream: int,
               index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _SPLIT_IDS[split], stream, index])


def sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """Generator of every random draw of sample ``index`` of ``split``."""
    return _split_rng(seed, split, _STREAM_SAMPLE, index)


def slide_style(seed: int, split: str, slide: int) -> StainStyle:
    """Deterministic stain style of slide ``slide`` of ``split``."""
    return sample_style(_split_rng(seed, split, _STREAM_SLIDE, slide))


def _barcode(rng: np.random.Generator) -> str:
    site = _TCGA_SITES[int(rng.integers(len(_TCGA_SITES)))]
    chars = ''.join(_BARCODE_CHARS[i]
                    for i in rng.integers(len(_BARCODE_CHARS), size=4))
    return f'TCGA-{site}-{chars}-DX1'


def count_slides(count: int) -> int:
    rois = max(1, math.ceil(count / PATCHES_PER_ROI))
    return max(1, math.ceil(rois / ROIS_PER_SLIDE))


def plan_split(seed: int, split: str, count: int) -> List[Tuple[str, int]]:
    """Name stems and slide ids of the patches of one split.

    Patches come in regions of interest (ROIs) of :data:`PATCHES_PER_ROI`;
    ROIs cycle over the split's slides.  A stem looks like
    ``TCGA-A1-A0SK-DX1_xmin45749_ymin25055_MPP-0.2500+3``; training names
    append the label, e.g. ``[1101]``.

    Args:
        seed (int): data set seed.
        split (str): ``'train'``, ``'val'`` or ``'test'``.
        count (int): number of patches.

    Returns:
        list[tuple[str, int]]: ``(stem, slide)`` per patch, stems unique.
    """
    slides = count_slides(count)
    barcodes = [
        _barcode(_split_rng(seed, split, _STREAM_BARCODE, s))
        for s in range(slides)
    ]
    rois, seen = [], set()
    for roi in range(math.ceil(count / PATCHES_PER_ROI)):
        rng = _split_rng(seed, split, _STREAM_ROI, roi)
        xmin, ymin = (int(v) for v in rng.integers(1000, 120000, 2))
        name = f'{barcodes[roi % slides]}_xmin{xmin}_ymin{ymin}_MPP-0.2500'
        while name in seen:
            xmin += 1
            name = f'{barcodes[roi % slides]}_xmin{xmin}_ymin{ymin}_MPP-0.2500'
        seen.add(name)
        rois.append(name)
    return [(f'{rois[i // PATCHES_PER_ROI]}+{i % PATCHES_PER_ROI}',
             (i // PATCHES_PER_ROI) % slides) for i in range(count)]


def label_string(mask: np.ndarray) -> str:
    """Four-digit multi-hot label (TUM, STR, LYM, NEC) of a mask.

    Args:
        mask (np.ndarray): (S, S) class indices.

    Returns:
        str: e.g. ``'1101'``.
    """
    present = set(np.unique(mask).tolist())
    return ''.join('1' if c in present else '0' for c in TISSUE_CLASSES)


def composition_for_index(rng: np.random.Generator,
                          index: int,
                          class_mix: str = 'bcss') -> Tuple[int, ...]:
    """Classes of sample ``index``: forced single class or a random draw.

    Args:
        rng (np.random.Generator): the sample's generator.
        index (int): sample index within its split.
        class_mix (str): key of :data:`CLASS_MIXES` for the random draw.

    Returns:
        tuple[int]: class indices to place.
    """
    slot = index % FORCED_SINGLE_PERIOD
    if slot < len(TISSUE_CLASSES):
        extra = (BACKGROUND, ) if rng.random() < BACKGROUND_PROBABILITY else ()
        return (TISSUE_CLASSES[slot], ) + extra
    return sample_composition(rng, compositions=CLASS_MIXES[class_mix])
