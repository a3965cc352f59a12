"""Drawing primitives shared by the morphologies: nuclei, fibres."""
from typing import NamedTuple, Tuple

import cv2
import numpy as np

from .stain import coordinates, fine_noise, smooth_field, standardise

_SUBPIXEL_SHIFT = 4
_SUBPIXEL = float(1 << _SUBPIXEL_SHIFT)


# ---------------------------------------------------------------- drawing
class DrawContext(NamedTuple):
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

    def random_points(self, spacing: float) -> Tuple[np.ndarray, np.ndarray]:
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


def draw_ellipses(canvas: np.ndarray,
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


def stamp_nuclei(h: np.ndarray,
                 e: np.ndarray,
                 nuclei: np.ndarray,
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


def fibres(ctx: DrawContext, period: float, warp: float,
           sharpness: float) -> Tuple[np.ndarray, np.ndarray]:
    """Wavy, streaky, roughly parallel fibres.

    A warped stripe pattern gives the bundles; white noise smeared along
    the mean fibre direction breaks them into streaks of varying width.

    Args:
        ctx (DrawContext): renderer context.
        period (float): fibre spacing in pixels at 224 px.
        warp (float): waviness, radians of phase per unit of a smooth field.
        sharpness (float): exponent; larger gives thinner fibres.

    Returns:
        tuple: fibre density in [0, 1] and the stripe phase, float32
        (S, S) each.
    """
    xx, yy = coordinates(ctx.size)
    theta = ctx.rng.uniform(0.0, np.pi)
    along = xx * np.float32(np.cos(theta)) + yy * np.float32(np.sin(theta))
    phase = (along * np.float32(2 * np.pi / (period * ctx.scale)) +
             np.float32(warp) * ctx.smooth(ctx.rng.uniform(1.5, 3.0)) +
             0.8 * ctx.fine(1.2))
    noise = ctx.rng.standard_normal((ctx.size, ctx.size), dtype=np.float32)
    streak = standardise(
        cv2.filter2D(noise, -1,
                     _line_kernel(14.0 * ctx.scale, theta + np.pi / 2)))
    mix = 0.6 * np.sin(phase) + 0.7 * streak
    fibre = np.clip(0.5 + 0.45 * mix, 0.0, 1.0)**np.float32(sharpness)
    return fibre.astype(np.float32), phase


def fibre_angle(phase: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Direction (degrees) of the fibres through points ``x, y``."""
    size = phase.shape[0]
    xi = np.clip(x.astype(np.int64), 1, size - 2)
    yi = np.clip(y.astype(np.int64), 1, size - 2)
    gx = phase[yi, xi + 1] - phase[yi, xi - 1]
    gy = phase[yi + 1, xi] - phase[yi - 1, xi]
    return np.degrees(np.arctan2(gy, gx)) + 90.0


def stroma_backdrop(ctx: DrawContext, eosin: float,
                    contrast: float) -> Tuple[np.ndarray, np.ndarray]:
    """Pink fibrous background shared by several morphologies."""
    fibre, phase = fibres(ctx, ctx.rng.uniform(6.0, 9.0),
                          ctx.rng.uniform(3.0, 8.0), 1.3)
    e = eosin + contrast * fibre
    h = ctx.full(0.05) + 0.02 * fibre
    return h, e
