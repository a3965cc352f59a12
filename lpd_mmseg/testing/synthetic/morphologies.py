"""Haematoxylin/eosin maps of every morphology of every class."""
from typing import Tuple

import cv2
import numpy as np

from .drawing import (
    DrawContext,
    draw_ellipses,
    fibre_angle,
    fibres,
    stamp_nuclei,
    stroma_backdrop,
)


# ------------------------------------------------------ tumour morphologies
def _tum_solid_sheet(ctx: DrawContext) -> Tuple[np.ndarray, np.ndarray]:
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
    draw_ellipses(nuclei, x, y, a, b, angle, value)
    ves = rng.random(n) < 0.35
    draw_ellipses(nuclei, x[ves], y[ves], a[ves] * 0.6, b[ves] * 0.6,
                  angle[ves], value[ves] * 0.45)
    draw_ellipses(nuclei, x[ves], y[ves], 1.1 * s, 1.1 * s, 0, 1.5)
    return stamp_nuclei(h, e, nuclei, ctx.grain, 0.35)


def _tum_glandular(ctx: DrawContext) -> Tuple[np.ndarray, np.ndarray]:
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
    draw_ellipses(lumen, x, y, radius, radius * rng.uniform(0.55, 1.0, n),
                  rng.uniform(0, 180, n), 1.0)
    is_lumen = lumen > 0
    dist = cv2.distanceTransform((~is_lumen).astype(np.uint8), cv2.DIST_L2, 3)
    thickness = rng.uniform(9.0, 13.0) * s
    epithelium = cv2.GaussianBlur((dist <= thickness).astype(np.float32),
                                  (0, 0), 1.0 * s)
    sh, se = stroma_backdrop(ctx, 0.42, 0.25)
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
    radial = fibre_angle(dist, nx, ny) - 90.0
    a = rng.uniform(3.5, 5.5, m) * s
    nuclei = ctx.full(0.0)
    draw_ellipses(nuclei, nx, ny, a, a * rng.uniform(0.5, 0.75, m), radial,
                  rng.uniform(0.8, 1.2, m))
    return stamp_nuclei(h, e, nuclei, ctx.grain, 0.35)


def _tum_trabecular_cords(ctx: DrawContext) -> Tuple[np.ndarray, np.ndarray]:
    """Branching cords of tumour cells in a fibrous background."""
    rng, s = ctx.rng, ctx.scale
    field = ctx.smooth(rng.uniform(3.0, 5.0))
    cord = np.abs(field) < rng.uniform(0.5, 0.8)
    soft = cv2.GaussianBlur(cord.astype(np.float32), (0, 0), 1.0 * s)
    sh, se = stroma_backdrop(ctx, 0.45, 0.25)
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
    draw_ellipses(nuclei, x, y, a, a * rng.uniform(0.6, 0.95, n),
                  rng.uniform(0, 180, n), rng.uniform(0.8, 1.25, n))
    return stamp_nuclei(h, e, nuclei, ctx.grain, 0.35)


def _tum_small_cell_nests(ctx: DrawContext) -> Tuple[np.ndarray, np.ndarray]:
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
    draw_ellipses(nuclei, x, y, a, a * rng.uniform(0.75, 1.0, n),
                  rng.uniform(0, 180, n), rng.uniform(0.85, 1.2, n))
    return stamp_nuclei(h, e, nuclei, ctx.grain, 0.35)


# ------------------------------------------------------ stroma morphologies
def _spindle_nuclei(ctx: DrawContext, nuclei: np.ndarray, phase: np.ndarray,
                    spacing: float, value: Tuple[float, float]) -> None:
    rng, s = ctx.rng, ctx.scale
    x, y = ctx.random_points(spacing)
    n = x.size
    angle = fibre_angle(phase, x, y) + rng.normal(0, 8, n)
    draw_ellipses(nuclei, x, y,
                  rng.uniform(5.0, 9.0, n) * s,
                  rng.uniform(1.1, 2.0, n) * s, angle, rng.uniform(*value, n))


def _str_dense_collagen(ctx: DrawContext) -> Tuple[np.ndarray, np.ndarray]:
    """Dense pink wavy collagen bundles with sparse aligned spindle nuclei."""
    rng = ctx.rng
    fibre, phase = fibres(ctx, rng.uniform(5.0, 9.0), rng.uniform(4.0, 10.0),
                          rng.uniform(1.0, 2.0))
    e = 0.36 + 0.5 * fibre * (1.0 + 0.15 * ctx.grain)
    h = 0.04 + 0.03 * fibre
    nuclei = ctx.full(0.0)
    _spindle_nuclei(ctx, nuclei, phase, 26.0, (0.8, 1.2))
    return stamp_nuclei(h, e, nuclei, ctx.grain, 0.4)


def _str_loose_stroma(ctx: DrawContext) -> Tuple[np.ndarray, np.ndarray]:
    """Pale oedematous stroma: thin wisps, clear spaces, a small vessel."""
    rng, s = ctx.rng, ctx.scale
    fibre, phase = fibres(ctx, rng.uniform(3.5, 6.0), rng.uniform(6.0, 14.0),
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
    draw_ellipses(nuclei, x, y,
                  rng.uniform(4.0, 7.0, n) * s,
                  rng.uniform(1.2, 2.2, n) * s, fibre_angle(phase, x, y),
                  rng.uniform(0.6, 1.0, n))
    return stamp_nuclei(h, e, nuclei, ctx.grain, 0.4)


def _draw_vessel(ctx: DrawContext, h: np.ndarray, e: np.ndarray) -> None:
    """A small vessel (wall, lumen, red cells) drawn into ``h, e``."""
    rng, s = ctx.rng, ctx.scale
    x, y = ctx.random_points(40.0)
    if x.size == 0:
        return
    cx, cy = x[:1], y[:1]
    r = rng.uniform(5.0, 9.0) * s
    ratio = rng.uniform(0.5, 1.0)
    angle = rng.uniform(0, 180)
    draw_ellipses(e, cx, cy, r + 2 * s, (r + 2 * s) * ratio, angle, 0.65)
    draw_ellipses(h, cx, cy, r + 2 * s, (r + 2 * s) * ratio, angle, 0.06)
    draw_ellipses(e, cx, cy, r, r * ratio, angle, 0.05)
    draw_ellipses(h, cx, cy, r, r * ratio, angle, 0.01)
    k = int(rng.integers(3, 9))
    t = rng.uniform(0, 2 * np.pi, k)
    rho = np.sqrt(rng.uniform(0, 1, k)) * (r * ratio - 1.5 * s)
    rx, ry = cx + rho * np.cos(t), cy + rho * np.sin(t)
    draw_ellipses(e, rx, ry, 1.8 * s, 1.8 * s, 0, 1.0)
    draw_ellipses(h, rx, ry, 1.8 * s, 1.8 * s, 0, 0.02)


def _str_cellular_stroma(ctx: DrawContext) -> Tuple[np.ndarray, np.ndarray]:
    """Cellular (desmoplastic) stroma: many spindle cells, some
    lymphocytes."""
    rng, s = ctx.rng, ctx.scale
    fibre, phase = fibres(ctx, rng.uniform(6.0, 10.0), rng.uniform(3.0, 8.0),
                          1.2)
    e = 0.30 + 0.35 * fibre
    h = 0.08 + 0.03 * ctx.smooth(4)
    nuclei = ctx.full(0.0)
    _spindle_nuclei(ctx, nuclei, phase, 13.0, (0.8, 1.2))
    x, y = ctx.random_points(40.0)
    r = rng.uniform(2.4, 3.2, x.size) * s
    draw_ellipses(nuclei, x, y, r, r, 0, rng.uniform(1.2, 1.6, x.size))
    return stamp_nuclei(h, e, nuclei, ctx.grain, 0.4)


# -------------------------------------------------- lymphocyte morphologies
def _lymphocytes(ctx: DrawContext, nuclei: np.ndarray, x: np.ndarray,
                 y: np.ndarray) -> None:
    rng, s, n = ctx.rng, ctx.scale, x.size
    r = rng.uniform(2.4, 3.3, n) * s
    draw_ellipses(nuclei, x, y, r, r * rng.uniform(0.85, 1.0, n),
                  rng.uniform(0, 180, n), rng.uniform(1.15, 1.65, n))


def _lym_dense_aggregate(ctx: DrawContext) -> Tuple[np.ndarray, np.ndarray]:
    """Sheet of small dark round nuclei with scattered pale macrophages."""
    rng, s = ctx.rng, ctx.scale
    h = 0.22 + 0.04 * ctx.smooth(4)
    e = 0.20 + 0.05 * ctx.fine(1.0)
    x, y = ctx.grid_points(rng.uniform(6.0, 7.2), 0.35)
    macro = rng.random(x.size) < 0.04
    gap = rng.random(x.size) < 0.08
    mx, my = x[macro], y[macro]
    draw_ellipses(e, mx, my, 6.0 * s, 5.0 * s, rng.uniform(0, 180, mx.size),
                  0.35)
    draw_ellipses(h, mx, my, 6.0 * s, 5.0 * s, 0, 0.10)
    nuclei = ctx.full(0.0)
    draw_ellipses(nuclei, mx, my, 3.8 * s, 3.0 * s,
                  rng.uniform(0, 180, mx.size), 0.55)
    lym = ~(macro | gap)
    _lymphocytes(ctx, nuclei, x[lym], y[lym])
    return stamp_nuclei(h, e, nuclei, ctx.grain, 0.3)


def _lym_infiltrate(ctx: DrawContext) -> Tuple[np.ndarray, np.ndarray]:
    """Lymphocytes scattered in clusters over pink fibrous stroma."""
    rng = ctx.rng
    h, e = stroma_backdrop(ctx, 0.34, 0.3)
    x, y = ctx.random_points(7.0)
    density = ctx.smooth(rng.uniform(2.0, 4.0))
    xi = np.clip(x.astype(np.int64), 0, ctx.size - 1)
    yi = np.clip(y.astype(np.int64), 0, ctx.size - 1)
    keep_p = np.clip(0.45 + 0.35 * density[yi, xi], 0.1, 0.95)
    keep = rng.random(x.size) < keep_p
    nuclei = ctx.full(0.0)
    _lymphocytes(ctx, nuclei, x[keep], y[keep])
    return stamp_nuclei(h, e, nuclei, ctx.grain, 0.3)


def _lym_plasma_rich(ctx: DrawContext) -> Tuple[np.ndarray, np.ndarray]:
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
    draw_ellipses(h, px, py, a, b, theta, 0.32)
    draw_ellipses(e, px, py, a, b, theta, 0.34)
    offset = 0.45 * a
    rad = np.radians(theta)
    nuclei = ctx.full(0.0)
    draw_ellipses(nuclei, px + offset * np.cos(rad), py + offset * np.sin(rad),
                  2.6 * s, 2.4 * s, theta, rng.uniform(1.0, 1.4, m))
    _lymphocytes(ctx, nuclei, x[~plasma], y[~plasma])
    return stamp_nuclei(h, e, nuclei, ctx.grain, 0.3)


# --------------------------------------------------- necrosis morphologies
def _nec_granular_debris(ctx: DrawContext) -> Tuple[np.ndarray, np.ndarray]:
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
    draw_ellipses(nuclei, fx, fy, r, r * rng.uniform(0.6, 1.0, fx.size),
                  rng.uniform(0, 180, fx.size), rng.uniform(0.9, 1.5, fx.size))
    dx, dy = ctx.random_points(6.0)
    draw_ellipses(nuclei, dx, dy, 0.7 * s, 0.6 * s, 0,
                  rng.uniform(0.5, 0.8, dx.size))
    return stamp_nuclei(h, e, nuclei, ctx.grain, 0.5)


def _nec_ghost_cells(ctx: DrawContext) -> Tuple[np.ndarray, np.ndarray]:
    """Pale ghost cells: faint membranes and faded nuclei, no chromatin."""
    rng, s = ctx.rng, ctx.scale
    h = 0.07 + 0.03 * ctx.grain
    e = 0.26 + 0.05 * ctx.fine(1.0)
    x, y = ctx.grid_points(12.0, 0.3)
    n = x.size
    a = rng.uniform(5.0, 7.0, n) * s
    angle = rng.uniform(0, 180, n)
    draw_ellipses(e,
                  x,
                  y,
                  a,
                  a * rng.uniform(0.7, 1.0, n),
                  angle,
                  0.42,
                  thickness=1)
    ghost = rng.uniform(2.5, 4.0, n) * s
    draw_ellipses(h, x, y, ghost, ghost * 0.8, angle,
                  rng.uniform(0.18, 0.3, n))
    nuclei = ctx.full(0.0)
    fx, fy = ctx.random_points(40.0)
    draw_ellipses(nuclei, fx, fy, 1.2 * s, 1.0 * s, 0,
                  rng.uniform(0.9, 1.3, fx.size))
    return stamp_nuclei(h, e, nuclei, ctx.grain, 0.5)


def _nec_comedo_pyknotic(ctx: DrawContext) -> Tuple[np.ndarray, np.ndarray]:
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
    draw_ellipses(nuclei, x, y, r, r, 0, rng.uniform(1.3, 1.8, x.size))
    return stamp_nuclei(h, e, nuclei, ctx.grain, 0.4)


def glass(ctx: DrawContext) -> Tuple[np.ndarray, np.ndarray]:
    """Bare slide: almost no stain."""
    h = 0.008 + 0.004 * ctx.fine(2.0)
    e = 0.015 + 0.008 * ctx.smooth(3)
    return h, e


RENDERERS = {
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
