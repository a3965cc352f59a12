"""Per-slide stain style and smooth random fields."""
from dataclasses import dataclass
from functools import lru_cache
from typing import Dict, Tuple

import cv2
import numpy as np

from .params import MORPHOLOGIES

# Reference optical-density vectors of haematoxylin and eosin (Macenko).
_H_REF = np.array([0.5626, 0.7201, 0.4062])
_E_REF = np.array([0.2159, 0.8012, 0.5581])


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
    return StainStyle(h_vector=h_vec,
                      e_vector=e_vec,
                      h_gain=float(rng.lognormal(0.0, 0.15)),
                      e_gain=float(rng.lognormal(0.0, 0.18)),
                      glass_od=np.abs(rng.normal(0.035, 0.015, 3)),
                      blur_sigma=float(rng.uniform(0.45, 0.95)),
                      noise_sigma=float(rng.uniform(1.5, 4.0)),
                      morphology_weights=weights)


# ----------------------------------------------------------- random fields
def standardise(field: np.ndarray) -> np.ndarray:
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
    return standardise(field)


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
    return standardise(noise)


@lru_cache(maxsize=8)
def coordinates(size: int) -> Tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    yy.setflags(write=False)
    xx.setflags(write=False)
    return xx, yy
