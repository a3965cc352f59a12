"""Augmentations for H&E patches."""
from typing import Sequence

import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS

# Ruifrok & Johnston stain vectors (haematoxylin, eosin, DAB) as rows, in
# RGB optical density; the same matrix as scikit-image's ``rgb_from_hed``.
RGB_FROM_HED = np.array([[0.65, 0.70, 0.29],
                         [0.07, 0.99, 0.11],
                         [0.27, 0.57, 0.78]], dtype=np.float64)
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED)
_LOG_EPS = np.log(1e-6)


def rgb_to_hed(rgb: np.ndarray) -> np.ndarray:
    """RGB in [0, 1], ``(..., 3)`` -> stain concentrations ``(..., 3)``.

    Unlike scikit-image, negative concentrations are kept (a colour outside
    the stain cone), so that :func:`hed_to_rgb` inverts this exactly and a
    jitter with no perturbation leaves the image unchanged.
    """
    rgb = np.maximum(rgb, 1e-6)
    return (np.log(rgb) / _LOG_EPS) @ HED_FROM_RGB


def hed_to_rgb(hed: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_hed`; returns RGB clipped to [0, 1]."""
    log_rgb = (hed * _LOG_EPS) @ RGB_FROM_HED
    return np.clip(np.exp(log_rgb), 0, 1)


def hed_jitter(img: np.ndarray, alpha: Sequence[float],
               beta: Sequence[float], channel_order: str = 'bgr'
               ) -> np.ndarray:
    """Scale and shift each stain channel: ``s' = s * alpha + beta``.

    ``img`` is uint8 ``(H, W, 3)``; the result has the same dtype and order.
    """
    rgb = img[..., ::-1] if channel_order == 'bgr' else img
    hed = rgb_to_hed(rgb.astype(np.float64) / 255.0)
    hed = hed * np.asarray(alpha) + np.asarray(beta)
    out = np.round(hed_to_rgb(hed) * 255.0).astype(np.uint8)
    out = out[..., ::-1] if channel_order == 'bgr' else out
    return np.ascontiguousarray(out)


@TRANSFORMS.register_module()
class HEDJitter(BaseTransform):
    """Random H&E stain perturbation in HED colour space.

    Each stain channel is scaled by ``U(1 - sigma, 1 + sigma)`` and shifted by
    ``U(-bias, bias)`` (Tellez et al., 2018), then mapped back to RGB.
    Masks are untouched.

    Args:
        sigma (float): scale perturbation.  Default 0.05.
        bias (float): shift perturbation.  Default 0.05.
        prob (float): probability of applying it.  Default 0.5.
        channel_order (str): channel order of ``results['img']``; mmcv loads
            ``'bgr'``.  Default ``'bgr'``.
    """

    def __init__(self, sigma: float = 0.05, bias: float = 0.05,
                 prob: float = 0.5, channel_order: str = 'bgr'):
        if not 0 <= prob <= 1:
            raise ValueError(f'prob must be in [0, 1], got {prob}')
        if channel_order not in ('bgr', 'rgb'):
            raise ValueError(f"channel_order must be 'bgr' or 'rgb', got "
                             f'{channel_order!r}')
        self.sigma, self.bias, self.prob = sigma, bias, prob
        self.channel_order = channel_order

    def transform(self, results: dict) -> dict:
        if np.random.rand() >= self.prob:
            return results
        alpha = np.random.uniform(1 - self.sigma, 1 + self.sigma, 3)
        beta = np.random.uniform(-self.bias, self.bias, 3)
        results['img'] = hed_jitter(results['img'], alpha, beta,
                                    self.channel_order)
        return results

    def __repr__(self):
        return (f'{self.__class__.__name__}(sigma={self.sigma}, '
                f'bias={self.bias}, prob={self.prob})')


@TRANSFORMS.register_module()
class RandomRotate90(BaseTransform):
    """Rotate image and masks by a random multiple of 90 degrees.

    With probability ``prob`` one of 90, 180, 270 degrees (counter-clockwise)
    is drawn uniformly; the number of quarter turns is stored as
    ``results['rot90_k']`` (0 when not rotated), and whether a
    ``RandomFlip`` ran before this step as ``results['rot90_after_flip']``,
    so that inference can undo the two in the reverse order.

    Args:
        prob (float): probability of rotating.  Default 0.75, which makes all
            four orientations equally likely.
    """

    def __init__(self, prob: float = 0.75):
        if not 0 <= prob <= 1:
            raise ValueError(f'prob must be in [0, 1], got {prob}')
        self.prob = prob

    def transform(self, results: dict) -> dict:
        k = 0
        if np.random.rand() < self.prob:
            k = int(np.random.randint(1, 4))
        results['rot90_k'] = k
        results['rot90_after_flip'] = 'flip' in results
        if k == 0:
            return results
        results['img'] = np.ascontiguousarray(np.rot90(results['img'], k))
        for key in results.get('seg_fields', []):
            results[key] = np.ascontiguousarray(np.rot90(results[key], k))
        results['img_shape'] = results['img'].shape[:2]
        return results

    def __repr__(self):
        return f'{self.__class__.__name__}(prob={self.prob})'


@TRANSFORMS.register_module()
class FixedBrightness(BaseTransform):
    """Multiply pixel values by a fixed factor (deterministic).

    Meant for a ``tta_pipeline`` (the paper's TTA uses factors 0.9, 1.0,
    1.1).  Values are clipped to the input dtype's range; the factor is
    recorded as ``results['brightness_factor']``.

    Args:
        factor (float): brightness multiplier, > 0.
    """

    def __init__(self, factor: float = 1.0):
        if factor <= 0:
            raise ValueError(f'factor must be > 0, got {factor}')
        self.factor = float(factor)

    def transform(self, results: dict) -> dict:
        img = results['img']
        if self.factor != 1.0:
            scaled = img.astype(np.float32) * self.factor
            if np.issubdtype(img.dtype, np.integer):
                info = np.iinfo(img.dtype)
                scaled = np.clip(np.round(scaled), info.min, info.max)
            results['img'] = scaled.astype(img.dtype)
        results['brightness_factor'] = self.factor
        return results

    def __repr__(self):
        return f'{self.__class__.__name__}(factor={self.factor})'
