"""Constants of the generator and checks of its arguments."""
import math
from typing import Dict, Iterable, Optional, Tuple

import numpy as np

from ...datasets.palette import BCSS_CLASSES, BCSS_PALETTE

# --------------------------------------------------------------- constants
#: Class names and colours of BCSS-WSSS (owned by the datasets package).
CLASS_NAMES = BCSS_CLASSES
PALETTE = BCSS_PALETTE
TISSUE_CLASSES = tuple(range(len(CLASS_NAMES) - 1))
BACKGROUND = len(CLASS_NAMES) - 1

#: A tissue class must cover at least this share of a patch to be kept in
#: the mask (and hence in the label); see :func:`min_class_pixels`.
MIN_CLASS_FRACTION = 0.02
MIN_SIZE = 32
MAX_SIZE = 2048
REFERENCE_SIZE = 224
GENERATOR_VERSION = 1
MANIFEST_NAME = 'synthetic_manifest.json'
SPLITS = ('train', 'val', 'test')
#: Everything this generator writes below ``out_dir`` (and nothing else is
#: ever removed, even with ``overwrite=True``).
OWNED_ENTRIES = ('training', 'training_masks', 'val', 'test', MANIFEST_NAME)

#: (tissue classes, probability) of a patch's composition.
COMPOSITIONS = (
    ((0, ), 0.13),
    ((1, ), 0.09),
    ((2, ), 0.05),
    ((3, ), 0.04),
    ((0, 1), 0.24),
    ((1, 2), 0.09),
    ((0, 2), 0.05),
    ((0, 3), 0.07),
    ((1, 3), 0.02),
    ((2, 3), 0.01),
    ((0, 1, 2), 0.11),
    ((0, 1, 3), 0.05),
    ((0, 2, 3), 0.02),
    ((1, 2, 3), 0.01),
    ((0, 1, 2, 3), 0.02),
)
#: A second class mix, for checking that a result holds on more than one
#: data configuration: fewer single-class patches, more multi-class ones,
#: and a larger share of lymphocytes and necrosis.
MULTI_COMPOSITIONS = (
    ((0, ), 0.05),
    ((1, ), 0.05),
    ((2, ), 0.05),
    ((3, ), 0.05),
    ((0, 1), 0.10),
    ((1, 2), 0.08),
    ((0, 2), 0.06),
    ((0, 3), 0.08),
    ((1, 3), 0.06),
    ((2, 3), 0.04),
    ((0, 1, 2), 0.12),
    ((0, 1, 3), 0.08),
    ((0, 2, 3), 0.05),
    ((1, 2, 3), 0.05),
    ((0, 1, 2, 3), 0.08),
)
#: Named class mixes: name -> compositions ('bcss' is the default).
CLASS_MIXES = {'bcss': COMPOSITIONS, 'multi': MULTI_COMPOSITIONS}
#: Chance that a patch also holds a white background region.
BACKGROUND_PROBABILITY = 0.3
#: Background never covers much more than this share of a patch.
MAX_BACKGROUND_FRACTION = 0.55
#: Indices ``i`` with ``i % FORCED_SINGLE_PERIOD == c`` (c < 4) hold only
#: tissue class ``c`` (plus maybe background).
FORCED_SINGLE_PERIOD = 50
#: Patches per region of interest (the ``+<index>`` part of a name).
PATCHES_PER_ROI = 12
#: Regions of interest per slide (a slide shares one stain style).
ROIS_PER_SLIDE = 3

#: Morphologies each tissue class is drawn from (one per class and patch).
MORPHOLOGIES: Dict[int, Tuple[str, ...]] = {
    0: ('solid_sheet', 'glandular', 'trabecular_cords', 'small_cell_nests'),
    1: ('dense_collagen', 'loose_stroma', 'cellular_stroma'),
    2: ('dense_aggregate', 'infiltrate', 'plasma_rich'),
    3: ('granular_debris', 'ghost_cells', 'comedo_pyknotic'),
}


# --------------------------------------------------------------- validation
def check_int(name: str,
              value,
              minimum: int,
              maximum: Optional[int] = None) -> int:
    if isinstance(value,
                  (bool, np.bool_)) or not isinstance(value,
                                                      (int, np.integer)):
        raise ValueError(f'{name} must be an integer, got {value!r}')
    value = int(value)
    if value < minimum or (maximum is not None and value > maximum):
        bound = (f'between {minimum} and {maximum}'
                 if maximum is not None else f'>= {minimum}')
        raise ValueError(f'{name} must be {bound}, got {value}')
    return value


def check_size(size) -> int:
    return check_int('size', size, MIN_SIZE, MAX_SIZE)


def check_classes(classes: Iterable[int]) -> Tuple[int, ...]:
    try:
        values = [int(c) for c in classes]
    except (TypeError, ValueError):
        raise ValueError(f'classes must be a sequence of class indices '
                         f'0..4, got {classes!r}') from None
    if len(set(values)) != len(values) or any(v < 0 or v > BACKGROUND
                                              for v in values):
        raise ValueError(f'classes must hold distinct indices in 0..4 '
                         f'({", ".join(CLASS_NAMES)}), got {classes!r}')
    if not any(v in TISSUE_CLASSES for v in values):
        raise ValueError(f'classes must hold at least one tissue class '
                         f'(0..3), got {classes!r}')
    return tuple(sorted(values))


def min_class_pixels(size: int) -> int:
    """Smallest pixel count of a tissue class kept in a ``size`` patch.

    Args:
        size (int): patch side in pixels.

    Returns:
        int: ``ceil(MIN_CLASS_FRACTION * size**2)``.
    """
    return int(math.ceil(MIN_CLASS_FRACTION * size * size))


def pixel_scale(size: int) -> float:
    return math.sqrt(size / REFERENCE_SIZE)


def check_class_mix(name) -> str:
    """A known class-mix name (a key of :data:`CLASS_MIXES`)."""
    if name not in CLASS_MIXES:
        raise ValueError(f'class_mix must be one of '
                         f'{", ".join(sorted(CLASS_MIXES))}, got {name!r}')
    return name
