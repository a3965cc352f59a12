"""Synthetic H&E-like tissue patches written in the BCSS-WSSS layout.

The real BCSS-WSSS data cannot be downloaded on every machine, so tests,
demos and benchmarks use data generated here.  It is meant to be a fair
stand-in for the difficulty of weakly supervised tissue segmentation, not
clean vector art:

* **Composition.**  Each patch holds 1-4 tissue classes drawn from a
  BCSS-like co-occurrence table (:data:`COMPOSITIONS`): TUM and STR are the
  most common and often appear together, LYM mostly with STR, NEC mostly
  with TUM.  Some patches also hold white background (class 4).  Each
  block of :data:`FORCED_SINGLE_PERIOD` indices starts with one
  single-class patch of each tissue class, so any split of at least four
  patches holds single-label patches of every class.
* **Layout.**  One smooth random field per class (coarse blobs plus finer
  wiggles); each pixel takes the class of the largest field, which gives
  irregular region shapes.  A class that would cover fewer than
  :func:`min_class_pixels` pixels is removed and its pixels go to the
  runner-up field, so *every tissue class in a mask covers at least that
  many pixels* and the label in a training name (the classes in the mask)
  never hinges on a few stray pixels.
* **Texture.**  Each class is painted with one of several morphologies
  (:data:`MORPHOLOGIES`), as haematoxylin and eosin concentration maps:
  nuclei are ellipses of varied size, shape and darkness, collagen is a
  warped stripe pattern, lumens and clefts are unstained.  Classes share
  colour statistics on purpose (small-cell tumour nests vs lymphocytes,
  ghost-cell necrosis vs loose stroma, debris vs tumour sheets), so texture
  and structure, not mean colour, tell them apart.
* **Staining.**  The maps are turned into RGB with the Beer-Lambert law
  using per-slide stain vectors and gains (:class:`StainStyle`), then
  blurred and given sensor noise.

Lengths (nucleus radii, fibre periods) are given in pixels for a 224 px
patch and multiplied by ``sqrt(size / 224)``, so smaller patches show a
slightly smaller field of view at a slightly coarser scale.

Determinism: every random draw of a sample comes from a generator seeded by
``(seed, split, index)``; slide styles and names from ``(seed, split, slide
or ROI)``.  Output bytes therefore do not depend on the number of workers
(they may change with other numpy, OpenCV or Pillow versions).
"""
import json
import math
import multiprocessing
import os
import os.path as osp
import shutil
from dataclasses import dataclass
from functools import lru_cache
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

import cv2
import numpy as np
from PIL import Image

# --------------------------------------------------------------- constants
CLASS_NAMES = ('TUM', 'STR', 'LYM', 'NEC', 'BACK')
TISSUE_CLASSES = (0, 1, 2, 3)
BACKGROUND = 4
PALETTE = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (153, 0, 255),
           (255, 255, 255))

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
    ((0, ), 0.13), ((1, ), 0.09), ((2, ), 0.05), ((3, ), 0.04),
    ((0, 1), 0.24), ((1, 2), 0.09), ((0, 2), 0.05), ((0, 3), 0.07),
    ((1, 3), 0.02), ((2, 3), 0.01),
    ((0, 1, 2), 0.11), ((0, 1, 3), 0.05), ((0, 2, 3), 0.02),
    ((1, 2, 3), 0.01),
    ((0, 1, 2, 3), 0.02),
)
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

_SPLIT_IDS = {'train': 0, 'val': 1, 'test': 2}
_STREAM_SAMPLE, _STREAM_ROI, _STREAM_SLIDE, _STREAM_BARCODE = 0, 1, 2, 3
_LAYOUT_ATTEMPTS = 8
# Reference optical-density vectors of haematoxylin and eosin (Macenko).
_H_REF = np.array([0.5626, 0.7201, 0.4062])
_E_REF = np.array([0.2159, 0.8012, 0.5581])
_TCGA_SITES = ('A1', 'A2', 'A7', 'A8', 'AN', 'AO', 'AR', 'B6', 'BH', 'C8',
               'D8', 'E2', 'E9', 'EW', 'GM', 'LL', 'OL', 'S3')
_BARCODE_CHARS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789'
_SUBPIXEL_SHIFT = 4
_SUBPIXEL = float(1 << _SUBPIXEL_SHIFT)


# --------------------------------------------------------------- validation
def _as_int(name: str,
            value,
            minimum: int,
            maximum: Optional[int] = None) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(
            value, (int, np.integer)):
        raise ValueError(f'{name} must be an integer, got {value!r}')
    value = int(value)
    if value < minimum or (maximum is not None and value > maximum):
        bound = (f'between {minimum} and {maximum}'
                 if maximum is not None else f'>= {minimum}')
        raise ValueError(f'{name} must be {bound}, got {value}')
    return value


def _check_size(size) -> int:
    return _as_int('size', size, MIN_SIZE, MAX_SIZE)


def _check_classes(classes: Iterable[int]) -> Tuple[int, ...]:
    try:
        values = [int(c) for c in classes]
    except (TypeError, ValueError):
        raise ValueError(f'classes must be a sequence of class indices '
                         f'0..4, got {classes!r}') from None
    if len(set(values)) != len(values) or any(
            v < 0 or v > BACKGROUND for v in values):
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


def _pixel_scale(size: int) -> float:
    return math.sqrt(size / REFERENCE_SIZE)


# -------------------------------------------------------------- stain style
@dataclass(frozen=True)
class StainStyle:
    """Colour and optics of one slide.

    Attributes:
        h_vector (np.ndarray): unit optical-density vector of haematoxylin,
            shape (3,), RGB order.
        e_vector (np.ndarray): same for eosin, shape (3,).
        h_gain (float): multiplies haematoxylin concentrations.
        e_gain (float): multiplies eosin concentrations.
        glass_od (np.ndarray): optical density of the bare slide, shape (3,).
        blur_sigma (float): optical blur in pixels at 224 px.
        noise_sigma (float): sensor noise, in 8-bit grey levels.
        morphology_weights (dict): class -> probabilities over
            ``MORPHOLOGIES[class]``; slides differ in which morphology of a
            class they favour.
    """
    h_vector: np.ndarray
    e_vector: np.ndarray
    h_gain: float
    e_gain: float
    glass_od: np.ndarray
    blur_sigma: float
    noise_sigma: float
    morphology_weights: Dict[int, np.ndarray]


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def sample_style(rng: np.random.Generator) -> StainStyle:
    """Draw the stain style of one slide.

    Args:
        rng (np.random.Generator): source of randomness.

    Returns:
        StainStyle: perturbed stain vectors, gains, blur, noise and
        morphology preferences.
    """
    h_vec = _unit(np.abs(_H_REF + rng.normal(0.0, 0.04, 3)))
    e_vec = _unit(np.abs(_E_REF + rng.normal(0.0, 0.05, 3)))
    weights = {}
    for cls, names in MORPHOLOGIES.items():
        w = rng.dirichlet(np.full(len(names), 2.0))
        weights[cls] = 0.7 * w + 0.3 / len(names)
    return StainStyle(
        h_vector=h_vec,
        e_vector=e_vec,
        h_gain=float(rng.lognormal(0.0, 0.15)),
        e_gain=float(rng.lognormal(0.0, 0.18)),
        glass_od=np.abs(rng.normal(0.035, 0.015, 3)),
        blur_sigma=float(rng.uniform(0.45, 0.95)),
        noise_sigma=float(rng.uniform(1.5, 4.0)),
        morphology_weights=weights)


# ----------------------------------------------------------- random fields
def _standardise(field: np.ndarray) -> np.ndarray:
    field -= field.mean()
    std = float(field.std())
    if std > 1e-6:
        field /= std
    return field


def smooth_field(rng: np.random.Generator, size: int,
                 cells: float) -> np.ndarray:
    """Smooth random field with about ``cells`` features across the patch.

    Args:
        rng (np.random.Generator): source of randomness.
        size (int): output side.
        cells (float): rough number of blobs along one side.

    Returns:
        np.ndarray: float32 (size, size), zero mean, unit variance.
    """
    n = max(2, int(round(cells))) + 2
    grid = rng.standard_normal((n, n), dtype=np.float32)
    field = cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
    return _standardise(field)


def fine_noise(rng: np.random.Generator, size: int,
               sigma: float) -> np.ndarray:
    """White noise blurred with a Gaussian of ``sigma`` pixels.

    Args:
        rng (np.random.Generator): source of randomness.
        size (int): output side.
        sigma (float): blur in pixels.

    Returns:
        np.ndarray: float32 (size, size), zero mean, unit variance.
    """
    noise = rng.standard_normal((size, size), dtype=np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), max(sigma, 0.3))
    return _standardise(noise)


@lru_cache(maxsize=8)
def _coordinates(size: int) -> Tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    yy.setflags(write=False)
    xx.setflags(write=False)
    return xx, yy


# ---------------------------------------------------------------- drawing
class _Context(NamedTuple):
    """What a morphology renderer needs: randomness, geometry, its region.

    ``region`` (bool, (size, size)) is the class's mask dilated by a few
    pixels; objects centred outside it are not drawn.  ``grain`` (float32,
    (size, size)) is unit-variance fine noise for chromatin texture.
    """
    rng: np.random.Generator
    size: int
    scale: float
    region: np.ndarray
    grain: np.ndarray

    def full(self, value: float) -> np.ndarray:
        return np.full((self.size, self.size), value, np.float32)

    def smooth(self, cells: float) -> np.ndarray:
        return smooth_field(self.rng, self.size, cells)

    def fine(self, sigma: float) -> np.ndarray:
        return fine_noise(self.rng, self.size, sigma * self.scale)

    def inside(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        xi = np.clip(x.astype(np.int64), 0, self.size - 1)
        yi = np.clip(y.astype(np.int64), 0, self.size - 1)
        return self.region[yi, xi]

    def grid_points(self, spacing: float,
                    jitter: float) -> Tuple[np.ndarray, np.ndarray]:
        """Jittered square lattice (dense, little overlap) in the region."""
        x, y = _jittered_grid(self.rng, self.size, spacing * self.scale,
                              jitter)
        keep = self.inside(x, y)
        return x[keep], y[keep]

    def random_points(self,
                      spacing: float) -> Tuple[np.ndarray, np.ndarray]:
        """Poisson points, one per ``spacing**2`` on average, in the region."""
        x, y = _poisson_points(self.rng, self.size, spacing * self.scale)
        keep = self.inside(x, y)
        return x[keep], y[keep]


def _jittered_grid(rng: np.random.Generator, size: int, spacing: float,
                   jitter: float) -> Tuple[np.ndarray, np.ndarray]:
    n = int(size // spacing) + 3
    offset = rng.uniform(0.0, spacing, 2)
    gy, gx = np.mgrid[0:n, 0:n]
    x = gx.ravel() * spacing - offset[0]
    y = gy.ravel() * spacing - offset[1]
    x = x + rng.uniform(-jitter, jitter, x.size) * spacing
    y = y + rng.uniform(-jitter, jitter, y.size) * spacing
    return x, y


def _poisson_points(rng: np.random.Generator, size: int,
                    spacing: float) -> Tuple[np.ndarray, np.ndarray]:
    n = rng.poisson(size * size / (spacing * spacing))
    return rng.uniform(0, size, n), rng.uniform(0, size, n)


def _draw_ellipses(canvas: np.ndarray,
                   x: np.ndarray,
                   y: np.ndarray,
                   a,
                   b,
                   angle,
                   value,
                   thickness: int = -1) -> None:
    """Draw ellipses into ``canvas`` in place, with sub-pixel centres.

    Args:
        canvas (np.ndarray): float32 (H, W) map to draw on.
        x, y (np.ndarray): centres, shape (N,).
        a, b: semi-axes in pixels (scalar or shape (N,)); ``a`` lies along
            ``angle``.
        angle: orientation in degrees (scalar or (N,)).
        value: value written inside (scalar or (N,)).
        thickness (int): -1 fills, else outline width in pixels.
    """
    n = len(x)
    if n == 0:
        return
    a, b, angle, value = (np.broadcast_to(np.asarray(v, np.float64), (n, ))
                          for v in (a, b, angle, value))
    cx = np.round(np.asarray(x) * _SUBPIXEL).astype(np.int64)
    cy = np.round(np.asarray(y) * _SUBPIXEL).astype(np.int64)
    ax = np.maximum(np.round(a * _SUBPIXEL), _SUBPIXEL / 2).astype(np.int64)
    bx = np.maximum(np.round(b * _SUBPIXEL), _SUBPIXEL / 2).astype(np.int64)
    for i in range(n):
        cv2.ellipse(canvas, (int(cx[i]), int(cy[i])), (int(ax[i]), int(bx[i])),
                    float(angle[i]), 0.0, 360.0, float(value[i]), thickness,
                    cv2.LINE_8, _SUBPIXEL_SHIFT)


def _stamp_nuclei(h: np.ndarray, e: np.ndarray, nuclei: np.ndarray,
                  grain: np.ndarray,
                  eosin_kept: float = 0.3) -> Tuple[np.ndarray, np.ndarray]:
    """Put drawn nuclei (``nuclei > 0``) over a stain background.

    Args:
        h, e (np.ndarray): float32 (S, S) haematoxylin / eosin background.
        nuclei (np.ndarray): float32 (S, S) nuclear haematoxylin, 0 outside.
        grain (np.ndarray): float32 (S, S) chromatin texture.
        eosin_kept (float): share of the eosin kept under a nucleus.

    Returns:
        tuple: new (h, e), float32 (S, S).
    """
    covered = nuclei > 0
    h = np.where(covered, nuclei * (1.0 + 0.22 * grain), h)
    e = np.where(covered, e * eosin_kept, e)
    return h, e


def _line_kernel(length: float, angle: float) -> np.ndarray:
    """Normalised line kernel of ``length`` pixels along ``angle`` (rad)."""
    half = max(1, int(round(length / 2)))
    kernel = np.zeros((2 * half + 1, 2 * half + 1), np.float32)
    dx, dy = half * np.cos(angle), half * np.sin(angle)
    cv2.line(kernel, (int(round(half - dx)), int(round(half - dy))),
             (int(round(half + dx)), int(round(half + dy))), 1.0, 1,
             cv2.LINE_AA)
    return kernel / kernel.sum()


def _fibres(ctx: _Context, period: float, warp: float,
            sharpness: float) -> Tuple[np.ndarray, np.ndarray]:
    """Wavy, streaky, roughly parallel fibres.

    A warped stripe pattern gives the bundles; white noise smeared along
    the mean fibre direction breaks them into streaks of varying width.

    Args:
        ctx (_Context): renderer context.
        period (float): fibre spacing in pixels at 224 px.
        warp (float): waviness, radians of phase per unit of a smooth field.
        sharpness (float): exponent; larger gives thinner fibres.

    Returns:
        tuple: fibre density in [0, 1] and the stripe phase, float32
        (S, S) each.
    """
    xx, yy = _coordinates(ctx.size)
    theta = ctx.rng.uniform(0.0, np.pi)
    along = xx * np.float32(np.cos(theta)) + yy * np.float32(np.sin(theta))
    phase = (along * np.float32(2 * np.pi / (period * ctx.scale)) +
             np.float32(warp) * ctx.smooth(ctx.rng.uniform(1.5, 3.0)) +
             0.8 * ctx.fine(1.2))
    noise = ctx.rng.standard_normal((ctx.size, ctx.size), dtype=np.float32)
    streak = _standardise(
        cv2.filter2D(noise, -1,
                     _line_kernel(14.0 * ctx.scale, theta + np.pi / 2)))
    mix = 0.6 * np.sin(phase) + 0.7 * streak
    fibre = np.clip(0.5 + 0.45 * mix, 0.0, 1.0)**np.float32(sharpness)
    return fibre.astype(np.float32), phase


def _fibre_angle(phase: np.ndarray, x: np.ndarray,
                 y: np.ndarray) -> np.ndarray:
    """Direction (degrees) of the fibres through points ``x, y``."""
    size = phase.shape[0]
    xi = np.clip(x.astype(np.int64), 1, size - 2)
    yi = np.clip(y.astype(np.int64), 1, size - 2)
    gx = phase[yi, xi + 1] - phase[yi, xi - 1]
    gy = phase[yi + 1, xi] - phase[yi - 1, xi]
    return np.degrees(np.arctan2(gy, gx)) + 90.0


def _stroma_backdrop(ctx: _Context, eosin: float,
                     contrast: float) -> Tuple[np.ndarray, np.ndarray]:
    """Pink fibrous background shared by several morphologies."""
    fibre, phase = _fibres(ctx, ctx.rng.uniform(6.0, 9.0),
                           ctx.rng.uniform(3.0, 8.0), 1.3)
    e = eosin + contrast * fibre
    h = ctx.full(0.05) + 0.02 * fibre
    return h, e


# ------------------------------------------------------ tumour morphologies
def _tum_solid_sheet(ctx: _Context) -> Tuple[np.ndarray, np.ndarray]:
    """Solid sheet of large pleomorphic, partly vesicular nuclei."""
    rng, s = ctx.rng, ctx.scale
    h = 0.22 + 0.05 * ctx.smooth(5)
    e = 0.40 + 0.07 * ctx.fine(1.5)
    x, y = ctx.grid_points(12.0, 0.35)
    n = x.size
    a = rng.uniform(4.5, 7.5, n) * s
    b = a * rng.uniform(0.6, 0.95, n)
    angle = rng.uniform(0, 180, n)
    value = rng.uniform(0.75, 1.25, n)
    nuclei = ctx.full(0.0)
    _draw_ellipses(nuclei, x, y, a, b, angle, value)
    ves = rng.random(n) < 0.35
    _draw_ellipses(nuclei, x[ves], y[ves], a[ves] * 0.6, b[ves] * 0.6,
                   angle[ves], value[ves] * 0.45)
    _draw_ellipses(nuclei, x[ves], y[ves], 1.1 * s, 1.1 * s, 0, 1.5)
    return _stamp_nuclei(h, e, nuclei, ctx.grain, 0.35)


def _tum_glandular(ctx: _Context) -> Tuple[np.ndarray, np.ndarray]:
    """Glands: empty lumens lined by columnar epithelium, stroma between."""
    rng, s, size = ctx.rng, ctx.scale, ctx.size
    x, y = ctx.grid_points(34.0, 0.3)
    if x.size == 0:
        ys, xs = np.nonzero(ctx.region)
        pick = rng.integers(len(xs))
        x, y = xs[pick:pick + 1] + 0.5, ys[pick:pick + 1] + 0.5
    n = x.size
    radius = rng.uniform(5.0, 12.0, n) * s
    lumen = ctx.full(0.0)
    _draw_ellipses(lumen, x, y, radius, radius * rng.uniform(0.55, 1.0, n),
                   rng.uniform(0, 180, n), 1.0)
    is_lumen = lumen > 0
    dist = cv2.distanceTransform((~is_lumen).astype(np.uint8), cv2.DIST_L2, 3)
    thickness = rng.uniform(9.0, 13.0) * s
    epithelium = cv2.GaussianBlur((dist <= thickness).astype(np.float32),
                                  (0, 0), 1.0 * s)
    sh, se = _stroma_backdrop(ctx, 0.42, 0.25)
    h = epithelium * 0.2 + (1 - epithelium) * sh
    e = epithelium * 0.42 + (1 - epithelium) * se
    secretion = 0.15 if rng.random() < 0.3 else 0.04
    h = np.where(is_lumen, 0.01, h)
    e = np.where(is_lumen, secretion, e)
    nx, ny = ctx.grid_points(6.0, 0.3)
    d = dist[np.clip(ny.astype(np.int64), 0, size - 1),
             np.clip(nx.astype(np.int64), 0, size - 1)]
    keep = (d > 1.5 * s) & (d < thickness - 1.5 * s)
    nx, ny = nx[keep], ny[keep]
    m = nx.size
    # Columnar nuclei point away from the lumen: along the distance gradient.
    radial = _fibre_angle(dist, nx, ny) - 90.0
    a = rng.uniform(3.5, 5.5, m) * s
    nuclei = ctx.full(0.0)
    _draw_ellipses(nuclei, nx, ny, a, a * rng.uniform(0.5, 0.75, m), radial,
                   rng.uniform(0.8, 1.2, m))
    return _stamp_nuclei(h, e, nuclei, ctx.grain, 0.35)


def _tum_trabecular_cords(ctx: _Context) -> Tuple[np.ndarray, np.ndarray]:
    """Branching cords of tumour cells in a fibrous background."""
    rng, s = ctx.rng, ctx.scale
    field = ctx.smooth(rng.uniform(3.0, 5.0))
    cord = np.abs(field) < rng.uniform(0.5, 0.8)
    soft = cv2.GaussianBlur(cord.astype(np.float32), (0, 0), 1.0 * s)
    sh, se = _stroma_backdrop(ctx, 0.45, 0.25)
    h = soft * 0.22 + (1 - soft) * sh
    e = soft * 0.40 + (1 - soft) * se
    x, y = ctx.grid_points(9.0, 0.3)
    size = ctx.size
    keep = cord[np.clip(y.astype(np.int64), 0, size - 1),
                np.clip(x.astype(np.int64), 0, size - 1)]
    x, y = x[keep], y[keep]
    n = x.size
    a = rng.uniform(3.8, 6.0, n) * s
    nuclei = ctx.full(0.0)
    _draw_ellipses(nuclei, x, y, a, a * rng.uniform(0.6, 0.95, n),
                   rng.uniform(0, 180, n), rng.uniform(0.8, 1.25, n))
    return _stamp_nuclei(h, e, nuclei, ctx.grain, 0.35)


def _tum_small_cell_nests(ctx: _Context) -> Tuple[np.ndarray, np.ndarray]:
    """Nests of small, uniform, crowded nuclei (looks like lymphocytes)."""
    rng, s, size = ctx.rng, ctx.scale, ctx.size
    nest = ctx.smooth(rng.uniform(4.0, 7.0)) > rng.uniform(-0.6, -0.2)
    soft = cv2.GaussianBlur(nest.astype(np.float32), (0, 0), 1.0 * s)
    septa_e = 0.55 + 0.1 * ctx.fine(1.0)
    h = soft * 0.17 + (1 - soft) * 0.05
    e = soft * 0.30 + (1 - soft) * septa_e
    x, y = ctx.grid_points(8.0, 0.35)
    keep = nest[np.clip(y.astype(np.int64), 0, size - 1),
                np.clip(x.astype(np.int64), 0, size - 1)]
    x, y = x[keep], y[keep]
    n = x.size
    a = rng.uniform(3.0, 4.0, n) * s
    nuclei = ctx.full(0.0)
    _draw_ellipses(nuclei, x, y, a, a * rng.uniform(0.75, 1.0, n),
                   rng.uniform(0, 180, n), rng.uniform(0.85, 1.2, n))
    return _stamp_nuclei(h, e, nuclei, ctx.grain, 0.35)


# ------------------------------------------------------ stroma morphologies
def _spindle_nuclei(ctx: _Context, nuclei: np.ndarray, phase: np.ndarray,
                    spacing: float, value: Tuple[float, float]) -> None:
    rng, s = ctx.rng, ctx.scale
    x, y = ctx.random_points(spacing)
    n = x.size
    angle = _fibre_angle(phase, x, y) + rng.normal(0, 8, n)
    _draw_ellipses(nuclei, x, y,
                   rng.uniform(5.0, 9.0, n) * s,
                   rng.uniform(1.1, 2.0, n) * s, angle,
                   rng.uniform(*value, n))


def _str_dense_collagen(ctx: _Context) -> Tuple[np.ndarray, np.ndarray]:
    """Dense pink wavy collagen bundles with sparse aligned spindle nuclei."""
    rng = ctx.rng
    fibre, phase = _fibres(ctx, rng.uniform(5.0, 9.0), rng.uniform(4.0, 10.0),
                           rng.uniform(1.0, 2.0))
    e = 0.36 + 0.5 * fibre * (1.0 + 0.15 * ctx.grain)
    h = 0.04 + 0.03 * fibre
    nuclei = ctx.full(0.0)
    _spindle_nuclei(ctx, nuclei, phase, 26.0, (0.8, 1.2))
    return _stamp_nuclei(h, e, nuclei, ctx.grain, 0.4)


def _str_loose_stroma(ctx: _Context) -> Tuple[np.ndarray, np.ndarray]:
    """Pale oedematous stroma: thin wisps, clear spaces, a small vessel."""
    rng, s = ctx.rng, ctx.scale
    fibre, phase = _fibres(ctx, rng.uniform(3.5, 6.0), rng.uniform(6.0, 14.0),
                           2.5)
    e = 0.16 + 0.22 * fibre + 0.04 * ctx.smooth(3)
    h = ctx.full(0.03)
    clear = ctx.smooth(6) > rng.uniform(1.0, 1.5)
    e = np.where(clear, e * 0.45, e)
    if rng.random() < 0.5:
        _draw_vessel(ctx, h, e)
    nuclei = ctx.full(0.0)
    x, y = ctx.random_points(38.0)
    n = x.size
    _draw_ellipses(nuclei, x, y,
                   rng.uniform(4.0, 7.0, n) * s,
                   rng.uniform(1.2, 2.2, n) * s, _fibre_angle(phase, x, y),
                   rng.uniform(0.6, 1.0, n))
    return _stamp_nuclei(h, e, nuclei, ctx.grain, 0.4)


def _draw_vessel(ctx: _Context, h: np.ndarray, e: np.ndarray) -> None:
    """A small vessel (wall, lumen, red cells) drawn into ``h, e``."""
    rng, s = ctx.rng, ctx.scale
    x, y = ctx.random_points(40.0)
    if x.size == 0:
        return
    cx, cy = x[:1], y[:1]
    r = rng.uniform(5.0, 9.0) * s
    ratio = rng.uniform(0.5, 1.0)
    angle = rng.uniform(0, 180)
    _draw_ellipses(e, cx, cy, r + 2 * s, (r + 2 * s) * ratio, angle, 0.65)
    _draw_ellipses(h, cx, cy, r + 2 * s, (r + 2 * s) * ratio, angle, 0.06)
    _draw_ellipses(e, cx, cy, r, r * ratio, angle, 0.05)
    _draw_ellipses(h, cx, cy, r, r * ratio, angle, 0.01)
    k = int(rng.integers(3, 9))
    t = rng.uniform(0, 2 * np.pi, k)
    rho = np.sqrt(rng.uniform(0, 1, k)) * (r * ratio - 1.5 * s)
    rx, ry = cx + rho * np.cos(t), cy + rho * np.sin(t)
    _draw_ellipses(e, rx, ry, 1.8 * s, 1.8 * s, 0, 1.0)
    _draw_ellipses(h, rx, ry, 1.8 * s, 1.8 * s, 0, 0.02)


def _str_cellular_stroma(ctx: _Context) -> Tuple[np.ndarray, np.ndarray]:
    """Cellular (desmoplastic) stroma: many spindle cells, some
    lymphocytes."""
    rng, s = ctx.rng, ctx.scale
    fibre, phase = _fibres(ctx, rng.uniform(6.0, 10.0), rng.uniform(3.0, 8.0),
                           1.2)
    e = 0.30 + 0.35 * fibre
    h = 0.08 + 0.03 * ctx.smooth(4)
    nuclei = ctx.full(0.0)
    _spindle_nuclei(ctx, nuclei, phase, 13.0, (0.8, 1.2))
    x, y = ctx.random_points(40.0)
    r = rng.uniform(2.4, 3.2, x.size) * s
    _draw_ellipses(nuclei, x, y, r, r, 0, rng.uniform(1.2, 1.6, x.size))
    return _stamp_nuclei(h, e, nuclei, ctx.grain, 0.4)


# -------------------------------------------------- lymphocyte morphologies
def _lymphocytes(ctx: _Context, nuclei: np.ndarray, x: np.ndarray,
                 y: np.ndarray) -> None:
    rng, s, n = ctx.rng, ctx.scale, x.size
    r = rng.uniform(2.4, 3.3, n) * s
    _draw_ellipses(nuclei, x, y, r, r * rng.uniform(0.85, 1.0, n),
                   rng.uniform(0, 180, n), rng.uniform(1.15, 1.65, n))


def _lym_dense_aggregate(ctx: _Context) -> Tuple[np.ndarray, np.ndarray]:
    """Sheet of small dark round nuclei with scattered pale macrophages."""
    rng, s = ctx.rng, ctx.scale
    h = 0.22 + 0.04 * ctx.smooth(4)
    e = 0.20 + 0.05 * ctx.fine(1.0)
    x, y = ctx.grid_points(rng.uniform(6.0, 7.2), 0.35)
    macro = rng.random(x.size) < 0.04
    gap = rng.random(x.size) < 0.08
    mx, my = x[macro], y[macro]
    _draw_ellipses(e, mx, my, 6.0 * s, 5.0 * s, rng.uniform(0, 180, mx.size),
                   0.35)
    _draw_ellipses(h, mx, my, 6.0 * s, 5.0 * s, 0, 0.10)
    nuclei = ctx.full(0.0)
    _draw_ellipses(nuclei, mx, my, 3.8 * s, 3.0 * s,
                   rng.uniform(0, 180, mx.size), 0.55)
    lym = ~(macro | gap)
    _lymphocytes(ctx, nuclei, x[lym], y[lym])
    return _stamp_nuclei(h, e, nuclei, ctx.grain, 0.3)


def _lym_infiltrate(ctx: _Context) -> Tuple[np.ndarray, np.ndarray]:
    """Lymphocytes scattered in clusters over pink fibrous stroma."""
    rng = ctx.rng
    h, e = _stroma_backdrop(ctx, 0.34, 0.3)
    x, y = ctx.random_points(7.0)
    density = ctx.smooth(rng.uniform(2.0, 4.0))
    xi = np.clip(x.astype(np.int64), 0, ctx.size - 1)
    yi = np.clip(y.astype(np.int64), 0, ctx.size - 1)
    keep_p = np.clip(0.45 + 0.35 * density[yi, xi], 0.1, 0.95)
    keep = rng.random(x.size) < keep_p
    nuclei = ctx.full(0.0)
    _lymphocytes(ctx, nuclei, x[keep], y[keep])
    return _stamp_nuclei(h, e, nuclei, ctx.grain, 0.3)


def _lym_plasma_rich(ctx: _Context) -> Tuple[np.ndarray, np.ndarray]:
    """Mixed infiltrate: lymphocytes and plasma cells (eccentric nuclei)."""
    rng, s = ctx.rng, ctx.scale
    h = ctx.full(0.14)
    e = 0.30 + 0.05 * ctx.fine(1.0)
    x, y = ctx.grid_points(8.0, 0.3)
    plasma = rng.random(x.size) < 0.35
    px, py = x[plasma], y[plasma]
    m = px.size
    theta = rng.uniform(0, 180, m)
    a = rng.uniform(4.0, 5.5, m) * s
    b = rng.uniform(3.0, 4.0, m) * s
    _draw_ellipses(h, px, py, a, b, theta, 0.32)
    _draw_ellipses(e, px, py, a, b, theta, 0.34)
    offset = 0.45 * a
    rad = np.radians(theta)
    nuclei = ctx.full(0.0)
    _draw_ellipses(nuclei, px + offset * np.cos(rad),
                   py + offset * np.sin(rad),
                   2.6 * s, 2.4 * s, theta, rng.uniform(1.0, 1.4, m))
    _lymphocytes(ctx, nuclei, x[~plasma], y[~plasma])
    return _stamp_nuclei(h, e, nuclei, ctx.grain, 0.3)


# --------------------------------------------------- necrosis morphologies
def _nec_granular_debris(ctx: _Context) -> Tuple[np.ndarray, np.ndarray]:
    """Pink-purple granular debris with clusters of nuclear fragments."""
    rng, s = ctx.rng, ctx.scale
    blob = ctx.smooth(4)
    h = 0.30 + 0.10 * ctx.fine(0.7) + 0.08 * blob
    e = 0.44 + 0.10 * ctx.fine(1.2) - 0.05 * blob
    cx, cy = ctx.random_points(22.0)
    counts = rng.integers(3, 10, cx.size)
    fx = np.repeat(cx, counts) + rng.normal(0, 3.0 * s, counts.sum())
    fy = np.repeat(cy, counts) + rng.normal(0, 3.0 * s, counts.sum())
    r = rng.uniform(0.7, 1.7, fx.size) * s
    nuclei = ctx.full(0.0)
    _draw_ellipses(nuclei, fx, fy, r, r * rng.uniform(0.6, 1.0, fx.size),
                   rng.uniform(0, 180, fx.size),
                   rng.uniform(0.9, 1.5, fx.size))
    dx, dy = ctx.random_points(6.0)
    _draw_ellipses(nuclei, dx, dy, 0.7 * s, 0.6 * s, 0,
                   rng.uniform(0.5, 0.8, dx.size))
    return _stamp_nuclei(h, e, nuclei, ctx.grain, 0.5)


def _nec_ghost_cells(ctx: _Context) -> Tuple[np.ndarray, np.ndarray]:
    """Pale ghost cells: faint membranes and faded nuclei, no chromatin."""
    rng, s = ctx.rng, ctx.scale
    h = 0.07 + 0.03 * ctx.grain
    e = 0.26 + 0.05 * ctx.fine(1.0)
    x, y = ctx.grid_points(12.0, 0.3)
    n = x.size
    a = rng.uniform(5.0, 7.0, n) * s
    angle = rng.uniform(0, 180, n)
    _draw_ellipses(e, x, y, a, a * rng.uniform(0.7, 1.0, n), angle, 0.42,
                   thickness=1)
    ghost = rng.uniform(2.5, 4.0, n) * s
    _draw_ellipses(h, x, y, ghost, ghost * 0.8, angle,
                   rng.uniform(0.18, 0.3, n))
    nuclei = ctx.full(0.0)
    fx, fy = ctx.random_points(40.0)
    _draw_ellipses(nuclei, fx, fy, 1.2 * s, 1.0 * s, 0,
                   rng.uniform(0.9, 1.3, fx.size))
    return _stamp_nuclei(h, e, nuclei, ctx.grain, 0.5)


def _nec_comedo_pyknotic(ctx: _Context) -> Tuple[np.ndarray, np.ndarray]:
    """Eosinophilic amorphous necrosis with pyknotic nuclei, calcifications."""
    rng, s = ctx.rng, ctx.scale
    e = 0.56 + 0.12 * ctx.smooth(3) + 0.06 * ctx.fine(1.0)
    h = 0.12 + 0.05 * ctx.fine(0.8)
    if rng.random() < 0.3:
        calc = ctx.smooth(6) > 1.8
        h = np.where(calc, 0.8, h)
        e = np.where(calc, 0.3, e)
    x, y = ctx.random_points(15.0)
    cluster = ctx.smooth(3)
    xi = np.clip(x.astype(np.int64), 0, ctx.size - 1)
    yi = np.clip(y.astype(np.int64), 0, ctx.size - 1)
    keep = rng.random(x.size) < np.clip(0.5 + 0.4 * cluster[yi, xi], 0.1, 1)
    x, y = x[keep], y[keep]
    r = rng.uniform(1.5, 2.5, x.size) * s
    nuclei = ctx.full(0.0)
    _draw_ellipses(nuclei, x, y, r, r, 0, rng.uniform(1.3, 1.8, x.size))
    return _stamp_nuclei(h, e, nuclei, ctx.grain, 0.4)


def _glass(ctx: _Context) -> Tuple[np.ndarray, np.ndarray]:
    """Bare slide: almost no stain."""
    h = 0.008 + 0.004 * ctx.fine(2.0)
    e = 0.015 + 0.008 * ctx.smooth(3)
    return h, e


_RENDERERS = {
    'solid_sheet': _tum_solid_sheet,
    'glandular': _tum_glandular,
    'trabecular_cords': _tum_trabecular_cords,
    'small_cell_nests': _tum_small_cell_nests,
    'dense_collagen': _str_dense_collagen,
    'loose_stroma': _str_loose_stroma,
    'cellular_stroma': _str_cellular_stroma,
    'dense_aggregate': _lym_dense_aggregate,
    'infiltrate': _lym_infiltrate,
    'plasma_rich': _lym_plasma_rich,
    'granular_debris': _nec_granular_debris,
    'ghost_cells': _nec_ghost_cells,
    'comedo_pyknotic': _nec_comedo_pyknotic,
}


# ------------------------------------------------------ composition, layout
def sample_composition(rng: np.random.Generator,
                       background_probability: float = BACKGROUND_PROBABILITY
                       ) -> Tuple[int, ...]:
    """Draw the classes of one patch from :data:`COMPOSITIONS`.

    Args:
        rng (np.random.Generator): source of randomness.
        background_probability (float): chance of adding background (4).

    Returns:
        tuple[int]: sorted class indices, at least one of them tissue.
    """
    probs = np.array([p for _, p in COMPOSITIONS])
    choice = rng.choice(len(COMPOSITIONS), p=probs / probs.sum())
    classes = COMPOSITIONS[choice][0]
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


def _layout_once(rng: np.random.Generator, size: int,
                 classes: Sequence[int], min_pixels: int) -> np.ndarray:
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
        ctx = _Context(rng, size, scale, region, grain)
        renderer = _glass if c == BACKGROUND else _RENDERERS[morphologies[c]]
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
    size = _check_size(size)
    wanted = (sample_composition(rng)
              if classes is None else _check_classes(classes))
    if style is None:
        style = sample_style(rng)
    scale = _pixel_scale(size)
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


def render_patch(rng: np.random.Generator,
                 size: int,
                 classes: Optional[Iterable[int]] = None,
                 style: Optional[StainStyle] = None
                 ) -> Tuple[np.ndarray, np.ndarray]:
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


# -------------------------------------------------------------- naming
def _rng(seed: int, split: str, stream: int,
         index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _SPLIT_IDS[split], stream, index])


def slide_style(seed: int, split: str, slide: int) -> StainStyle:
    """Deterministic stain style of slide ``slide`` of ``split``."""
    return sample_style(_rng(seed, split, _STREAM_SLIDE, slide))


def _barcode(rng: np.random.Generator) -> str:
    site = _TCGA_SITES[int(rng.integers(len(_TCGA_SITES)))]
    chars = ''.join(_BARCODE_CHARS[i]
                    for i in rng.integers(len(_BARCODE_CHARS), size=4))
    return f'TCGA-{site}-{chars}-DX1'


def _num_slides(count: int) -> int:
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
    slides = _num_slides(count)
    barcodes = [
        _barcode(_rng(seed, split, _STREAM_BARCODE, s))
        for s in range(slides)
    ]
    rois, seen = [], set()
    for roi in range(math.ceil(count / PATCHES_PER_ROI)):
        rng = _rng(seed, split, _STREAM_ROI, roi)
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
                          index: int) -> Tuple[int, ...]:
    """Classes of sample ``index``: forced single class or a random draw.

    Args:
        rng (np.random.Generator): the sample's generator.
        index (int): sample index within its split.

    Returns:
        tuple[int]: class indices to place.
    """
    slot = index % FORCED_SINGLE_PERIOD
    if slot < len(TISSUE_CLASSES):
        extra = (BACKGROUND, ) if rng.random() < BACKGROUND_PROBABILITY else ()
        return (TISSUE_CLASSES[slot], ) + extra
    return sample_composition(rng)


# ------------------------------------------------------------- file output
def _palette_bytes() -> List[int]:
    return [v for colour in PALETTE for v in colour]


def save_mask(mask: np.ndarray, path: str) -> None:
    """Write a palette ("P" mode) PNG whose pixel values are class ids.

    Args:
        mask (np.ndarray): uint8 (S, S) values 0..4.
        path (str): output file.
    """
    image = Image.fromarray(np.ascontiguousarray(mask, np.uint8), mode='P')
    image.putpalette(_palette_bytes())
    image.save(path, format='PNG')


def save_rgb(rgb: np.ndarray, path: str) -> None:
    """Write a uint8 (S, S, 3) RGB array as PNG."""
    Image.fromarray(np.ascontiguousarray(rgb, np.uint8),
                    mode='RGB').save(path, format='PNG')


class _Job(NamedTuple):
    seed: int
    split: str
    index: int
    slide: int
    stem: str
    size: int
    out_dir: str
    with_mask: bool


class _Result(NamedTuple):
    split: str
    index: int
    file_name: str
    pixel_counts: Tuple[int, ...]
    label: str
    morphologies: Dict[int, str]


def _split_dirs(out_dir: str, split: str) -> Tuple[str, Optional[str]]:
    if split == 'train':
        return osp.join(out_dir, 'training'), osp.join(out_dir,
                                                        'training_masks')
    return osp.join(out_dir, split, 'img'), osp.join(out_dir, split, 'mask')


def _render_job(job: _Job) -> _Result:
    """Render one sample and write its files (runs in a worker)."""
    rng = _rng(job.seed, job.split, _STREAM_SAMPLE, job.index)
    style = slide_style(job.seed, job.split, job.slide)
    sample = render_sample(rng, job.size,
                           composition_for_index(rng, job.index), style)
    label = label_string(sample.mask)
    if job.split == 'train':
        file_name = f'{job.stem}[{label}].png'
    else:
        file_name = f'{job.stem}.png'
    img_dir, mask_dir = _split_dirs(job.out_dir, job.split)
    save_rgb(sample.rgb, osp.join(img_dir, file_name))
    if job.with_mask:
        save_mask(sample.mask, osp.join(mask_dir, file_name))
    counts = np.bincount(sample.mask.ravel(), minlength=len(CLASS_NAMES))
    return _Result(job.split, job.index, file_name,
                   tuple(int(c) for c in counts), label, sample.morphologies)


def _worker_init() -> None:
    cv2.setNumThreads(1)


class _Progress:
    """mmengine progress bar redrawn about 100 times at most, so logs of
    non-interactive runs stay short."""

    def __init__(self, total: int, enabled: bool):
        self.bar = None
        self.step = max(1, total // 100)
        self.pending = 0
        if enabled and total:
            from mmengine.utils import ProgressBar
            self.bar = ProgressBar(total)

    def update(self) -> None:
        self.pending += 1
        if self.bar is not None and self.pending >= self.step:
            self.bar.update(self.pending)
            self.pending = 0

    def close(self) -> None:
        if self.bar is None:
            return
        if self.pending:
            self.bar.update(self.pending)
        self.bar.file.write('\n')
        self.bar.file.flush()


def _run_jobs(jobs: List[_Job], workers: int, progress: bool) -> List[_Result]:
    """Render all jobs, in order, on ``workers`` processes."""
    bar = _Progress(len(jobs), progress)
    results = []
    if workers == 1 or len(jobs) < 2:
        for job in jobs:
            results.append(_render_job(job))
            bar.update()
    else:
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context(
            'fork' if 'fork' in methods else None)
        chunk = max(1, min(16, len(jobs) // (4 * workers)))
        with context.Pool(min(workers, len(jobs)), _worker_init) as pool:
            for result in pool.imap(_render_job, jobs, chunksize=chunk):
                results.append(result)
                bar.update()
    bar.close()
    return results


# --------------------------------------------------------------- manifest
def _split_statistics(results: List[_Result]) -> dict:
    pixels = np.zeros(len(CLASS_NAMES), np.int64)
    labels = np.zeros(len(TISSUE_CLASSES), np.int64)
    singles = np.zeros(len(TISSUE_CLASSES), np.int64)
    combos: Dict[str, int] = {}
    morph = {CLASS_NAMES[c]: {m: 0 for m in names}
             for c, names in MORPHOLOGIES.items()}
    with_background = 0
    for r in results:
        counts = np.asarray(r.pixel_counts)
        pixels += counts
        bits = np.array([int(ch) for ch in r.label])
        labels += bits
        if bits.sum() == 1:
            singles += bits
        combos[r.label] = combos.get(r.label, 0) + 1
        with_background += int(counts[BACKGROUND] > 0)
        for c, name in r.morphologies.items():
            morph[CLASS_NAMES[c]][name] += 1
    total = max(int(pixels.sum()), 1)
    return dict(
        count=len(results),
        pixel_frequencies={
            CLASS_NAMES[c]: round(float(pixels[c]) / total, 6)
            for c in range(len(CLASS_NAMES))
        },
        image_label_counts={
            CLASS_NAMES[c]: int(labels[c])
            for c in TISSUE_CLASSES
        },
        single_label_counts={
            CLASS_NAMES[c]: int(singles[c])
            for c in TISSUE_CLASSES
        },
        label_combinations=dict(sorted(combos.items())),
        patches_with_background=with_background,
        morphology_counts=morph)


def _build_manifest(params: dict, results: List[_Result]) -> dict:
    by_split = {split: [r for r in results if r.split == split]
                for split in SPLITS}
    return dict(
        generator='lpd_mmseg.datasets.synthetic',
        layout='BCSS-WSSS',
        params=params,
        classes=list(CLASS_NAMES),
        palette=[list(c) for c in PALETTE],
        label_order=list(CLASS_NAMES[:len(TISSUE_CLASSES)]),
        min_class_fraction=MIN_CLASS_FRACTION,
        min_class_pixels=min_class_pixels(params['size']),
        counts={split: len(by_split[split]) for split in SPLITS},
        num_slides={
            split: _num_slides(params[f'num_{split}'])
            if params[f'num_{split}'] else 0
            for split in SPLITS
        },
        splits={split: _split_statistics(by_split[split])
                for split in SPLITS})


def _write_json_atomic(data: dict, path: str) -> None:
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(data, f, indent=2, sort_keys=False)
        f.write('\n')
    os.replace(tmp, path)


def _read_manifest(out_dir: str) -> Optional[dict]:
    path = osp.join(out_dir, MANIFEST_NAME)
    if not osp.isfile(path):
        return None
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _count_pngs(folder: str) -> int:
    if not osp.isdir(folder):
        return -1
    return sum(1 for n in os.listdir(folder) if n.endswith('.png'))


def _missing_files(out_dir: str, manifest: dict) -> List[str]:
    """Folders whose PNG count differs from the manifest's counts."""
    counts = manifest.get('counts', {})
    with_masks = manifest.get('params', {}).get('with_train_masks', False)
    problems = []
    for split in SPLITS:
        img_dir, mask_dir = _split_dirs(out_dir, split)
        folders = [img_dir]
        if split != 'train' or with_masks:
            folders.append(mask_dir)
        for folder in folders:
            found = _count_pngs(folder)
            if found != counts.get(split):
                problems.append(f'{folder}: {max(found, 0)} PNGs, manifest '
                                f'says {counts.get(split)}')
    return problems


def _param_diff(old: dict, new: dict) -> str:
    keys = sorted(set(old) | set(new))
    return ', '.join(f'{k}: {old.get(k)!r} -> {new.get(k)!r}' for k in keys
                     if old.get(k) != new.get(k))


def _remove_owned(out_dir: str) -> None:
    for entry in OWNED_ENTRIES:
        path = osp.join(out_dir, entry)
        if osp.isdir(path) and not osp.islink(path):
            shutil.rmtree(path)
        elif osp.lexists(path):
            os.remove(path)


def _prepare_out_dir(out_dir: str, params: dict,
                     overwrite: bool) -> Optional[dict]:
    """Check ``out_dir``; return an existing manifest to reuse, else None.

    Raises:
        FileExistsError: ``out_dir`` is a file, holds other data, or holds a
            synthetic data set of other parameters, and ``overwrite`` is off.
    """
    if osp.exists(out_dir) and not osp.isdir(out_dir):
        raise FileExistsError(f"'{out_dir}' exists and is not a folder")
    if not osp.isdir(out_dir) or not os.listdir(out_dir):
        return None
    manifest = _read_manifest(out_dir)
    hint = ('Pass overwrite=True (--overwrite) to regenerate; that removes '
            f'only {", ".join(OWNED_ENTRIES)} inside it.  Or choose another '
            'folder.')
    if manifest is None:
        foreign = [e for e in OWNED_ENTRIES
                   if osp.lexists(osp.join(out_dir, e))]
        if foreign:
            # Possibly a real data set: never delete what we did not write.
            raise FileExistsError(
                f"'{out_dir}' holds {', '.join(foreign)} but no "
                f'{MANIFEST_NAME}, so they were not written by this generator '
                '(they may be a real data set); refusing to write into it or '
                'remove them, even with overwrite. Choose another folder.')
        if overwrite:
            return None
        raise FileExistsError(
            f"'{out_dir}' is not empty and holds no readable "
            f'{MANIFEST_NAME}, so it was not written (completely) by this '
            f'generator; refusing to write into it. {hint}')
    if overwrite:
        return None
    if manifest.get('params') != params:
        raise FileExistsError(
            f"'{out_dir}' holds a synthetic data set made with other "
            f"parameters ({_param_diff(manifest.get('params', {}), params)})."
            f' {hint}')
    problems = _missing_files(out_dir, manifest)
    if problems:
        raise FileExistsError(
            f"'{out_dir}' holds a synthetic data set with the same "
            'parameters, but its files do not match its manifest: ' +
            '; '.join(problems[:4]) + f'. {hint}')
    return manifest


def _make_dirs(out_dir: str, with_train_masks: bool) -> None:
    for split in SPLITS:
        img_dir, mask_dir = _split_dirs(out_dir, split)
        os.makedirs(img_dir, exist_ok=True)
        if split != 'train' or with_train_masks:
            os.makedirs(mask_dir, exist_ok=True)


def make_params(seed: int = 0,
                num_train: int = 200,
                num_val: int = 40,
                num_test: int = 40,
                size: int = 224,
                with_train_masks: bool = False) -> dict:
    """Validated generation parameters (what the manifest records).

    Raises:
        ValueError: a count is negative or all are zero, ``size`` is outside
            32..2048, ``seed`` is negative, or a value has the wrong type.
    """
    params = dict(
        generator_version=GENERATOR_VERSION,
        seed=_as_int('seed', seed, 0, 2**63 - 1),
        num_train=_as_int('num_train', num_train, 0),
        num_val=_as_int('num_val', num_val, 0),
        num_test=_as_int('num_test', num_test, 0),
        size=_check_size(size),
        with_train_masks=bool(with_train_masks))
    if params['num_train'] + params['num_val'] + params['num_test'] == 0:
        raise ValueError('num_train, num_val and num_test are all 0; '
                         'nothing to generate')
    return params


def generate_synthetic_bcss(out_dir: str,
                            seed: int = 0,
                            num_train: int = 200,
                            num_val: int = 40,
                            num_test: int = 40,
                            size: int = 224,
                            with_train_masks: bool = False,
                            overwrite: bool = False,
                            workers: int = 1,
                            progress: bool = True) -> dict:
    """Write a synthetic data set in the BCSS-WSSS layout.

    Layout::

        out_dir/training/<source>+<i>[abcd].png    RGB, label in the name
        out_dir/training_masks/<same name>.png     only with_train_masks
        out_dir/{val,test}/img/<source>+<i>.png    RGB
        out_dir/{val,test}/mask/<source>+<i>.png   palette PNG, values 0..4
        out_dir/synthetic_manifest.json            parameters and statistics

    An ``out_dir`` that already holds a complete data set with the same
    parameters is reused untouched.  A non-empty ``out_dir`` holding
    anything else is refused unless ``overwrite``; even then only
    :data:`OWNED_ENTRIES` of an earlier generated data set (one with a
    manifest) are removed.  A folder with ``training/``, ``val/`` or
    ``test/`` but no manifest may be a real data set and is always refused.

    Args:
        out_dir (str): data set root.
        seed (int): non-negative seed; same parameters give identical bytes.
        num_train (int): training patches (weak labels in the names).
        num_val (int): validation patches with masks.
        num_test (int): test patches with masks.
        size (int): patch side in pixels, 32..2048.
        with_train_masks (bool): also write ``training_masks/`` (for a fully
            supervised upper bound; not part of the real layout).
        overwrite (bool): regenerate even when ``out_dir`` is not empty.
        workers (int): processes; results do not depend on it.
        progress (bool): show a progress bar.

    Returns:
        dict: the manifest, plus ``out_dir`` and ``reused`` (True when an
        existing data set was kept); those two keys are not in the file.

    Raises:
        ValueError: bad arguments.
        FileExistsError: ``out_dir`` cannot be used without ``overwrite``.
    """
    params = make_params(seed, num_train, num_val, num_test, size,
                         with_train_masks)
    workers = _as_int('workers', workers, 1)
    if not isinstance(out_dir, (str, os.PathLike)) or not str(out_dir):
        raise ValueError(f'out_dir must be a folder path, got {out_dir!r}')
    out_dir = os.fspath(out_dir)
    existing = _prepare_out_dir(out_dir, params, overwrite)
    if existing is not None:
        return dict(existing, out_dir=out_dir, reused=True)
    os.makedirs(out_dir, exist_ok=True)
    _remove_owned(out_dir)
    _make_dirs(out_dir, params['with_train_masks'])
    jobs = []
    for split in SPLITS:
        count = params[f'num_{split}']
        with_mask = split != 'train' or params['with_train_masks']
        for index, (stem, slide) in enumerate(
                plan_split(params['seed'], split, count)):
            jobs.append(
                _Job(params['seed'], split, index, slide, stem,
                     params['size'], out_dir, with_mask))
    results = _run_jobs(jobs, workers, progress)
    manifest = _build_manifest(params, results)
    _write_json_atomic(manifest, osp.join(out_dir, MANIFEST_NAME))
    return dict(manifest, out_dir=out_dir, reused=False)


def overall_pixel_frequencies(manifest: dict) -> Dict[str, float]:
    """Pixel share of each class over all splits of a manifest."""
    totals = np.zeros(len(CLASS_NAMES))
    for split, stats in manifest['splits'].items():
        pixels = stats['count'] * manifest['params']['size']**2
        for c, name in enumerate(CLASS_NAMES):
            totals[c] += stats['pixel_frequencies'][name] * pixels
    totals /= max(totals.sum(), 1e-12)
    return {name: float(totals[c]) for c, name in enumerate(CLASS_NAMES)}


def format_summary(manifest: dict) -> str:
    """One line: where the data set is, its counts and class frequencies.

    Args:
        manifest (dict): as returned by :func:`generate_synthetic_bcss`.

    Returns:
        str: human-readable summary.
    """
    counts = manifest['counts']
    freqs = overall_pixel_frequencies(manifest)
    train = manifest['splits']['train']['image_label_counts']
    state = 'reused' if manifest.get('reused') else 'written'
    where = manifest.get('out_dir', '?')
    return (f"Synthetic BCSS-WSSS data set {state} at {where}: "
            f"train {counts['train']}, val {counts['val']}, "
            f"test {counts['test']} patches of "
            f"{manifest['params']['size']} px; pixel frequencies " +
            ' '.join(f'{k} {v:.3f}' for k, v in freqs.items()) +
            '; training images per class ' +
            ' '.join(f'{k} {v}' for k, v in train.items()))
