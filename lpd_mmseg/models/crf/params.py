"""Parameters of the dense CRF and the checks shared by its backends."""
import math
from dataclasses import dataclass
from numbers import Real

import numpy as np

__all__ = ['DenseCRFParams', 'UNARY_CLIP', 'TINY', 'check_real',
           'check_positive_int']

#: Smallest probability in the unary (as pydensecrf.utils.unary_from_softmax).
UNARY_CLIP = 1e-5

#: Probabilities are raised to at least this before message passing.
#: Float32 denormals (below ~1e-38), which saturated softmaxes produce, slow
#: CPU arithmetic down by orders of magnitude; values this small change no
#: message visibly.
TINY = 1e-15


def check_real(name: str, value, allow_zero: bool) -> None:
    """Raise ValueError unless ``value`` is a finite real > 0 (or >= 0).

    Args:
        name: Name used in the message, e.g. ``'DenseCRFParams.gaussian_sxy'``.
        value: The value to check (bools are refused).
        allow_zero: Accept 0.
    """
    bound = '>= 0' if allow_zero else '> 0'
    ok = (
        isinstance(value, Real) and not isinstance(value, bool)
        and math.isfinite(value) and (value >= 0 if allow_zero else value > 0))
    if not ok:
        raise ValueError(f'{name} must be a finite number {bound}, got '
                         f'{value!r}')


def check_positive_int(name: str, value) -> None:
    """Raise ValueError unless ``value`` is an int >= 1 (bool excluded)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f'{name} must be an integer >= 1, got {value!r}')


@dataclass(frozen=True)
class DenseCRFParams:
    """Parameters of the dense CRF; the defaults are the paper's (pydensecrf).

    Frozen (use :func:`dataclasses.replace` to change a field) and validated
    on construction.

    Attributes:
        gaussian_sxy: Spatial standard deviation, in pixels, of the
            appearance-free Gaussian kernel.
        gaussian_compat: Potts weight of the Gaussian kernel (0 disables it).
        bilateral_sxy: Spatial standard deviation, in pixels, of the
            bilateral kernel.
        bilateral_srgb: Colour standard deviation, in 0..255 RGB units, of the
            bilateral kernel.
        bilateral_compat: Potts weight of the bilateral kernel (0 disables it).
        iterations: Number of mean-field updates; 0 returns the unary softmax,
            i.e. the (clipped, renormalised) input probabilities.
    """
    gaussian_sxy: float = 15.0
    gaussian_compat: float = 30.0
    bilateral_sxy: float = 10.0
    bilateral_srgb: float = 20.0
    bilateral_compat: float = 50.0
    iterations: int = 5

    def __post_init__(self):
        self.validate()

    def validate(self) -> 'DenseCRFParams':
        """Check every field.

        Returns:
            DenseCRFParams: ``self``, so calls can be chained.

        Raises:
            ValueError: naming the first field that is not valid.
        """
        for name in ('gaussian_sxy', 'bilateral_sxy', 'bilateral_srgb'):
            check_real(f'DenseCRFParams.{name}', getattr(self, name),
                       allow_zero=False)
        for name in ('gaussian_compat', 'bilateral_compat'):
            check_real(f'DenseCRFParams.{name}', getattr(self, name),
                       allow_zero=True)
        iters = self.iterations
        is_int = isinstance(iters, (int, np.integer)) and not isinstance(
            iters, bool)
        if not is_int or iters < 0:
            raise ValueError('DenseCRFParams.iterations must be an integer '
                             f'>= 0, got {iters!r}')
        return self
