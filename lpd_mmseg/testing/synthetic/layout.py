"""Which classes a patch holds and where (the mask)."""
from typing import Sequence, Tuple

import numpy as np

from .params import (
    BACKGROUND,
    BACKGROUND_PROBABILITY,
    COMPOSITIONS,
    MAX_BACKGROUND_FRACTION,
    min_class_pixels,
)
from .stain import smooth_field

_LAYOUT_ATTEMPTS = 8


# ------------------------------------------------------ composition, layout
def sample_composition(
        rng: np.random.Generator,
        background_probability: float = BACKGROUND_PROBABILITY,
        compositions: Sequence = COMPOSITIONS) -> Tuple[int, ...]:
    """Draw the classes of one patch from ``compositions``.

    Args:
        rng (np.random.Generator): source of randomness.
        background_probability (float): chance of adding background (4).
        compositions (sequence): ``(classes, probability)`` pairs, e.g.
            :data:`COMPOSITIONS` (default) or a value of
            :data:`CLASS_MIXES`.

    Returns:
        tuple[int]: sorted class indices, at least one of them tissue.
    """
    probs = np.array([p for _, p in compositions])
    choice = rng.choice(len(compositions), p=probs / probs.sum())
    classes = compositions[choice][0]
    if rng.random() < background_probability:
        classes = classes + (BACKGROUND, )
    return classes


def _region_scores(rng: np.random.Generator, size: int,
                   classes: Sequence[int]) -> np.ndarray:
    n = len(classes)
    scores = np.empty((n, size, size), np.float32)
    for i in range(n):
        coarse = smooth_field(rng, size, rng.uniform(1.0, 2.4))
        detail = smooth_field(rng, size, rng.uniform(5.0, 9.0))
        scores[i] = coarse + 0.25 * detail
    bias = rng.normal(0.0, 0.35, n).astype(np.float32)
    bias[np.asarray(classes) == BACKGROUND] -= 0.25
    scores += bias[:, None, None]
    return scores


def _cap_background(scores: np.ndarray, labels: np.ndarray,
                    classes: np.ndarray) -> np.ndarray:
    """Lower the background field until it covers at most
    :data:`MAX_BACKGROUND_FRACTION` (a few steps; in place on ``scores``)."""
    if not np.any(classes == BACKGROUND):
        return labels
    bg = int(np.flatnonzero(classes == BACKGROUND)[0])
    for _ in range(8):
        if np.mean(labels == bg) <= MAX_BACKGROUND_FRACTION:
            break
        scores[bg] -= 0.3
        labels = np.argmax(scores, axis=0)
    return labels


def _drop_small_regions(scores: np.ndarray, labels: np.ndarray,
                        classes: np.ndarray, min_pixels: int) -> np.ndarray:
    """Remove regions under ``min_pixels``, smallest first.

    A removed class's pixels go to the runner-up field.  Should the only
    tissue class left be the small one, every other class is removed
    instead, so a patch always keeps tissue.

    Args:
        scores (np.ndarray): float32 (C, S, S) fields; modified in place.
        labels (np.ndarray): (S, S) argmax of ``scores``.
        classes (np.ndarray): uint8 (C,) class of each field.
        min_pixels (int): smallest region kept.

    Returns:
        np.ndarray: (S, S) indices into ``classes``.
    """
    active = np.ones(len(classes), bool)
    tissue = classes != BACKGROUND
    while True:
        counts = np.bincount(labels.ravel(), minlength=len(classes))
        small = active & (counts < min_pixels)
        if not small.any():
            return labels
        if np.all(small[active & tissue]):
            # All tissue left is tiny: keep the largest tissue field alone.
            keep = int(np.argmax(np.where(active & tissue, counts, -1)))
            return np.full_like(labels, keep)
        drop = int(np.argmin(np.where(small, counts, np.iinfo(np.int64).max)))
        active[drop] = False
        scores[drop] = -np.inf
        labels = np.argmax(scores, axis=0)


def _layout_once(rng: np.random.Generator, size: int, classes: Sequence[int],
                 min_pixels: int) -> np.ndarray:
    """One attempt at a layout; see :func:`sample_layout`."""
    classes = np.asarray(classes, np.uint8)
    if len(classes) == 1:
        return np.full((size, size), classes[0], np.uint8)
    scores = _region_scores(rng, size, classes)
    labels = _cap_background(scores, np.argmax(scores, axis=0), classes)
    labels = _drop_small_regions(scores, labels, classes, min_pixels)
    return classes[labels]


def sample_layout(rng: np.random.Generator, size: int,
                  classes: Sequence[int]) -> np.ndarray:
    """Irregular regions, one per class, each covering enough pixels.

    Each class gets a smooth random field; a pixel takes the class of its
    largest field.  Classes under :func:`min_class_pixels` are removed (their
    pixels go to the runner-up) and the layout is redrawn up to a few times
    when that loses a requested class.

    Args:
        rng (np.random.Generator): source of randomness.
        size (int): patch side.
        classes (Sequence[int]): class indices (0..4) to place.

    Returns:
        np.ndarray: uint8 (size, size) class indices.  Every tissue class in
        it covers at least ``min_class_pixels(size)`` pixels.  Rarely (after
        all attempts) a requested class is missing.
    """
    min_pixels = min_class_pixels(size)
    wanted = set(int(c) for c in classes)
    mask = None
    for _ in range(_LAYOUT_ATTEMPTS):
        mask = _layout_once(rng, size, classes, min_pixels)
        if set(np.unique(mask).tolist()) == wanted:
            break
    return mask
