"""The PyTorch backend: batched mean-field inference on permutohedral
lattices (:mod:`.lattice`), CPU or CUDA, no compiled extension."""
import warnings
from typing import Callable, Dict, List, Optional, Tuple

import torch

from .lattice import (
    PermutohedralLattice,
    lattice_build_bytes,
    lattice_filter_bytes,
    lattice_held_bytes,
)
from .params import TINY, UNARY_CLIP, DenseCRFParams, check_positive_int

__all__ = ['dense_crf_torch', 'dense_crf_torch_bytes', 'unary_from_probs',
           'pixel_features', 'CRFMemoryError', 'CHUNK_BUDGET_BYTES']

#: Memory budget that picks the default number of images refined together.
CHUNK_BUDGET_BYTES = 1 << 30

#: Position-only kernels depend only on (H, W, sxy, device): kept for reuse.
_SPATIAL_CACHE: Dict[tuple, 'NormalizedKernel'] = {}
_SPATIAL_CACHE_SIZE = 4


class CRFMemoryError(ValueError):
    """The torch CRF would need more memory than allowed.

    Attributes:
        needed: Estimated bytes.
        limit: Allowed bytes.
    """

    def __init__(self, needed: int, limit: int):
        self.needed, self.limit = int(needed), int(limit)
        super().__init__(f'the torch CRF needs about {needed / 2**30:.2f} '
                         f'GiB, more than the {limit / 2**30:.2f} GiB allowed')


def check_batch(probs: torch.Tensor, images: torch.Tensor) -> None:
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


def warn_if_unit_range(images: torch.Tensor) -> None:
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


def pixel_features(height: int, width: int, sxy: float,
                   images: Optional[torch.Tensor] = None,
                   srgb: Optional[float] = None,
                   device=None) -> torch.Tensor:
    """Lattice features of every pixel, in pydensecrf's order.

    Args:
        height: H.
        width: W.
        sxy: Spatial standard deviation in pixels.
        images: (B, 3, H, W) float RGB in 0..255 for a bilateral kernel, or
            None for the position-only Gaussian.
        srgb: Colour standard deviation (with ``images``).
        device: Device of the position-only features.

    Returns:
        torch.Tensor: (B, H W, 5) ``(x, y) / sxy, (r, g, b) / srgb`` or
        (1, H W, 2) ``(x, y) / sxy`` float32.
    """
    if images is not None:
        device = images.device
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=torch.float32, device=device),
        torch.arange(width, dtype=torch.float32, device=device),
        indexing='ij')
    position = torch.stack([xs / sxy, ys / sxy], -1).reshape(1, -1, 2)
    if images is None:
        return position
    colour = (images.float() / srgb).flatten(2).transpose(1, 2)
    return torch.cat([position.expand(len(images), -1, -1), colour], -1)


class NormalizedKernel:
    """``Kn = D^-1/2 K D^-1/2`` with ``K`` a lattice filter and ``D = K 1``.

    Args:
        lattice: The lattice of the kernel; normalised in place
            (:meth:`~.lattice.PermutohedralLattice.normalise_`), so its
            ``filter`` applies ``Kn`` afterwards.
        shared: The lattice holds one image whose filter applies to every
            image of the batch (the position-only kernel); otherwise it
            holds the B images side by side.
    """

    def __init__(self, lattice: PermutohedralLattice, shared: bool):
        self.lattice, self.shared = lattice.normalise_(), shared
        self._of_ones = None

    def __call__(self, q: torch.Tensor,
                 sums_to_one: bool = False) -> torch.Tensor:
        """(B, C, N) -> (B, C, N) normalised filter of ``q``.

        With ``sums_to_one`` (``q`` sums to 1 over C at every point, as
        mean-field probabilities do) only C - 1 channels go through the
        lattice and the last is ``Kn 1`` minus the others (linearity): the
        filter's cost is proportional to the channels.
        """
        b, c, n = q.shape
        if not sums_to_one or c < 2:
            return self._filter(q)
        if self._of_ones is None and not self.shared:
            out = self._filter(q)  # and Kn 1 = sum_c Kn q_c for free
            self._of_ones = out.sum(1)
            return out
        out = q.new_empty(b, c, n)
        out[:, :-1] = self._filter(q[:, :-1])
        torch.sub(self.of_ones(), out[:, :-1].sum(1), out=out[:, -1])
        return out

    def of_ones(self) -> torch.Tensor:
        """(B or 1, N) ``Kn 1``, computed once (a shared kernel filters
        ones, so that the cached value never depends on earlier inputs)."""
        if self._of_ones is None:
            batch, n = self.lattice.shape[:2]
            ones = torch.ones(batch, 1, n, device=self.lattice.slice.device)
            self._of_ones = self._filter(ones)[:, 0]
        return self._of_ones

    def _filter(self, q: torch.Tensor) -> torch.Tensor:
        """(B, C, N) -> (B, C, N) view of ``Kn q``; one copy of ``q``."""
        b, c, n = q.shape
        if self.shared:  # (N, B C) through one lattice
            sent = q.permute(2, 0, 1).reshape(n, b * c)
            return self.lattice.filter(sent).view(n, b, c).permute(1, 2, 0)
        sent = q.transpose(1, 2).reshape(b * n, c)  # (B N, C)
        return self.lattice.filter(sent).view(b, n, c).transpose(1, 2)


def spatial_kernel(height: int, width: int, sxy: float,
                   device) -> NormalizedKernel:
    """The position-only kernel of an H x W image, built once and cached
    (the last few sizes are kept)."""
    key = (height, width, float(sxy), str(device))
    if key not in _SPATIAL_CACHE:
        lattice = PermutohedralLattice(
            pixel_features(height, width, sxy, device=device))
        if len(_SPATIAL_CACHE) >= _SPATIAL_CACHE_SIZE:
            _SPATIAL_CACHE.pop(next(iter(_SPATIAL_CACHE)))
        _SPATIAL_CACHE[key] = NormalizedKernel(lattice, shared=True)
    return _SPATIAL_CACHE[key]


def build_kernels(images: torch.Tensor, params: DenseCRFParams,
                  on_vertices: Optional[Callable[[int], None]] = None
                  ) -> List[Tuple[float, NormalizedKernel]]:
    """The enabled pairwise kernels of a batch with their Potts weights.

    Args:
        images: (B, 3, H, W) float32 RGB in 0..255.
        params: CRF parameters; a term with compat 0 is left out.
        on_vertices: Passed to :class:`PermutohedralLattice`.

    Returns:
        list[tuple[float, NormalizedKernel]]: ``(compat, kernel)`` pairs.
    """
    _, _, h, w = images.shape
    terms = []
    if params.gaussian_compat > 0:
        kernel = spatial_kernel(h, w, params.gaussian_sxy, images.device)
        if on_vertices is not None:
            on_vertices(kernel.lattice.num_vertices)
        terms.append((float(params.gaussian_compat), kernel))
    if params.bilateral_compat > 0:
        features = pixel_features(h, w, params.bilateral_sxy, images,
                                  params.bilateral_srgb)
        lattice = PermutohedralLattice(features, on_vertices)
        terms.append((float(params.bilateral_compat),
                      NormalizedKernel(lattice, shared=False)))
    return terms


def mean_field(unary: torch.Tensor, terms, iterations: int) -> torch.Tensor:
    """Mean-field updates ``Q <- softmax(-U + sum_k compat_k Kn_k Q)``.

    Args:
        unary: (B, C, N) float32 unary energies.
        terms: ``(compat, kernel)`` pairs from :func:`build_kernels`.
        iterations: Number of updates; 0 returns ``softmax(-U)``.

    Returns:
        torch.Tensor: (B, C, N) float32 probabilities.
    """
    q = torch.softmax(-unary, dim=1)
    logits = torch.empty_like(unary)
    for _ in range(iterations):
        q.clamp_min_(TINY)
        torch.neg(unary, out=logits)
        for compat, kernel in terms:
            logits.add_(kernel(q, sums_to_one=True), alpha=compat)
        q = torch.softmax(logits, dim=1)
    return q


def dense_crf_torch_bytes(height: int, width: int, num_classes: int,
                          params: DenseCRFParams = DenseCRFParams(),
                          batch: int = 1,
                          vertices: Optional[Tuple[int, int]] = None) -> int:
    """Estimated peak memory of :func:`dense_crf_torch` on a batch.

    Counts the float32 mean-field tensors (about ``11 C`` values per
    pixel), what each lattice holds (:func:`~.lattice.lattice_held_bytes`)
    and the largest temporary peak, building
    (:func:`~.lattice.lattice_build_bytes`) or filtering
    (:func:`~.lattice.lattice_filter_bytes`).  The vertex counts are
    known only once a lattice's keys are deduplicated; without them the
    estimate uses the bound ``points (d + 1)``, which real images stay far
    below (pass ``(0, 0)`` for the part that does not depend on them).

    Args:
        height: Image height H.
        width: Image width W.
        num_classes: Number of channels C of the probabilities.
        params: CRF parameters (which terms are on).
        batch: Number of images refined together.
        vertices: ``(spatial, bilateral)`` vertex counts, or None.

    Returns:
        int: bytes.
    """
    pixels = height * width * batch
    total = 4 * 3 * num_classes * pixels
    if params.iterations == 0:
        return total
    total += 4 * 8 * num_classes * pixels  # mean-field temporaries
    peaks = [0]
    for on, points, dim, i in (
            (params.gaussian_compat > 0, height * width, 2, 0),
            (params.bilateral_compat > 0, pixels, 5, 1)):
        if not on:
            continue
        m = points * (dim + 1) if vertices is None else vertices[i]
        total += lattice_held_bytes(points, dim, m)
        channels = num_classes * (batch if dim == 2 else 1)
        peaks += [lattice_build_bytes(points, dim),
                  lattice_filter_bytes(points, m, channels)]
    return total + max(peaks)


def default_chunk(height: int, width: int, num_classes: int,
                  params: DenseCRFParams) -> int:
    """Most images whose vertex-free memory fits :data:`CHUNK_BUDGET_BYTES`.
    """
    per_image = dense_crf_torch_bytes(height, width, num_classes, params,
                                      vertices=(0, 0))
    return max(1, CHUNK_BUDGET_BYTES // per_image)


@torch.no_grad()
def dense_crf_torch(probs: torch.Tensor,
                    images: torch.Tensor,
                    params: DenseCRFParams = DenseCRFParams(),
                    *,
                    chunk_size: Optional[int] = None,
                    max_bytes: Optional[int] = None) -> torch.Tensor:
    """Batched dense CRF by mean-field inference in plain PyTorch.

    Same energy and symmetric kernel normalisation as the pydensecrf
    backend (see the package docstring), both kernels filtered on
    permutohedral lattices built once per chunk of images and reused by
    every iteration; float32, no gradients.

    Args:
        probs: (B, C, H, W) class probabilities, any float dtype, C >= 2.
        images: (B, 3, H, W) RGB images, uint8 or float in 0..255; moved to
            the device of ``probs``.
        params: CRF parameters (paper defaults).
        chunk_size: Number of images refined together; None picks
            :func:`default_chunk` (all 224 px patches of a usual batch).
        max_bytes: Refuse (:class:`CRFMemoryError`) a chunk whose estimate
            (:func:`dense_crf_torch_bytes`) exceeds this, checked before
            anything large is allocated and again once each lattice's
            vertex count is known.

    Returns:
        torch.Tensor: (B, C, H, W) float32 refined probabilities on the
        device of ``probs``.

    Raises:
        ValueError, TypeError: bad shapes, dtypes, parameters or settings.
        CRFMemoryError: over ``max_bytes``.
    """
    check_batch(probs, images)
    params.validate()
    if chunk_size is not None:
        check_positive_int('chunk_size', chunk_size)
    images = images.to(device=probs.device)
    warn_if_unit_range(images)
    b, c, h, w = probs.shape
    if chunk_size is None:
        chunk_size = default_chunk(h, w, c, params)
    outputs = []
    for start in range(0, b, chunk_size):
        batch = min(chunk_size, b - start)
        counts = [0, 0]

        def check(count=None, counts=counts, batch=batch):
            if count is not None:  # spatial first, then bilateral
                counts[0 if counts[0] == 0 and params.gaussian_compat > 0
                       else 1] = count
            needed = dense_crf_torch_bytes(h, w, c, params, batch,
                                           tuple(counts))
            if max_bytes is not None and needed > max_bytes:
                raise CRFMemoryError(needed, max_bytes)

        check()
        unary = unary_from_probs(probs[start:start + batch]).flatten(2)
        terms = []
        if params.iterations > 0:
            terms = build_kernels(
                images[start:start + batch].float(), params,
                check if max_bytes is not None else None)
        q = mean_field(unary, terms, params.iterations)
        outputs.append(q.view(batch, c, h, w))
    return torch.cat(outputs, dim=0)
