"""Dense CRF refinement of class probability maps (docs/method.md, Inference).

Two backends solve the same fully connected CRF (Kraehenbuehl & Koltun, 2011)
with a Potts label compatibility:

* :func:`dense_crf_pydensecrf` calls ``pydensecrf`` (the reference code, an
  optional compiled extra) on one image.
* :func:`dense_crf_torch` is a batched mean-field solver in plain PyTorch that
  runs on CPU or GPU with no compiled extension.

Energy shared by both backends, for pixel ``i`` and label ``l``::

    unary     U_i(l) = -log(max(p_i(l), 1e-5))
    messages  M_i(l) = sum_k w_k * (Kn_k Q(l))_i
    update    Q_i(l) = softmax_l(-U_i(l) + M_i(l))

``k`` runs over the two kernels of the paper: an appearance-free Gaussian on
the pixel position (``gaussian_sxy``, weight ``gaussian_compat``) and a
bilateral kernel on position and RGB colour (``bilateral_sxy``,
``bilateral_srgb``, weight ``bilateral_compat``).  Adding ``+ w_k (Kn_k Q)(l)``
to the logits is the same as charging ``w_k`` times the kernel weight of
every neighbour that takes another label (the Potts model), up to a
per-pixel constant that the softmax removes.

How pydensecrf weighs its kernels (read from its ``pairwise.cpp`` and
``permutohedral.cpp``, and checked by probing it, see the tests):

* Every pairwise term uses ``NORMALIZE_SYMMETRIC``: with the raw filter ``K``
  (a permutohedral-lattice approximation of the Gaussian, the pixel itself
  included) and ``d = K 1``, the term applies ``Kn = D^-1/2 K D^-1/2``
  with ``D = diag(d)``.  In the interior of a flat region ``Kn`` is a
  weighted *average* (its rows sum to about 1), so ``compat`` is the
  largest logit change a term can make.
  Near the image border fewer neighbours exist and the rows sum to less
  (well below 1 in a corner), so the terms are weaker there.
* The lattice kernel's spread matches the nominal standard deviation: its
  impulse response on a plain image has an RMS radius within a few percent
  of ``sxy``.  So the Gaussian weights need no rescaling to match.

:func:`dense_crf_torch` therefore computes the same symmetric normalisation
with exact Gaussian weights, the pixel itself included.  The spatial term is
exact over the whole image (the Gaussian is separable, so it is two small
matrix products).  The bilateral term is evaluated on a local window (as in
ConvCRF, Teichmann & Cipolla 2018) of radius ``truncate * bilateral_sxy``
whose neighbours are sampled every ``downsample`` pixels, so the receiving
pixel keeps its own full-resolution colour and labels stay sharp at edges.

Choosing a backend: the permutohedral lattice's cost grows with the number
of pixels but not with the kernel width, while the local window costs
``pixels * window size``; on CPU pydensecrf is therefore much faster per
image.  The torch backend needs no compiled code, refines whole batches on
the GPU next to the model, and its approximation is tunable;
``benchmarks/crf_agreement.py`` measures how closely and how fast each
setting follows the reference.
"""
import math
import warnings
from dataclasses import dataclass
from numbers import Real
from typing import List, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    'DenseCRFParams', 'dense_crf_pydensecrf', 'dense_crf_torch', 'crf_refine',
    'dense_crf_torch_bytes', 'unary_from_probs', 'UNARY_CLIP',
    'WEIGHT_BUDGET_BYTES', 'DEFAULT_TRUNCATE', 'DEFAULT_DOWNSAMPLE',
    'PYDENSECRF_INSTALL_HINT'
]

#: Smallest probability in the unary (as pydensecrf.utils.unary_from_softmax).
UNARY_CLIP = 1e-5

#: Memory for the stored bilateral weights that picks the default chunk size
#: of :func:`dense_crf_torch`.
WEIGHT_BUDGET_BYTES = 1 << 30

#: Defaults of the torch backend's approximation (``truncate``,
#: ``downsample``), shared by :func:`dense_crf_torch`, its memory estimate
#: and the ``test_cfg.crf`` glue.
DEFAULT_TRUNCATE = 3.0
DEFAULT_DOWNSAMPLE = 2

PYDENSECRF_INSTALL_HINT = (
    'The pydensecrf backend needs the optional package pydensecrf2 (import '
    'name `pydensecrf`). Install it with `make crf`, or with '
    '`pip install cython && pip install --no-build-isolation '
    'pydensecrf2==1.1`; or use backend="torch", which needs no extension.')

ArrayOrTensor = Union[np.ndarray, torch.Tensor]

# Kernel weights below this are set to 0, and probabilities are raised to at
# least this before message passing.  Float32 denormals (below ~1e-38), which
# exp() of large energies and saturated softmaxes produce, slow CPU arithmetic
# down by orders of magnitude; values this small change no message visibly.
_TINY = 1e-15


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
            _check_real(name, getattr(self, name), allow_zero=False)
        for name in ('gaussian_compat', 'bilateral_compat'):
            _check_real(name, getattr(self, name), allow_zero=True)
        iters = self.iterations
        is_int = isinstance(iters, (int, np.integer)) and not isinstance(
            iters, bool)
        if not is_int or iters < 0:
            raise ValueError('DenseCRFParams.iterations must be an integer '
                             f'>= 0, got {iters!r}')
        return self


def _check_real(name: str, value, allow_zero: bool) -> None:
    """Raise ValueError unless ``value`` is a finite real > 0 (or >= 0)."""
    bound = '>= 0' if allow_zero else '> 0'
    ok = (
        isinstance(value, Real) and not isinstance(value, bool)
        and math.isfinite(value) and (value >= 0 if allow_zero else value > 0))
    if not ok:
        raise ValueError(f'DenseCRFParams.{name} must be a finite number '
                         f'{bound}, got {value!r}')


# ---------------------------------------------------------------------------
# Reference backend: pydensecrf
# ---------------------------------------------------------------------------
def _import_pydensecrf():
    """Import ``pydensecrf.densecrf`` or explain how to install it."""
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError as err:
        raise ImportError(PYDENSECRF_INSTALL_HINT) from err
    return dcrf


def _check_single(probs: np.ndarray, image: np.ndarray) -> None:
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
    _check_single(probs, image)
    params.validate()
    dcrf = _import_pydensecrf()
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


# ---------------------------------------------------------------------------
# PyTorch backend
# ---------------------------------------------------------------------------
def _check_batch(probs: torch.Tensor, images: torch.Tensor) -> None:
    """Validate (B, C, H, W) probabilities against (B, 3, H, W) images."""
    if not (isinstance(probs, torch.Tensor)
            and isinstance(images, torch.Tensor)):
        raise TypeError('probs and images must be torch tensors')
    if probs.dim() != 4:
        raise ValueError(
            f'probs must have shape (B, C, H, W), got {tuple(probs.shape)}')
    if not probs.is_floating_point():
        raise TypeError(f'probs must be floating point, got {probs.dtype}')
    if probs.shape[1] < 2:
        raise ValueError(
            f'probs needs at least 2 classes, got C={probs.shape[1]}')
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(
            f'images must have shape (B, 3, H, W), got {tuple(images.shape)}')
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise TypeError(
            f'images must be uint8 or floating point, got {images.dtype}')
    if images.shape[0] != probs.shape[0]:
        raise ValueError(f'batch sizes differ: probs {probs.shape[0]}, '
                         f'images {images.shape[0]}')
    if images.shape[2:] != probs.shape[2:]:
        raise ValueError(
            f'image size {tuple(images.shape[2:])} differs from probs '
            f'size {tuple(probs.shape[2:])}')
    if not bool(torch.isfinite(probs).all()):
        raise ValueError('probs contains NaN or infinite values')


def _check_knobs(truncate: float, downsample: int,
                 chunk_size: Optional[int]) -> None:
    """Validate the approximation settings of :func:`dense_crf_torch`."""
    if not (isinstance(truncate, Real) and math.isfinite(truncate)
            and truncate > 0):
        raise ValueError(
            f'truncate must be a finite number > 0, got {truncate!r}')
    _check_positive_int('downsample', downsample)
    if chunk_size is not None:
        _check_positive_int('chunk_size', chunk_size)


def _check_positive_int(name: str, value) -> None:
    """Raise ValueError unless ``value`` is an int >= 1 (bool excluded)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f'{name} must be an integer >= 1, got {value!r}')


def _warn_if_unit_range(images: torch.Tensor) -> None:
    """Warn when float images look like 0..1 data instead of 0..255."""
    if not images.is_floating_point() or images.numel() == 0:
        return
    if float(images.max()) <= 1.0:
        warnings.warn(
            'dense_crf_torch: float images are all <= 1; the colour '
            'scale bilateral_srgb expects 0..255 RGB values',
            stacklevel=3)


def unary_from_probs(probs: torch.Tensor,
                     clip: float = UNARY_CLIP) -> torch.Tensor:
    """Unary ``-log(p)`` as in ``pydensecrf.utils.unary_from_softmax``.

    Args:
        probs: (B, C, H, W) probabilities.
        clip: Probabilities are clamped to ``[clip, 1]`` before the log.

    Returns:
        torch.Tensor: (B, C, H, W) float32 unary energies.
    """
    return -torch.log(probs.float().clamp(min=clip, max=1.0))


def _gaussian_matrix(size: int, sigma: float,
                     device: torch.device) -> torch.Tensor:
    """(size, size) matrix of ``exp(-(i - j)^2 / (2 sigma^2))``, tiny -> 0."""
    idx = torch.arange(size, device=device, dtype=torch.float32)
    energy = (idx[:, None] - idx[None, :]).square() / (2.0 * sigma * sigma)
    return _exp_neg(energy)


def _exp_neg(energy: torch.Tensor) -> torch.Tensor:
    """``exp(-energy)`` in place, exactly 0 where it would be below _TINY."""
    energy.masked_fill_(energy > -math.log(_TINY), math.inf)
    return energy.neg_().exp_()


class _SpatialKernel:
    """Symmetrically normalised Gaussian position kernel, exact.

    The 2-D Gaussian is separable, so ``K q = G_h q G_w^T`` with two small
    dense matrices: every pair of pixels inside the image, no truncation,
    and neighbours outside the image simply do not exist (as in pydensecrf).
    Cost per channel: ``H * W * (H + W)`` multiply-adds.

    Args:
        height: Image height H.
        width: Image width W.
        sxy: Standard deviation in pixels.
        device: Device of the tensors.
    """

    def __init__(self, height: int, width: int, sxy: float,
                 device: torch.device):
        self.rows = _gaussian_matrix(height, sxy, device)  # (H, H)
        self.cols = _gaussian_matrix(width, sxy, device)  # (W, W)
        ones = torch.ones(1, 1, height, width, device=device)
        self.inv_sqrt_norm = self._blur(ones).rsqrt()  # (1, 1, H, W)

    def _blur(self, q: torch.Tensor) -> torch.Tensor:
        """Unnormalised Gaussian sum over the image of (B, C, H, W) ``q``."""
        return self.rows @ q @ self.cols

    def __call__(self, q: torch.Tensor) -> torch.Tensor:
        """Apply ``D^-1/2 K D^-1/2`` to (B, C, H, W) ``q``."""
        return self.inv_sqrt_norm * self._blur(q * self.inv_sqrt_norm)


def _disc_rows(radius: float, stride: int, height: int,
               width: int) -> List[Tuple[int, int]]:
    """Rows of the sampled offsets that lie in a disc and can reach the image.

    Args:
        radius: Disc radius in pixels.
        stride: Grid step of the offsets in pixels.
        height: Image height; rows with ``|dy| >= height`` are dropped.
        width: Image width; columns with ``|dx| >= width`` are dropped.

    Returns:
        list[tuple[int, int]]: ``(dy, m)`` pairs, ``dy`` ascending: row ``dy``
        holds the offsets ``(dy, stride * j)`` for ``j = -m .. m``, all with
        ``dy^2 + dx^2 <= radius^2``.  Row ``dy = 0`` (with ``(0, 0)``) is
        always present.
    """
    n = int(radius // stride)
    max_m = (width - 1) // stride
    rows = []
    for i in range(-n, n + 1):
        dy = i * stride
        if abs(dy) < height:
            half_width = math.sqrt(max(radius * radius - dy * dy, 0.0))
            rows.append((dy, min(int(half_width // stride), max_m)))
    return rows


def _row_neighbours(padded: torch.Tensor, pad: int, dy: int, m: int,
                    stride: int, height: int, width: int) -> torch.Tensor:
    """View of the sampled neighbours in one row of offsets (no copy).

    Args:
        padded: (B, K, H + 2 pad, W + 2 pad) tensor padded on every side.
        pad: Padding, at least ``|dy|`` and ``m * stride``.
        dy: Row offset.
        m: Column offsets are ``stride * (-m .. m)``.
        stride: Column step of the offsets.
        height: H.
        width: W.

    Returns:
        torch.Tensor: (B, K, H, W, 2m + 1) view with
        ``[..., y, x, j] = padded value at (y + dy, x + stride * (j - m))``.
    """
    reach = m * stride
    band = padded[:, :, pad + dy:pad + dy + height,
                  pad - reach:pad + width + reach]
    return band.unfold(-1, 2 * reach + 1, 1)[..., ::stride]


def _shifted(padded: torch.Tensor, pad: int, dy: int, dx: int, height: int,
             width: int) -> torch.Tensor:
    """View ``[..., y, x] = padded value at (y + dy, x + dx)`` (no copy).

    Args:
        padded: (B, K, H + 2 pad, W + 2 pad) tensor padded on every side.
        pad: Padding, at least ``max(|dy|, |dx|)``.
        dy: Row offset.
        dx: Column offset.
        height: H.
        width: W.

    Returns:
        torch.Tensor: (B, K, H, W) view.
    """
    return padded[:, :, pad + dy:pad + dy + height, pad + dx:pad + dx + width]


class _BilateralKernel:
    """Symmetrically normalised bilateral kernel on a sampled local window.

    Each pixel's neighbours are the pixels at the offsets of
    :func:`_disc_rows` (radius ``truncate * sxy``, step ``stride``) that fall
    inside the image, weighted by
    ``exp(-|offset|^2 / (2 sxy^2) - |I_x - I_y|^2 / (2 srgb^2))``.  The weights
    depend only on the image, so they are computed once, stored as a
    (B, O, H, W) tensor for the O offsets (row by row), and reused by every
    iteration.

    Args:
        images: (B, 3, H, W) float32 RGB in 0..255.
        sxy: Spatial standard deviation in pixels.
        srgb: Colour standard deviation.
        truncate: Window radius in units of ``sxy``.
        stride: Sampling step of the neighbours in pixels.
    """

    def __init__(self, images: torch.Tensor, sxy: float, srgb: float,
                 truncate: float, stride: int):
        self.shape = tuple(images.shape[2:])
        self.stride = stride
        self.rows = _disc_rows(truncate * sxy, stride, *self.shape)
        self.offsets = [(dy, stride * j) for dy, m in self.rows
                        for j in range(-m, m + 1)]
        self.pad = max(max(abs(dy), m * stride) for dy, m in self.rows)
        self.weights = self._weights(images, sxy, srgb)  # (B, O, H, W)
        norm = self.weights.sum(1, keepdim=True)  # (B, 1, H, W)
        self.inv_sqrt_norm = norm.rsqrt()

    def _row_slices(self):
        """Yield ``(dy, m, slice of the offset axis)`` for every row."""
        start = 0
        for dy, m in self.rows:
            yield dy, m, slice(start, start + 2 * m + 1)
            start += 2 * m + 1

    def _weights(self, images: torch.Tensor, sxy: float,
                 srgb: float) -> torch.Tensor:
        """(B, O, H, W) kernel weights; 0 for neighbours outside the image."""
        b, _, h, w = images.shape
        # An infinite colour outside the image gives those neighbours weight 0.
        padded = F.pad(images, [self.pad] * 4, value=float('inf'))
        energy = images.new_empty(b, len(self.offsets), h, w)
        for dy, m, cols in self._row_slices():
            neighbours = _row_neighbours(padded, self.pad, dy, m, self.stride,
                                         h, w)
            diff = neighbours - images.unsqueeze(-1)  # (B, 3, H, W, 2m+1)
            energy[:, cols] = diff.square().sum(1).permute(0, 3, 1, 2)
        spatial = torch.tensor([dy * dy + dx * dx for dy, dx in self.offsets],
                               device=images.device,
                               dtype=torch.float32)
        energy.mul_(0.5 / (srgb * srgb))
        energy.add_((spatial * (0.5 / (sxy * sxy))).view(1, -1, 1, 1))
        return _exp_neg(energy)

    def _filter_by_offset(self, padded: torch.Tensor) -> torch.Tensor:
        """Weighted neighbour sum, one op per offset (fast on CPU)."""
        h, w = self.shape
        out = padded.new_zeros(padded.shape[0], padded.shape[1], h, w)
        for k, (dy, dx) in enumerate(self.offsets):
            out.addcmul_(self.weights[:, k:k + 1],
                         _shifted(padded, self.pad, dy, dx, h, w))
        return out

    def _filter_by_row(self, padded: torch.Tensor) -> torch.Tensor:
        """Weighted neighbour sum, one op per offset row (fewer launches)."""
        h, w = self.shape
        out = padded.new_zeros(padded.shape[0], padded.shape[1], h, w)
        for dy, m, cols in self._row_slices():
            neighbours = _row_neighbours(padded, self.pad, dy, m, self.stride,
                                         h, w)
            # (B, 2m+1, H, W) -> (B, 1, H, W, 2m+1)
            weight = self.weights[:, cols].permute(0, 2, 3, 1).unsqueeze(1)
            out += (neighbours * weight).sum(-1)
        return out

    def __call__(self,
                 q: torch.Tensor,
                 by_row: Optional[bool] = None) -> torch.Tensor:
        """Apply ``D^-1/2 K D^-1/2`` to (B, C, H, W) ``q``.

        Args:
            q: (B, C, H, W) float32 values.
            by_row: Loop over rows of offsets instead of single offsets; by
                default on CUDA only.  Both give the same result.
        """
        padded = F.pad(q * self.inv_sqrt_norm, [self.pad] * 4)
        by_row = q.is_cuda if by_row is None else by_row
        if by_row:
            out = self._filter_by_row(padded)
        else:
            out = self._filter_by_offset(padded)
        return out * self.inv_sqrt_norm


def _pairwise_terms(images: torch.Tensor, params: DenseCRFParams,
                    truncate: float,
                    downsample: int) -> List[Tuple[float, object]]:
    """Build the enabled pairwise kernels with their Potts weights.

    Args:
        images: (B, 3, H, W) float32 RGB in 0..255.
        params: CRF parameters; a term with compat 0 is left out.
        truncate: Bilateral window radius in standard deviations.
        downsample: Neighbour sampling step of the bilateral window.

    Returns:
        list[tuple[float, callable]]: ``(compat, kernel)`` pairs; each kernel
        maps (B, C, H, W) to (B, C, H, W).
    """
    _, _, h, w = images.shape
    terms = []
    if params.gaussian_compat > 0:
        terms.append((float(params.gaussian_compat),
                      _SpatialKernel(h, w, params.gaussian_sxy,
                                     images.device)))
    if params.bilateral_compat > 0:
        terms.append(
            (float(params.bilateral_compat),
             _BilateralKernel(images, params.bilateral_sxy,
                              params.bilateral_srgb, truncate, downsample)))
    return terms


def _mean_field(unary: torch.Tensor, terms: List[Tuple[float, object]],
                iterations: int) -> torch.Tensor:
    """Mean-field updates ``Q <- softmax(-U + sum_k compat_k * Kn_k Q)``.

    Args:
        unary: (B, C, H, W) float32 unary energies.
        terms: ``(compat, kernel)`` pairs from :func:`_pairwise_terms`.
        iterations: Number of updates; 0 returns ``softmax(-U)``.

    Returns:
        torch.Tensor: (B, C, H, W) float32 probabilities.
    """
    q = torch.softmax(-unary, dim=1)
    for _ in range(iterations):
        sender = q.clamp_min(_TINY)
        logits = -unary
        for compat, kernel in terms:
            logits = logits + compat * kernel(sender)
        q = torch.softmax(logits, dim=1)
    return q


def _images_per_chunk(height: int,
                      width: int,
                      params: DenseCRFParams,
                      truncate: float,
                      downsample: int,
                      budget: Optional[int] = None) -> int:
    """Most images whose bilateral weights fit in ``budget`` bytes, >= 1."""
    budget = WEIGHT_BUDGET_BYTES if budget is None else budget
    rows = _disc_rows(truncate * params.bilateral_sxy, downsample, height,
                      width)
    per_image = 4 * height * width * sum(2 * m + 1 for _, m in rows)
    return max(1, budget // per_image)


def dense_crf_torch_bytes(height: int,
                          width: int,
                          num_classes: int,
                          params: DenseCRFParams = DenseCRFParams(),
                          *,
                          truncate: float = DEFAULT_TRUNCATE,
                          downsample: int = DEFAULT_DOWNSAMPLE,
                          by_row: bool = False) -> int:
    """Approximate peak memory of :func:`dense_crf_torch` on one image.

    Counts the float32 tensors the solver allocates, at their peak:

    * probabilities, unary and ``Q``: ``3 C`` values per pixel;
    * Gaussian term: the ``(H, H)`` and ``(W, W)`` matrices, plus two
      temporaries of the larger one while they are built;
    * bilateral term: the stored weights, one value per pixel and window
      offset (``O``, about ``pi * (truncate * bilateral_sxy /
      downsample)^2``: 707 at the defaults, 2.8 KB per pixel), the padded
      image, and while the weights are built ``7`` values per pixel and
      offset of the widest window row (``R``), then a boolean per weight;
    * mean-field temporaries: about ``12 C`` values per pixel, plus
      ``C R`` per pixel when the bilateral filter runs by row (on CUDA).

    Args:
        height: Image height H.
        width: Image width W.
        num_classes: Number of channels C of the probabilities.
        params: CRF parameters (which terms are on, window radius).
        truncate: As in :func:`dense_crf_torch`.
        downsample: As in :func:`dense_crf_torch`.
        by_row: Whether the bilateral filter runs by row (the default on
            CUDA devices).

    Returns:
        int: bytes.
    """
    pixels = height * width
    values = 3 * num_classes * pixels
    if params.iterations > 0:
        building = 0
        working = 12 * num_classes * pixels
        if params.gaussian_compat > 0:
            values += height * height + width * width + pixels
            building = 2 * max(height, width)**2
        if params.bilateral_compat > 0:
            rows = _disc_rows(truncate * params.bilateral_sxy, downsample,
                              height, width)
            offsets = sum(2 * m + 1 for _, m in rows)
            widest = max(2 * m + 1 for _, m in rows)
            pad = max(max(abs(dy), m * downsample) for dy, m in rows)
            values += (offsets + 2) * pixels
            # row temporaries, then the boolean mask of _exp_neg
            building = max(building, 7 * widest * pixels +
                           3 * (height + 2 * pad) * (width + 2 * pad),
                           offsets * pixels // 4)
            working += num_classes * (height + 2 * pad) * (width + 2 * pad)
            if by_row:
                working += num_classes * widest * pixels
        values += max(building, working)
    return 4 * values


@torch.no_grad()
def dense_crf_torch(probs: torch.Tensor,
                    images: torch.Tensor,
                    params: DenseCRFParams = DenseCRFParams(),
                    *,
                    truncate: float = DEFAULT_TRUNCATE,
                    downsample: int = DEFAULT_DOWNSAMPLE,
                    chunk_size: Optional[int] = None) -> torch.Tensor:
    """Batched dense CRF by mean-field inference in plain PyTorch.

    Same energy and symmetric kernel normalisation as the pydensecrf backend
    (see the module docstring), computed in float32 without gradients.

    * Gaussian position kernel: exact, over all pixel pairs (two dense
      (H, H) and (W, W) matrix products per channel).
    * Bilateral kernel: exact weights inside a disc of radius
      ``truncate * bilateral_sxy`` around each pixel, whose neighbours are
      sampled every ``downsample`` pixels.  Each pixel compares its own
      full-resolution colour with its neighbours', so labels stay at colour
      edges.  The weights are computed once per image and reused by every
      iteration.

    Args:
        probs: (B, C, H, W) class probabilities, any float dtype, C >= 2.
        images: (B, 3, H, W) RGB images, uint8 or float in 0..255; moved to
            the device of ``probs``.
        params: CRF parameters (paper defaults).
        truncate: Radius of the bilateral window in units of
            ``bilateral_sxy``.  3 (30 px with the defaults) leaves out about
            1 % of the 2-D Gaussian's mass; larger values barely change the
            result.
        downsample: Spacing, in pixels, of the sampled bilateral neighbours.
            1 uses every pixel of the window (closest to pydensecrf; 4x
            the offsets, memory and roughly the time of 2); 2 is the default
            trade-off; 3 or more is faster and coarser.
            ``benchmarks/crf_agreement.py`` measures agreement and speed.
        chunk_size: Number of images refined together.  The stored
            bilateral weights take about ``4 * H * W * pi * (truncate *
            bilateral_sxy / downsample)^2`` bytes per image (142 MB at
            224x224 with the defaults).  None picks the most images whose
            weights fit in :data:`WEIGHT_BUDGET_BYTES` (1 GiB: 7 images of
            224x224), at least 1.  Larger chunks mainly help on GPUs.

    Returns:
        torch.Tensor: (B, C, H, W) float32 refined probabilities on the
        device of ``probs``.

    Raises:
        ValueError, TypeError: bad shapes, dtypes, parameters or settings.
    """
    _check_batch(probs, images)
    params.validate()
    _check_knobs(truncate, downsample, chunk_size)
    images = images.to(device=probs.device)
    _warn_if_unit_range(images)
    if chunk_size is None:
        chunk_size = _images_per_chunk(probs.shape[2], probs.shape[3], params,
                                       truncate, downsample)
    outputs = []
    for start in range(0, probs.shape[0], chunk_size):
        stop = start + chunk_size
        unary = unary_from_probs(probs[start:stop])
        terms = []
        if params.iterations > 0:
            terms = _pairwise_terms(images[start:stop].float(), params,
                                    truncate, downsample)
        outputs.append(_mean_field(unary, terms, params.iterations))
    return torch.cat(outputs, dim=0)


# ---------------------------------------------------------------------------
# Convenience dispatcher
# ---------------------------------------------------------------------------
def _as_tensor(x: ArrayOrTensor) -> torch.Tensor:
    """Wrap a numpy array as a tensor; pass tensors through."""
    if isinstance(x, torch.Tensor):
        return x
    return torch.from_numpy(np.ascontiguousarray(x))


def crf_refine(probs: ArrayOrTensor,
               image: ArrayOrTensor,
               params: Optional[DenseCRFParams] = None,
               backend: str = 'torch',
               **kwargs) -> torch.Tensor:
    """Refine the probability map of one image with either backend.

    Args:
        probs: (C, H, W) class probabilities, tensor or array.
        image: (H, W, 3) uint8 RGB image, tensor or array.
        params: CRF parameters; None means the paper defaults.
        backend: ``'torch'`` (:func:`dense_crf_torch`) or ``'pydensecrf'``
            (:func:`dense_crf_pydensecrf`).
        **kwargs: Approximation settings passed to :func:`dense_crf_torch`
            (``truncate``, ``downsample``, ``chunk_size``); not accepted by
            the pydensecrf backend.

    Returns:
        torch.Tensor: (C, H, W) float32 refined probabilities on the device of
        ``probs`` (CPU for a numpy input).
    """
    params = DenseCRFParams() if params is None else params
    probs_t, image_t = _as_tensor(probs), _as_tensor(image)
    if probs_t.dim() != 3:
        raise ValueError(
            f'probs must have shape (C, H, W), got {tuple(probs_t.shape)}')
    if image_t.dtype != torch.uint8:
        raise TypeError(f'image must be uint8 RGB, got dtype {image_t.dtype}')
    if image_t.dim() != 3 or image_t.shape[2] != 3:
        raise ValueError(
            f'image must have shape (H, W, 3), got {tuple(image_t.shape)}')
    if backend == 'torch':
        images = image_t.permute(2, 0, 1).unsqueeze(0)
        return dense_crf_torch(probs_t.unsqueeze(0), images, params,
                               **kwargs)[0]
    if backend == 'pydensecrf':
        if kwargs:
            raise TypeError('the pydensecrf backend takes no settings, '
                            f'got {sorted(kwargs)}')
        refined = dense_crf_pydensecrf(probs_t.detach().cpu().float().numpy(),
                                       image_t.detach().cpu().numpy(), params)
        return torch.from_numpy(refined).to(probs_t.device)
    raise ValueError(
        f"backend must be 'torch' or 'pydensecrf', got {backend!r}")
