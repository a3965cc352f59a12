"""One patch: mask, stain maps, RGB (:func:`render_sample`)."""
from typing import Dict, Iterable, NamedTuple, Optional, Sequence, Tuple

import cv2
import numpy as np

from .drawing import DrawContext
from .layout import sample_composition, sample_layout
from .morphologies import RENDERERS, glass
from .params import (
    BACKGROUND,
    MORPHOLOGIES,
    check_classes,
    check_size,
    pixel_scale,
)
from .stain import StainStyle, fine_noise, sample_style, smooth_field


# -------------------------------------------------------------- rendering
class SyntheticPatch(NamedTuple):
    """One rendered patch.

    Attributes:
        rgb (np.ndarray): uint8 (S, S, 3) image.
        mask (np.ndarray): uint8 (S, S) class indices 0..4.
        morphologies (dict): tissue class -> morphology name used for it.
    """
    rgb: np.ndarray
    mask: np.ndarray
    morphologies: Dict[int, str]


def _soft_weights(mask: np.ndarray, classes: Sequence[int],
                  sigma: float) -> np.ndarray:
    """Per-class blending weights (C, S, S) with slightly soft borders."""
    weights = np.stack([
        cv2.GaussianBlur((mask == c).astype(np.float32), (0, 0), sigma)
        for c in classes
    ])
    weights /= np.maximum(weights.sum(axis=0, keepdims=True), 1e-6)
    return weights


def _stain_to_rgb(h: np.ndarray, e: np.ndarray, style: StainStyle,
                  rng: np.random.Generator, scale: float) -> np.ndarray:
    """Beer-Lambert colour, optical blur and sensor noise.

    Args:
        h, e (np.ndarray): float32 (S, S) stain concentrations.
        style (StainStyle): slide colours and optics.
        rng (np.random.Generator): source of randomness (noise, jitter).
        scale (float): pixel scale relative to 224 px.

    Returns:
        np.ndarray: uint8 (S, S, 3) RGB.
    """
    sigma = style.blur_sigma * scale
    h = cv2.GaussianBlur(np.maximum(h, 0), (0, 0), sigma)
    e = cv2.GaussianBlur(np.maximum(e, 0), (0, 0), sigma)
    h_od = style.h_gain * rng.lognormal(0.0, 0.05) * style.h_vector
    e_od = style.e_gain * rng.lognormal(0.0, 0.05) * style.e_vector
    channels = [
        h * np.float32(h_od[k]) + e * np.float32(e_od[k]) +
        np.float32(style.glass_od[k]) for k in range(3)
    ]
    rgb = cv2.exp(-cv2.merge(channels)) * np.float32(255.0)
    rgb += rng.standard_normal(rgb.shape, dtype=np.float32) * np.float32(
        style.noise_sigma)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _choose_morphology(rng: np.random.Generator, cls: int,
                       style: StainStyle) -> str:
    names = MORPHOLOGIES[cls]
    return names[int(rng.choice(len(names), p=style.morphology_weights[cls]))]


def _paint_stains(rng: np.random.Generator, mask: np.ndarray,
                  present: Sequence[int], morphologies: Dict[int, str],
                  scale: float) -> Tuple[np.ndarray, np.ndarray]:
    """Paint every region with its morphology and blend the borders.

    Args:
        rng (np.random.Generator): source of randomness.
        mask (np.ndarray): uint8 (S, S) class indices.
        present (Sequence[int]): classes in ``mask``, ascending.
        morphologies (dict): tissue class -> morphology name.
        scale (float): pixel scale relative to 224 px.

    Returns:
        tuple: haematoxylin and eosin concentrations, float32 (S, S) each.
    """
    size = mask.shape[0]
    grain = fine_noise(rng, size, 0.6 * scale)
    margin = max(3, int(round(8 * scale)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE,
                                       (2 * margin + 1, 2 * margin + 1))
    weights = _soft_weights(mask, present, 0.7 * scale)
    h = np.zeros((size, size), np.float32)
    e = np.zeros((size, size), np.float32)
    for w, c in zip(weights, present):
        region = cv2.dilate((mask == c).astype(np.uint8), kernel) > 0
        ctx = DrawContext(rng, size, scale, region, grain)
        renderer = glass if c == BACKGROUND else RENDERERS[morphologies[c]]
        hc, ec = renderer(ctx)
        h += w * hc
        e += w * ec
    return h, e


def render_sample(rng: np.random.Generator,
                  size: int,
                  classes: Optional[Iterable[int]] = None,
                  style: Optional[StainStyle] = None) -> SyntheticPatch:
    """Render one patch and report the morphologies it used.

    Args:
        rng (np.random.Generator): the only source of randomness.
        size (int): patch side, 32..2048.
        classes (Iterable[int], optional): class indices 0..4 to place (at
            least one tissue class; 4 adds background).  Default: drawn by
            :func:`sample_composition`.
        style (StainStyle, optional): slide style.  Default: drawn from
            ``rng``.

    Returns:
        SyntheticPatch: ``rgb`` (S, S, 3) uint8, ``mask`` (S, S) uint8,
        ``morphologies``.
    """
    size = check_size(size)
    wanted = (sample_composition(rng)
              if classes is None else check_classes(classes))
    if style is None:
        style = sample_style(rng)
    scale = pixel_scale(size)
    mask = sample_layout(rng, size, wanted)
    present = [int(c) for c in np.unique(mask)]
    morphologies = {
        c: _choose_morphology(rng, c, style)
        for c in present if c != BACKGROUND
    }
    h, e = _paint_stains(rng, mask, present, morphologies, scale)
    e *= 1.0 + 0.06 * smooth_field(rng, size, 2)  # uneven staining
    rgb = _stain_to_rgb(h, e, style, rng, scale)
    return SyntheticPatch(rgb, mask, morphologies)


def render_patch(
        rng: np.random.Generator,
        size: int,
        classes: Optional[Iterable[int]] = None,
        style: Optional[StainStyle] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Render one synthetic H&E patch and its mask.

    Args:
        rng (np.random.Generator): the only source of randomness.
        size (int): patch side, 32..2048.
        classes (Iterable[int], optional): class indices 0..4 to place.
            Default: drawn from the BCSS-like co-occurrence table.
        style (StainStyle, optional): slide style; drawn from ``rng`` when
            omitted.

    Returns:
        tuple: ``rgb`` uint8 (size, size, 3) and ``mask`` uint8 (size, size)
        with values 0..4.  Use :func:`render_sample` to also get the
        morphology of each class.
    """
    sample = render_sample(rng, size, classes, style)
    return sample.rgb, sample.mask
