"""Permutohedral-lattice Gaussian filter in plain PyTorch.

After Adams, Baek and Davis, "Fast High-Dimensional Filtering Using the
Permutohedral Lattice" (Eurographics 2010), with the same choices as the
lattice inside pydensecrf, so that both filters give the same numbers up to
float rounding:

1. **Embed** (:mod:`.geometry`).  Each point's ``d`` features (already
   divided by their standard deviations) are scaled by
   ``sqrt(2/3) (d + 1)`` and lifted onto the plane ``sum = 0`` of
   ``R^(d+1)``; the enclosing simplex is found by rounding to the nearest
   multiple of ``d + 1`` and ranking the remainders, and the ``d + 1``
   barycentric weights follow from the ranks.
2. **Deduplicate.**  Every point names ``d + 1`` lattice vertices by their
   integer keys, packed into one int64 code each (mixed radix with a
   margin, the image index as the top digit, so that a batch shares one
   lattice without mixing images).  One sort of the codes (with the slot
   of each riding in its low bits) groups equal vertices; a blur
   neighbour's code is the vertex code plus a constant per direction, so
   the neighbour table comes from merging the shifted sorted codes with
   the sorted codes.
3. **Splat** with a sparse product, **blur** with the kernel
   ``[1/2, 1, 1/2]`` along each of the ``d + 1`` lattice directions through
   the neighbour table (missing neighbours read a zero row), and **slice**
   with a sparse product, times ``1 / (1 + 2^-d)``.

The lattice depends only on the features (the image), so it is built once
and reused by every mean-field iteration.  Cost and memory are linear in the
number of points and vertices, independent of the standard deviations.
"""
import threading
import warnings
from typing import Tuple

import numpy as np
import torch

from .geometry import elevate, elevate_cm, simplex, simplex_cm, vertex_codes_cm

__all__ = ['PermutohedralLattice', 'lattice_build_bytes',
           'lattice_held_bytes', 'lattice_filter_bytes', 'elevate',
           'simplex']

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
    """Bytes a built (and normalised) lattice holds.

    Splat and slice CSR matrices (float32 weights, ``N (d + 1)`` entries
    each, and their indices), the ``(d + 1, 2 M + 1)`` neighbour table and
    the ``(N,)`` float32 input scale of the normalisation; the indices are
    int32 where they fit (:func:`_index_dtype`), else int64.

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
            + i * k * (2 * vertices + 1) + 4 * points)


def lattice_filter_bytes(points: int, vertices: int, channels: int) -> int:
    """Peak bytes of one :meth:`PermutohedralLattice.filter`.

    Two ``(M + 1, C)`` blur buffers and the ``(2 M, C)`` gathered
    neighbours (kept by the lattice for the next call), the scaled input,
    its row-major copy for the sparse product and the output
    (``3 N C``), float32.

    Args:
        points: Number of points N.
        vertices: Number of lattice vertices M.
        channels: Channels C of the filtered values.

    Returns:
        int: bytes.
    """
    return 4 * channels * (4 * (vertices + 1) + 3 * points)


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


def sort_values(x: torch.Tensor) -> torch.Tensor:
    """Sorted copy of a 1-D int64 tensor (values only).

    On the CPU through numpy, whose vectorised sort of plain values is
    about twice as fast as :func:`torch.sort` (which always sorts an index
    array along); on other devices :func:`torch.sort`.
    """
    if x.device.type == 'cpu':
        return torch.from_numpy(np.sort(x.numpy()))
    return torch.sort(x).values


def count_at_most(keys: torch.Tensor, queries: torch.Tensor
                  ) -> torch.Tensor:
    """How many ``keys`` are ``<=`` each query (``searchsorted``, right).

    Args:
        keys: (M,) increasing int64.
        queries: (R, Q) int64, every row increasing.

    Returns:
        torch.Tensor: (R, Q) int64 counts.

    On the CPU each row is merged with the keys by numpy's stable sort,
    which finds the two increasing runs and merges them in linear time
    (about 1.6x faster than a binary search per query); elsewhere
    :func:`torch.searchsorted`.
    """
    if keys.device.type != 'cpu':
        return torch.searchsorted(keys, queries, right=True)
    keys_np, m = keys.numpy(), keys.numel()
    rows = []
    for row in queries.numpy():
        order = np.argsort(np.concatenate([keys_np, row]), kind='stable')
        # a query's place in the merge, minus the queries before it
        rows.append(np.flatnonzero(order >= m) - np.arange(len(row)))
    return torch.from_numpy(np.stack(rows))


def sorted_slots(codes: torch.Tensor, bits: int
                 ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sort the (K, P) vertex codes; say where each sorted code came from.

    The slot ``(r, p)`` of each code rides along in its low bits (``p`` in
    the lowest ``ceil(log2 P)``, then ``r``) so that one plain sort of
    values replaces an argsort; when the code and the slot do not fit into
    63 bits together, an argsort is used instead.

    Args:
        codes: (K, P) int64 non-negative codes below ``2^bits``; consumed
            (overwritten).
        bits: Bits a code needs.

    Returns:
        tuple: sorted codes (K P,), and the (K P,) int64 point ``p`` and
        vertex slot ``r`` of each.
    """
    k, points = codes.shape
    point_bits = max(1, (points - 1).bit_length())
    slot_bits = point_bits + max(1, (k - 1).bit_length())
    if bits + slot_bits <= 63:
        slot = torch.arange(points, device=codes.device) + (
            torch.arange(k, device=codes.device)[:, None] << point_bits)
        packed = codes.bitwise_left_shift_(slot_bits).bitwise_or_(slot)
        del slot, codes
        packed = sort_values(packed.view(-1))
        slot = packed & ((1 << slot_bits) - 1)
        packed >>= slot_bits
        return packed, slot & ((1 << point_bits) - 1), slot >> point_bits
    packed, order = torch.sort(codes.view(-1))
    rows = torch.div(order, points, rounding_mode='floor')
    return packed, order - rows * points, rows


#: A float32 row of 1, 2 or 4 values read as one element of this dtype.
_ROW_DTYPES = {1: torch.float32, 2: torch.float64, 4: torch.complex128}


def _row_gather(channels: int):
    """``out = grid[index]`` for contiguous ``(R, channels)`` float32.

    With 1, 2 or 4 channels each row is read as one 4-, 8- or 16-byte
    element, so that the gather is a one-dimensional ``index_select``
    (three to seven times faster on the CPU than the row-wise one).
    """
    dtype = _ROW_DTYPES.get(channels)
    if dtype is None:
        return lambda grid, index, out: torch.index_select(
            grid, 0, index, out=out)
    return lambda grid, index, out: torch.index_select(
        grid.view(dtype).view(-1), 0, index, out=out.view(dtype).view(-1))


class PermutohedralLattice:
    """Gaussian filter ``out_i ~ sum_j exp(-|f_i - f_j|^2 / 2) in_j``
    (the point itself included) over a batch of point sets.

    Built once from the features; :meth:`filter` then costs one sparse
    product to splat, one row gather and two vector updates per blur
    direction, one sparse product to slice, all linear in the number of
    points and vertices.  Nothing changes a built lattice except
    :meth:`normalise_`, which a kernel calls once when it is made.

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
        in_scale: None, or after :meth:`normalise_` the (B N, 1)
            ``D^-1/2`` that multiplies the values before the splat.
    """

    def __init__(self, features: torch.Tensor, on_vertices=None):
        if features.dim() != 3:
            raise ValueError('features must have shape (B, N, d), got '
                             f'{tuple(features.shape)}')
        batch, n, dim = features.shape
        self._lock = threading.Lock()
        k = dim + 1
        points = batch * n
        device = features.device
        self.shape = (batch, n, dim)
        rem0, rank, weights = simplex_cm(
            elevate_cm(features.reshape(points, dim).float()))
        codes, steps, bits = vertex_codes_cm(rem0, rank, batch)
        del rem0, rank
        codes, point, slot = sorted_slots(codes, bits)
        unique, vertex, counts = torch.unique_consecutive(
            codes, return_inverse=True, return_counts=True)
        del codes
        self.num_vertices = m = int(unique.numel())
        if on_vertices is not None:
            on_vertices(m)
        index = _index_dtype(points * k + 1)
        # splat: rows = vertices (entries sorted by vertex), cols = points
        crow = torch.zeros(m + 1, dtype=index, device=device)
        torch.cumsum(counts, 0, out=crow[1:])
        del counts
        self.splat = _csr(crow, point.to(index),
                          weights.view(-1)[slot * points + point],
                          (m, points))
        # slice: rows = points, cols = their d + 1 vertices
        inverse = torch.empty(points * k, dtype=index, device=device)
        inverse[point.mul_(k).add_(slot)] = vertex.to(index)
        del point, slot, vertex
        alpha = 1.0 / (1.0 + 2.0**-dim)
        self.slice = _csr(
            torch.arange(0, points * k + 1, k, dtype=index, device=device),
            inverse, weights.T.contiguous().mul_(alpha).view(-1),
            (points, m))
        del inverse, weights
        self.neighbours = self._neighbours(unique, steps)
        self.in_scale = None
        self._cache = {}

    @staticmethod
    def _neighbours(unique: torch.Tensor, steps: torch.Tensor
                    ) -> torch.Tensor:
        """(d + 1, 2 M) indices of the blur neighbours along each direction.

        A step along direction ``j < d`` adds ``d + 1`` to key ``j`` and
        subtracts 1 from the others; along ``j = d`` every stored key drops
        by 1: the code changes by a constant per direction.  Row ``j``
        holds the M backward, then the M forward neighbours along ``j``;
        M (the index of a zero row) where there is no vertex.  One search
        of all shifted codes (each row increasing) in the sorted codes.
        """
        dim, m = steps.numel(), unique.numel()
        delta = (dim + 1) * torch.cat([steps, steps.new_zeros(1)])
        wanted = unique + (delta - steps.sum())[:, None]  # (d + 1, M)
        index = _index_dtype(m + 1)
        pos = count_at_most(unique, wanted).sub_(1).clamp_min_(0)
        back = torch.where(unique[pos] == wanted, pos.to(index), m)
        del wanted, pos
        out = torch.empty((dim + 1, 2 * m + 1), dtype=index,
                          device=unique.device)
        out[:, :m] = back
        out[:, m:] = m
        # the forward neighbour relation is the inverse of the backward one;
        # the missing ones all write into the spare slot 2 M, dropped after
        out[:, m:].scatter_(1, back.long(), torch.arange(
            m, dtype=index, device=unique.device).expand(dim + 1, m))
        return out[:, :2 * m]

    def normalise_(self) -> 'PermutohedralLattice':
        """Make :meth:`filter` apply ``D^-1/2 K D^-1/2``, ``D = K 1``.

        The symmetric normalisation of the CRF kernels: the slice weights
        are multiplied by each receiver's ``D^-1/2`` once, here; each
        sender's ``D^-1/2`` multiplies the values on their way in (one
        pass over the values, cheaper than rescaling the splat matrix,
        whose entries are in vertex order).  In place, once; returns the
        lattice.
        """
        if self.in_scale is not None:
            raise RuntimeError('the lattice is already normalised')
        points = self.slice.shape[0]
        ones = self.slice.values().new_ones(points, 1)
        inv_sqrt = (self.filter(ones)[:, 0] + 1e-20).rsqrt()  # (points,)
        k = self.shape[2] + 1
        slice_ = self.slice
        self.slice = _csr(  # k entries per receiver row
            slice_.crow_indices(), slice_.col_indices(),
            (slice_.values().view(points, k) * inv_sqrt[:, None]).view(-1),
            slice_.shape)
        self.in_scale = inv_sqrt[:, None]
        return self

    def filter(self, values: torch.Tensor) -> torch.Tensor:
        """Splat, blur along the d + 1 directions in order, slice.

        Args:
            values: (B N, C) float32 values at the points.

        Returns:
            torch.Tensor: (B N, C) float32 filtered values.
        """
        # The blur buffers are shared by every call on this lattice (a
        # cached position-only lattice serves many images): one call at a
        # time, also when several Python threads use the CRF.
        with self._lock:
            m = self.num_vertices
            grid, spare, pair = self._buffers(values)
            if self.in_scale is not None:
                values = values * self.in_scale
            if values.is_cuda:
                grid[:m] = self.splat @ values
            else:  # straight into the buffer
                torch.mm(self.splat, values, out=grid[:m])
            gather = _row_gather(values.shape[1])
            for index in self.neighbours:  # centre + (back + forward) / 2
                gather(grid, index, pair)
                pair[:m] += pair[m:]
                torch.add(grid[:m], pair[:m], alpha=0.5, out=spare[:m])
                grid, spare = spare, grid
            return self.slice @ grid[:m]

    def _buffers(self, values: torch.Tensor):
        """Blur buffers for ``values``' channel count, kept for reuse.

        Two ``(M + 1, C)`` grids whose last row (the missing neighbour)
        stays 0, and the ``(2 M, C)`` gathered neighbours.
        """
        key = (values.shape[1], values.dtype, values.device)
        if key not in self._cache:
            m, c = self.num_vertices, values.shape[1]
            self._cache.clear()  # one channel count at a time
            self._cache[key] = (values.new_zeros(m + 1, c),
                                values.new_zeros(m + 1, c),
                                values.new_empty(2 * m, c))
        return self._cache[key]

    def buffer_bytes(self) -> int:
        """Bytes of the blur buffers currently kept (:meth:`_buffers`)."""
        return sum(t.numel() * t.element_size()
                   for bufs in self._cache.values() for t in bufs)
