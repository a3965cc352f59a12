"""Permutohedral-lattice Gaussian filter in plain PyTorch.

After Adams, Baek and Davis, "Fast High-Dimensional Filtering Using the
Permutohedral Lattice" (Eurographics 2010), with the same choices as the
lattice inside pydensecrf, so that both filters give the same numbers up to
float rounding:

1. **Embed.**  Each point's ``d`` features (already divided by their
   standard deviations) are scaled by ``sqrt(2/3) (d + 1)`` and lifted onto
   the plane ``sum = 0`` of ``R^(d+1)``; the enclosing simplex is found by
   rounding to the nearest multiple of ``d + 1`` and ranking the remainders,
   and the ``d + 1`` barycentric weights follow from the ranks.
2. **Deduplicate.**  Every point names ``d + 1`` lattice vertices by their
   integer keys; the keys are packed into one int64 (mixed radix with a
   margin, the image index as the top digit) and made unique by
   :func:`torch.unique`.  Vertices of different images never coincide, so a
   batch shares one lattice.
3. **Splat** with ``index_add_``, **blur** with the kernel
   ``[1/2, 1, 1/2]`` along each of the ``d + 1`` lattice directions through
   a precomputed neighbour table (missing neighbours read a zero row), and
   **slice** with a gather, times ``1 / (1 + 2^-d)``.

The lattice depends only on the features (the image), so it is built once
and reused by every mean-field iteration.  Cost and memory are linear in the
number of points and vertices, independent of the standard deviations.
"""
import math
import warnings
from typing import Tuple

import torch

__all__ = ['PermutohedralLattice', 'lattice_build_bytes',
           'lattice_held_bytes', 'lattice_filter_bytes']

def lattice_build_bytes(points: int, dim: int) -> int:
    """Peak temporary bytes while a lattice of ``points`` points is built.

    The per-point float32 and int64 arrays of :func:`elevate`,
    :func:`simplex` and :func:`vertex_codes`, then the sort of the
    ``points (d + 1)`` codes with its permutation, vertex ids and inverse:
    about 48 bytes per point and vertex slot at the peak.

    Args:
        points: Number of points N (pixels of the whole batch).
        dim: Feature dimension d.

    Returns:
        int: bytes.
    """
    return 48 * points * (dim + 1)


def lattice_held_bytes(points: int, dim: int, vertices: int) -> int:
    """Bytes a built lattice holds.

    Splat and slice CSR matrices (float32 weights, ``N (d + 1)`` entries
    each, and their indices) and the ``(d + 1, 2 M)`` neighbour table; the
    indices are int32 where they fit (:func:`_index_dtype`), else int64.

    Args:
        points: Number of points N.
        dim: Feature dimension d.
        vertices: Number of lattice vertices M (at most ``N (d + 1)``).

    Returns:
        int: bytes.
    """
    k = dim + 1
    i = _index_dtype(points * k + 1).itemsize
    return ((8 + 2 * i) * points * k + i * (points + vertices + 2)
            + 2 * i * k * vertices)


def lattice_filter_bytes(points: int, vertices: int, channels: int) -> int:
    """Peak temporary bytes of one :meth:`PermutohedralLattice.filter`.

    Two ``(M + 1, C)`` blur buffers, the gathered forward neighbours and
    (on CUDA) the splat result (``4 M C`` values), the input copy and the
    output (``2 N C``), float32.

    Args:
        points: Number of points N.
        vertices: Number of lattice vertices M.
        channels: Channels C of the filtered values.

    Returns:
        int: bytes.
    """
    return 4 * channels * (4 * (vertices + 1) + 2 * points)


def _scale_factors(dim: int, device: torch.device) -> torch.Tensor:
    """(d,) diagonal of the embedding: ``sqrt(2/3) (d+1) / sqrt((i+1)(i+2))``.

    Chosen (Adams et al. 2010, p. 6) so that the lattice blur has the
    standard deviation of the features' unit.
    """
    inv_std = math.sqrt(2.0 / 3.0) * (dim + 1)
    i = torch.arange(dim, dtype=torch.float64, device=device)
    return (inv_std / torch.sqrt((i + 1) * (i + 2))).float()


def elevate(features: torch.Tensor) -> torch.Tensor:
    """Lift ``(N, d)`` features onto the plane ``sum = 0`` of ``R^(d+1)``.

    ``e_0 = sum_k c_k`` and ``e_j = sum_{k >= j} c_k - j c_(j-1)`` with
    ``c = features * scale`` (:func:`_scale_factors`).

    Args:
        features: (N, d) float32.

    Returns:
        torch.Tensor: (N, d + 1) float32 elevated coordinates (a transposed
        view of a coordinate-major array).
    """
    n, dim = features.shape
    scaled = (features * _scale_factors(dim, features.device)).T.contiguous()
    out = features.new_empty(dim + 1, n)
    suffix = torch.zeros_like(scaled[0])
    for j in range(dim, 0, -1):  # same order of additions as pydensecrf
        torch.sub(suffix, scaled[j - 1], alpha=j, out=out[j])
        suffix += scaled[j - 1]
    out[0] = suffix
    return out.T


def simplex(elevated: torch.Tensor
            ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Enclosing simplex and barycentric weights of elevated points.

    Args:
        elevated: (N, d + 1) float32 from :func:`elevate`.

    Returns:
        tuple: ``rem0`` (N, d + 1) int64, the nearest remainder-0 vertex
        (its coordinates are multiples of ``d + 1``); ``rank`` (N, d + 1)
        int64, the position of each coordinate's offset from ``rem0`` in
        decreasing order (ties: the earlier coordinate ranks higher);
        ``weights`` (N, d + 1) float32 contiguous barycentric weights of
        the vertices of remainder 0 .. d (each row sums to 1).  ``rem0``
        and ``rank`` are transposed views of coordinate-major arrays.
    """
    e = elevated.T.contiguous()  # (k, N): every coordinate contiguous
    k, n = e.shape
    dim = k - 1
    down = 1.0 / k
    scaled = e * down
    up = torch.ceil(scaled).mul_(k)
    low = scaled.floor_().mul_(k)
    rem0 = torch.where(up - e < e - low, up, low)
    del up, low, scaled
    diff = e - rem0
    # rank_m = #{j > m: diff_m < diff_j} + #{i < m: diff_i >= diff_m}, the
    # counts of pydensecrf's pairwise loop, one row comparison per pair
    rank = torch.zeros(k, n, dtype=torch.int32, device=e.device)
    for m in range(k):
        for j in range(m + 1, k):
            later_larger = diff[m] < diff[j]
            rank[m] += later_larger
            rank[j] += later_larger.logical_not_()
    del diff
    rank += torch.div(rem0.sum(0), k, rounding_mode='floor').int()
    shift = (rank < 0).int().sub_((rank > dim).int()).mul_(k)
    rank += shift
    rem0 = rem0.long().add_(shift)
    del shift
    delta = (e - rem0).mul_(down).T.contiguous()  # (N, k)
    slot = (dim - rank).T.to(torch.long, memory_format=torch.contiguous_format)
    bary = e.new_zeros(n, k + 1)
    bary.scatter_add_(1, slot, delta)
    bary.scatter_add_(1, slot + 1, delta.neg_())
    bary[:, 0] += 1.0 + bary[:, k]
    return rem0.T, rank.long().T, bary[:, :k].contiguous()


def vertex_codes(rem0: torch.Tensor, rank: torch.Tensor,
                 image: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Packed int64 keys of the ``d + 1`` vertices of each point's simplex.

    Vertex ``r`` of a simplex has the integer key ``rem0 + r`` on the
    coordinates of rank ``<= d - r`` and ``rem0 + r - (d + 1)`` on the
    others; the last coordinate is implied by ``sum = 0`` and dropped.  The
    ``d`` key coordinates (shifted to start at 0, with a margin of
    ``2 (d + 1)`` on both sides) and the image index are packed as mixed
    radix digits, so a blur neighbour's code is the vertex code plus a
    constant that never carries into another digit.

    Args:
        rem0: (N, d + 1) int64 from :func:`simplex`.
        rank: (N, d + 1) int64 from :func:`simplex`.
        image: (N,) int64 image index of each point.

    Returns:
        tuple: codes (N, d + 1) int64 contiguous (column ``r`` is vertex
        ``r``) and the (d,) int64 digit weights of the key coordinates.

    Raises:
        ValueError: the keys need more than 62 bits (features spanning
            millions of standard deviations).
    """
    rem0, rank = rem0.T.contiguous(), rank.T.contiguous()  # (k, N)
    k, n = rem0.shape
    dim = k - 1
    low = rem0[:dim].amin(1) - 2 * k
    span = rem0[:dim].amax(1) - low + 2 * k + 1  # (d,)
    sizes = [int(s) for s in span.tolist()] + [int(image.max()) + 1]
    if sum(math.log2(s) for s in sizes) >= 62:
        raise ValueError(
            'the lattice keys do not fit into 62 bits: the features span '
            f'{sizes[:-1]} lattice cells (use larger standard deviations or '
            'smaller images)')
    steps = [1] * dim
    for i in range(dim - 2, -1, -1):
        steps[i] = steps[i + 1] * sizes[i + 1]
    base = image * (steps[0] * sizes[0])
    for i in range(dim):
        base += (rem0[i] - int(low[i])) * steps[i]
    # by_rank[t]: digit weight of the coordinates of rank t
    weights = torch.tensor(steps, device=rem0.device)
    by_rank = torch.zeros_like(rem0)
    by_rank.scatter_add_(0, rank[:dim], weights[:, None].expand(dim, n))
    codes = rem0.new_empty(n, k)
    codes[:, 0] = base
    above = torch.zeros_like(base)
    for r in range(1, k):  # the ranks above d - r take r - (d + 1)
        above += by_rank[dim - r + 1]
        torch.sub(base + r * sum(steps), above, alpha=k, out=codes[:, r])
    return codes, weights


def _index_dtype(size: int) -> torch.dtype:
    """int32 for indices below ``size`` where they fit (less memory
    traffic in the sparse products and gathers), else int64."""
    return torch.int32 if size < 2**31 else torch.int64


def _csr(crow: torch.Tensor, col: torch.Tensor, val: torch.Tensor,
         shape: Tuple[int, int]) -> torch.Tensor:
    """Sparse CSR matrix (no invariant checks: the indices are built here)."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)  # "beta" notice
        return torch.sparse_csr_tensor(crow, col, val, shape,
                                       check_invariants=False)


class PermutohedralLattice:
    """Gaussian filter ``out_i ~ sum_j exp(-|f_i - f_j|^2 / 2) in_j``
    (the point itself included) over a batch of point sets.

    Built once from the features; :meth:`filter` then costs three sparse
    products per blur direction plus one splat and one slice, all linear in
    the number of points and vertices.

    Args:
        features: (B, N, d) float32 features of B images of N points each,
            already divided by their standard deviations; points of
            different images never interact.
        on_vertices: Optional callable receiving the number of vertices M
            once it is known, before the filter's matrices are allocated
            (e.g. to refuse a lattice over a memory limit).

    Attributes:
        num_vertices: M, the number of distinct lattice vertices.
        splat: (M, B N) CSR matrix of barycentric weights.
        slice: (B N, M) CSR matrix, its transpose times ``1 / (1 + 2^-d)``.
        neighbours: (d + 1, 2 M) int32 (int64 past 2^31) blur neighbours
            of every vertex along each direction (M where there is none).
    """

    def __init__(self, features: torch.Tensor, on_vertices=None):
        if features.dim() != 3:
            raise ValueError('features must have shape (B, N, d), got '
                             f'{tuple(features.shape)}')
        batch, n, dim = features.shape
        k = dim + 1
        points = batch * n
        device = features.device
        self.shape = (batch, n, dim)
        rem0, rank, weights = simplex(
            elevate(features.reshape(points, dim).float()))
        image = torch.arange(batch, device=device).repeat_interleave(n)
        codes, steps = vertex_codes(rem0, rank, image)
        del rem0, rank, image
        codes, order = torch.sort(codes.view(-1))
        unique, vertex, counts = torch.unique_consecutive(
            codes, return_inverse=True, return_counts=True)
        del codes
        self.num_vertices = m = int(unique.numel())
        if on_vertices is not None:
            on_vertices(m)
        weights = weights.view(-1)
        index = _index_dtype(points * k + 1)
        # splat: rows = vertices (entries sorted by vertex), cols = points
        crow = torch.zeros(m + 1, dtype=index, device=device)
        crow[1:] = counts.cumsum(0)
        del counts
        point = order.to(index).div_(k, rounding_mode='floor')
        self.splat = _csr(crow, point, weights[order], (m, points))
        # slice: rows = points, cols = their d + 1 vertices
        inverse = torch.empty_like(vertex, dtype=index).scatter_(
            0, order, vertex.to(index))
        del order, vertex, point
        alpha = 1.0 / (1.0 + 2.0**-dim)
        self.slice = _csr(
            torch.arange(0, points * k + 1, k, dtype=index, device=device),
            inverse, weights * alpha, (points, m))
        del inverse
        self.neighbours = torch.stack(
            [self._neighbours(unique, steps, j) for j in range(k)])
        self._cache = {}

    @staticmethod
    def _neighbours(unique: torch.Tensor, steps: torch.Tensor,
                    j: int) -> torch.Tensor:
        """(2 M,) indices of the blur neighbours along direction ``j``.

        A step along direction ``j < d`` adds ``d + 1`` to key ``j`` and
        subtracts 1 from the others; along ``j = d`` every stored key drops
        by 1.  The first M entries are the backward, the last M the forward
        neighbours; M (the index of a zero row) where there is no vertex.
        """
        dim = steps.numel()
        m = unique.numel()
        delta = -int(steps.sum())
        if j < dim:
            delta += (dim + 1) * int(steps[j])
        wanted = unique + delta
        small = _index_dtype(m + 1) == torch.int32
        pos = torch.searchsorted(unique, wanted, out_int32=small)
        pos.clamp_max_(m - 1)
        found = unique[pos] == wanted
        back = torch.where(found, pos, m)
        # the forward neighbour relation is the inverse of the backward one;
        # the missing ones all write into the spare slot m, dropped after
        forward = torch.full((m + 1,), m, dtype=back.dtype,
                             device=back.device)
        forward[back] = torch.arange(m, dtype=back.dtype, device=back.device)
        return torch.cat([back, forward[:m]])

    def normalise_(self) -> 'PermutohedralLattice':
        """Make :meth:`filter` apply ``D^-1/2 K D^-1/2``, ``D = K 1``.

        The symmetric normalisation of the CRF kernels, folded into the
        splat weights (times each sender's ``D^-1/2``) and the slice
        weights (times each receiver's), so that it costs nothing per
        filtering.  In place; returns the lattice.
        """
        points = self.slice.shape[0]
        ones = self.slice.values().new_ones(points, 1)
        inv_sqrt = (self.filter(ones)[:, 0] + 1e-20).rsqrt()  # (points,)
        k = self.shape[2] + 1
        splat, slice_ = self.splat, self.slice
        self.splat = _csr(
            splat.crow_indices(), splat.col_indices(),
            splat.values() * inv_sqrt[splat.col_indices()], splat.shape)
        self.slice = _csr(  # k entries per receiver row
            slice_.crow_indices(), slice_.col_indices(),
            (slice_.values().view(points, k) * inv_sqrt[:, None]).view(-1),
            slice_.shape)
        return self

    def filter(self, values: torch.Tensor) -> torch.Tensor:
        """Splat, blur along the d + 1 directions in order, slice.

        Args:
            values: (B N, C) float32 values at the points.

        Returns:
            torch.Tensor: (B N, C) float32 filtered values.
        """
        m = self.num_vertices
        grid, spare, pair = self._buffers(values)
        if values.is_cuda:
            grid[:m] = self.splat @ values
        else:  # straight into the buffer
            torch.mm(self.splat, values, out=grid[:m])
        for index in self.neighbours:  # (back + forward) / 2 + centre
            torch.index_select(grid, 0, index[:m], out=spare[:m])
            torch.index_select(grid, 0, index[m:], out=pair)
            spare[:m].add_(pair).mul_(0.5).add_(grid[:m])
            grid, spare = spare, grid
        return self.slice @ grid[:m]

    def _buffers(self, values: torch.Tensor):
        """Blur buffers for ``values``' channel count, kept for reuse.

        Two ``(M + 1, C)`` grids whose last row (the missing neighbour)
        stays 0, and the ``(M, C)`` gathered forward neighbours.
        """
        key = (values.shape[1], values.dtype)
        if key not in self._cache:
            m, c = self.num_vertices, values.shape[1]
            self._cache.clear()  # one channel count at a time
            self._cache[key] = (values.new_zeros(m + 1, c),
                                values.new_zeros(m + 1, c),
                                values.new_empty(m, c))
        return self._cache[key]
