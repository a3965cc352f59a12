"""The two pairwise kernels of the CRF on permutohedral lattices: pixel
features, the symmetric normalisation, and the cache of position-only
kernels (they depend only on the image size)."""
import threading
from collections import OrderedDict
from typing import Callable, List, Optional, Tuple

import torch

from .lattice import PermutohedralLattice
from .params import DenseCRFParams

__all__ = ['pixel_features', 'NormalizedKernel', 'spatial_kernel',
           'build_kernels', 'spatial_cache_bytes', 'spatial_cache_key',
           'clear_spatial_cache',
           'SPATIAL_CACHE_BYTES']

#: Most bytes the cache of position-only kernels keeps (least recently
#: used first out); a kernel larger than this is built but not kept.
SPATIAL_CACHE_BYTES = 256 << 20

#: (H, W, sxy, device) -> kernel, least recently used first.
_SPATIAL_CACHE: 'OrderedDict[tuple, NormalizedKernel]' = OrderedDict()
#: Guards :data:`_SPATIAL_CACHE` when several threads run the CRF.
_SPATIAL_CACHE_LOCK = threading.RLock()


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


    def nbytes(self) -> int:
        """Bytes the kernel holds: its lattice, the lattice's blur buffers
        and ``Kn 1`` once computed."""
        lattice = self.lattice
        tensors = [lattice.neighbours, lattice.in_scale]
        for matrix in (lattice.splat, lattice.slice):
            tensors += [matrix.crow_indices(), matrix.col_indices(),
                        matrix.values()]
        if self._of_ones is not None:
            tensors.append(self._of_ones)
        return lattice.buffer_bytes() + sum(
            t.numel() * t.element_size() for t in tensors)


def spatial_cache_key(height: int, width: int, sxy: float,
                      device) -> tuple:
    """Cache key of a position-only kernel: everything its lattice depends
    on (the features are always float32)."""
    return (int(height), int(width), float(sxy), str(torch.device(device)))


def spatial_cache_bytes(exclude: Optional[tuple] = None) -> int:
    """Bytes held by the cached position-only kernels (all but the one of
    key ``exclude``)."""
    return sum(kernel.nbytes() for key, kernel in _SPATIAL_CACHE.items()
               if key != exclude)


def clear_spatial_cache(keep: Optional[tuple] = None) -> None:
    """Drop every cached position-only kernel but the one of key ``keep``.
    """
    with _SPATIAL_CACHE_LOCK:
        for key in list(_SPATIAL_CACHE):
            if key != keep:
                del _SPATIAL_CACHE[key]


def spatial_kernel(height: int, width: int, sxy: float,
                   device) -> NormalizedKernel:
    """The position-only kernel of an H x W image, built once and cached.

    The kernel depends only on ``(H, W, sxy, device)``, so a run over many
    same-size tiles builds it once.  Least recently used kernels are
    dropped while the cache holds more than :data:`SPATIAL_CACHE_BYTES`.
    A cached kernel is never changed by its users: its lattice is
    normalised once when it is made and ``Kn 1`` is computed from ones.
    """
    key = spatial_cache_key(height, width, sxy, device)
    with _SPATIAL_CACHE_LOCK:
        kernel = _SPATIAL_CACHE.get(key)
        if kernel is not None:
            _SPATIAL_CACHE.move_to_end(key)
            return kernel
        lattice = PermutohedralLattice(
            pixel_features(height, width, sxy, device=device))
        kernel = NormalizedKernel(lattice, shared=True)
        _SPATIAL_CACHE[key] = kernel
        while _SPATIAL_CACHE and spatial_cache_bytes() > SPATIAL_CACHE_BYTES:
            _SPATIAL_CACHE.popitem(last=False)
        return kernel


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


