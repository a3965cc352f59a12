"""The reference backend: ``pydensecrf`` (an optional compiled extra)."""
import numpy as np

from .params import UNARY_CLIP, DenseCRFParams

__all__ = ['dense_crf_pydensecrf', 'import_pydensecrf',
           'PYDENSECRF_INSTALL_HINT']

PYDENSECRF_INSTALL_HINT = (
    'The pydensecrf backend needs the optional package pydensecrf2 (import '
    'name `pydensecrf`). Install it with `make crf`, or with '
    '`pip install cython && pip install --no-build-isolation '
    'pydensecrf2==1.1`; or use backend="torch", which needs no extension.')


def import_pydensecrf():
    """Import ``pydensecrf.densecrf`` or explain how to install it.

    Raises:
        ImportError: with :data:`PYDENSECRF_INSTALL_HINT`.
    """
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError as err:
        raise ImportError(PYDENSECRF_INSTALL_HINT) from err
    return dcrf


def check_single(probs: np.ndarray, image: np.ndarray) -> None:
    """Validate one (C, H, W) probability map and its (H, W, 3) uint8 image."""
    if probs.ndim != 3:
        raise ValueError(f'probs must have shape (C, H, W), got {probs.shape}')
    if not np.issubdtype(probs.dtype, np.floating):
        raise TypeError(f'probs must be floating point, got {probs.dtype}')
    if probs.shape[0] < 2:
        raise ValueError(
            f'probs needs at least 2 classes, got C={probs.shape[0]}')
    if image.dtype != np.uint8:
        raise TypeError(f'image must be uint8 RGB, got dtype {image.dtype}')
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f'image must have shape (H, W, 3), got {image.shape}')
    if image.shape[:2] != probs.shape[1:]:
        raise ValueError(f'image size {image.shape[:2]} differs from probs '
                         f'size {probs.shape[1:]}')
    if not np.all(np.isfinite(probs)):
        raise ValueError('probs contains NaN or infinite values')


def dense_crf_pydensecrf(probs: np.ndarray,
                         image: np.ndarray,
                         params: DenseCRFParams = DenseCRFParams()
                         ) -> np.ndarray:
    """Refine one probability map with the reference ``pydensecrf``.

    Args:
        probs: (C, H, W) float class probabilities (summing to 1 over C),
            C >= 2.
        image: (H, W, 3) uint8 RGB image.
        params: CRF parameters.

    Returns:
        np.ndarray: (C, H, W) float32 refined probabilities.

    Raises:
        ImportError: ``pydensecrf`` is not installed (says how to install it).
        ValueError, TypeError: bad shapes, dtypes or parameters.
    """
    probs = np.asarray(probs)
    image = np.asarray(image)
    check_single(probs, image)
    params.validate()
    dcrf = import_pydensecrf()
    num_classes, height, width = probs.shape
    unary = -np.log(np.clip(probs.astype(np.float32), UNARY_CLIP, 1.0))
    crf = dcrf.DenseCRF2D(width, height, num_classes)
    crf.setUnaryEnergy(np.ascontiguousarray(unary.reshape(num_classes, -1)))
    crf.addPairwiseGaussian(
        sxy=float(params.gaussian_sxy), compat=float(params.gaussian_compat))
    crf.addPairwiseBilateral(
        sxy=float(params.bilateral_sxy),
        srgb=float(params.bilateral_srgb),
        rgbim=np.ascontiguousarray(image),
        compat=float(params.bilateral_compat))
    refined = np.array(crf.inference(int(params.iterations)), dtype=np.float32)
    return refined.reshape(num_classes, height, width)
