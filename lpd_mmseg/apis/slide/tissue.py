"""Tissue detection on a thumbnail: Otsu on saturation plus morphology.

Glass (and unscanned area, read as white) has almost no colour; stained
tissue has.  The saturation threshold is Otsu's, clamped to
``[SATURATION_MIN, SATURATION_MAX]``: the floor keeps an all-glass slide
(where Otsu would split noise) empty, the ceiling keeps a patch that is all
tissue (where Otsu would split pale from dark tissue) whole.  A 5x5 median
filter first removes scanner noise; after thresholding an opening removes
dust, a closing joins nearby fragments, and connected pieces smaller than
``min_area_um2`` are dropped.
"""
from typing import Optional, Tuple

import cv2
import numpy as np

from .cvthreads import single_threaded

SATURATION_MIN = 20   # of 255; glass measured at 0-12 on the bundled slide
SATURATION_MAX = 45   # pale stroma stays above this
CLOSE_UM = 16.0       # closing radius, microns
OPEN_UM = 8.0         # opening radius, microns
MIN_TISSUE_UM2 = 2500.0  # smallest tissue piece kept (a 50 um square)


def otsu_threshold(values: np.ndarray) -> int:
    """Otsu's threshold of uint8 values: the ``t`` maximising the
    between-class variance of ``values <= t`` and ``values > t``.

    Args:
        values (np.ndarray): any shape, uint8.

    Returns:
        int: ``t`` in ``0..255``; 0 for a constant input.
    """
    hist = np.bincount(np.asarray(values, np.uint8).ravel(),
                       minlength=256).astype(np.float64)
    total = hist.sum()
    if total == 0:
        return 0
    levels = np.arange(256, dtype=np.float64)
    weight_low = np.cumsum(hist)
    weight_high = total - weight_low
    sum_low = np.cumsum(hist * levels)
    mean_low = np.divide(sum_low, weight_low, out=np.zeros(256),
                         where=weight_low > 0)
    mean_high = np.divide(sum_low[-1] - sum_low, weight_high,
                          out=np.zeros(256), where=weight_high > 0)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return int(np.argmax(between))


@single_threaded
def saturation(rgb: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` RGB uint8 -> ``(H, W)`` HSV saturation, uint8."""
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2HSV)[..., 1]


def _disk(radius: int) -> np.ndarray:
    size = 2 * radius + 1
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))


@single_threaded
def remove_small_objects(mask: np.ndarray, min_pixels: int) -> np.ndarray:
    """Drop 8-connected pieces of a boolean ``(H, W)`` mask with fewer than
    ``min_pixels`` pixels."""
    if min_pixels <= 1 or not mask.any():
        return mask
    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        mask.astype(np.uint8), connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_pixels
    keep[0] = False
    return keep[labels]


@single_threaded
def tissue_mask(rgb: np.ndarray, mpp: float,
                threshold: Optional[int] = None,
                min_area_um2: float = MIN_TISSUE_UM2
                ) -> Tuple[np.ndarray, int]:
    """Boolean tissue mask of a thumbnail.

    Args:
        rgb (np.ndarray): ``(H, W, 3)`` RGB uint8 thumbnail.
        mpp (float): microns per thumbnail pixel (sizes the morphology).
        threshold (int, optional): saturation threshold (0..255) to use
            instead of the clamped Otsu value.
        min_area_um2 (float): smallest tissue piece kept (at most 1 % of
            the thumbnail).

    Returns:
        tuple: ``(mask (H, W) bool, threshold used)``.
    """
    sat = saturation(rgb)
    if min(sat.shape) >= 5:
        sat = cv2.medianBlur(sat, 5)  # scanner noise on glass
    if threshold is None:
        threshold = int(np.clip(otsu_threshold(sat), SATURATION_MIN,
                                SATURATION_MAX))
    mask = sat > threshold
    close_r = int(round(CLOSE_UM / mpp))
    open_r = int(round(OPEN_UM / mpp))
    if open_r >= 1:
        mask = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN,
                                _disk(min(open_r, 5))) > 0
    if close_r >= 1:
        mask = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_CLOSE,
                                _disk(min(close_r, 10))) > 0
    # never more than 1 % of the image: on a patch or a small region the
    # tissue itself may be smaller than min_area_um2
    min_pixels = min(int(round(min_area_um2 / (mpp * mpp))),
                     mask.size // 100)
    return remove_small_objects(mask, min_pixels), int(threshold)


def box_tissue_fraction(mask: np.ndarray, factor: int, x: int, y: int,
                        w: int, h: int) -> float:
    """Share of tissue in the target-grid box ``(x, y, w, h)`` of a mask
    that is ``factor`` times smaller than the grid."""
    x0, y0 = x // factor, y // factor
    x1, y1 = -(-(x + w) // factor), -(-(y + h) // factor)
    part = mask[y0:y1, x0:x1]
    return float(part.mean()) if part.size else 0.0
