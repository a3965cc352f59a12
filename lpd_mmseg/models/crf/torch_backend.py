"""The PyTorch backend: batched mean-field inference on permutohedral
lattices (:mod:`.lattice`), CPU or CUDA, no compiled extension."""
import warnings
from typing import Optional, Tuple

import torch

from .kernels import (
    NormalizedKernel,
    build_kernels,
    clear_spatial_cache,
    pixel_features,
    spatial_cache_bytes,
    spatial_cache_key,
)
from .lattice import (
    lattice_build_bytes,
    lattice_filter_bytes,
    lattice_held_bytes,
)
from .params import TINY, UNARY_CLIP, DenseCRFParams, check_positive_int

__all__ = ['dense_crf_torch', 'dense_crf_torch_bytes', 'unary_from_probs',
           'pixel_features', 'NormalizedKernel', 'build_kernels',
           'CRFMemoryError', 'CHUNK_BUDGET_BYTES', 'CPU_CHUNK_PIXELS']

#: Memory budget that picks the default number of images refined together.
CHUNK_BUDGET_BYTES = 1 << 30

#: On the CPU, the most pixels refined together by default: the lattice's
#: random reads then stay in the caches (one 224 px image at a time was
#: about 5 % faster per image than four together on the benchmark machine).
CPU_CHUNK_PIXELS = 1 << 16



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
                  params: DenseCRFParams, device='cpu') -> int:
    """Most images whose vertex-free memory fits :data:`CHUNK_BUDGET_BYTES`;
    on the CPU also at most :data:`CPU_CHUNK_PIXELS` pixels (at least one
    image)."""
    per_image = dense_crf_torch_bytes(height, width, num_classes, params,
                                      vertices=(0, 0))
    chunk = max(1, CHUNK_BUDGET_BYTES // per_image)
    if torch.device(device).type == 'cpu':
        chunk = min(chunk, max(1, CPU_CHUNK_PIXELS // (height * width)))
    return chunk


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
            :func:`default_chunk` (on CUDA all 224 px patches of a usual
            batch, on the CPU one 224 px patch at a time).
        max_bytes: Refuse (:class:`CRFMemoryError`) a chunk whose estimate
            (:func:`dense_crf_torch_bytes`) exceeds this, checked before
            anything large is allocated and again once each lattice's
            vertex count is known.  When the cached position-only kernels
            of other image sizes (at most
            :data:`~.kernels.SPATIAL_CACHE_BYTES`) would push the estimate
            over it, they are dropped first.

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
        chunk_size = default_chunk(h, w, c, params, probs.device)
    key = spatial_cache_key(h, w, params.gaussian_sxy, probs.device)
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
            if max_bytes is None:
                return
            if needed > max_bytes:
                raise CRFMemoryError(needed, max_bytes)
            # the cached kernels of other sizes hold memory too: they go
            # first when they would push the total over the limit
            if needed + spatial_cache_bytes(exclude=key) > max_bytes:
                clear_spatial_cache(keep=key)

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
