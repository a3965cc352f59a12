"""Geometry of the permutohedral lattice: embedding, enclosing simplex,
barycentric weights and packed vertex keys (:mod:`.lattice` uses them).

Every function works on coordinate-major arrays, ``(d + 1, N)``: each
coordinate of all N points is one contiguous row, so the per-coordinate
loops are whole-row operations and no transposed copies are needed.
The formulas are those of the lattice inside pydensecrf (Adams, Baek and
Davis 2010), in the same order of float operations, so both give the same
simplices.
"""
import math
from typing import Tuple

import torch

__all__ = ['elevate', 'simplex', 'elevate_cm', 'simplex_cm',
           'vertex_codes_cm']


def _scale_factors(dim: int, device: torch.device) -> torch.Tensor:
    """(d,) diagonal of the embedding: ``sqrt(2/3) (d+1) / sqrt((i+1)(i+2))``.

    Chosen (Adams et al. 2010, p. 6) so that the lattice blur has the
    standard deviation of the features' unit.
    """
    inv_std = math.sqrt(2.0 / 3.0) * (dim + 1)
    i = torch.arange(dim, dtype=torch.float64, device=device)
    return (inv_std / torch.sqrt((i + 1) * (i + 2))).float()


def elevate_cm(features: torch.Tensor) -> torch.Tensor:
    """Lift ``(N, d)`` features onto the plane ``sum = 0`` of ``R^(d+1)``.

    ``e_0 = sum_k c_k`` and ``e_j = sum_{k >= j} c_k - j c_(j-1)`` with
    ``c = features * scale`` (:func:`_scale_factors`).

    Args:
        features: (N, d) float32.

    Returns:
        torch.Tensor: (d + 1, N) float32 contiguous elevated coordinates.
    """
    n, dim = features.shape
    scaled = (features * _scale_factors(dim, features.device)).T.contiguous()
    out = features.new_empty(dim + 1, n)
    suffix = torch.zeros_like(scaled[0])
    for j in range(dim, 0, -1):  # same order of additions as pydensecrf
        torch.sub(suffix, scaled[j - 1], alpha=j, out=out[j])
        suffix += scaled[j - 1]
    out[0] = suffix
    return out


def elevate(features: torch.Tensor) -> torch.Tensor:
    """(N, d) -> (N, d + 1): :func:`elevate_cm`, as a transposed view."""
    return elevate_cm(features).T


def simplex_cm(e: torch.Tensor
               ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Enclosing simplex and barycentric weights of elevated points.

    Args:
        e: (d + 1, N) float32 contiguous, from :func:`elevate_cm`.

    Returns:
        tuple: ``rem0`` (d + 1, N) int64, the nearest remainder-0 vertex
        (its coordinates are multiples of ``d + 1``); ``rank`` (d + 1, N)
        int64, the position of each coordinate's offset from ``rem0`` in
        decreasing order (ties: the earlier coordinate ranks higher);
        ``weights`` (d + 1, N) float32, row ``r`` the barycentric weight
        of the vertex of remainder ``r`` (each column sums to 1).
    """
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
    # (int8 counts: a third of the memory traffic of int64)
    rank = torch.arange(k, dtype=torch.int8, device=e.device)[:, None]
    rank = rank.repeat(1, n)  # the later coordinate of a pair counts 1 ...
    for m in range(k):
        for j in range(m + 1, k):
            later_larger = (diff[m] < diff[j]).to(torch.int8)
            rank[m] += later_larger
            rank[j] -= later_larger  # ... unless it is larger
    del diff
    rank += torch.div(rem0.sum(0), k, rounding_mode='floor').to(torch.int8)
    shift = (rank < 0).to(torch.int8).sub_((rank > dim).to(torch.int8))
    shift *= k
    rank += shift
    rem0 = rem0.long().add_(shift)
    del shift
    rank = rank.long()
    delta = (e - rem0).mul_(down)
    slot = dim - rank
    bary = e.new_zeros(k + 1, n)
    bary.scatter_add_(0, slot, delta)
    bary.scatter_add_(0, slot + 1, delta.neg_())
    bary[0] += 1.0 + bary[k]
    return rem0, rank, bary[:k]


def simplex(elevated: torch.Tensor
            ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, d + 1) elevated points -> :func:`simplex_cm`'s ``rem0``,
    ``rank`` and ``weights`` as (N, d + 1) arrays (transposed views)."""
    rem0, rank, weights = simplex_cm(elevated.T.contiguous())
    return rem0.T, rank.T, weights.T


def vertex_codes_cm(rem0: torch.Tensor, rank: torch.Tensor, batch: int
                    ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Packed int64 keys of the ``d + 1`` vertices of each point's simplex.

    Vertex ``r`` of a simplex has the integer key ``rem0 + r`` on the
    coordinates of rank ``<= d - r`` and ``rem0 + r - (d + 1)`` on the
    others; the last coordinate is implied by ``sum = 0`` and dropped.  The
    ``d`` key coordinates (shifted to start at 0, with a margin of
    ``2 (d + 1)`` on both sides) and the image index are packed as mixed
    radix digits, so a blur neighbour's code is the vertex code plus a
    constant that never carries into another digit.

    Args:
        rem0: (d + 1, B N) int64 from :func:`simplex_cm`.
        rank: (d + 1, B N) int64 from :func:`simplex_cm`.
        batch: B; the points of image ``b`` are ``b N .. (b + 1) N - 1``.

    Returns:
        tuple: codes (d + 1, B N) int64 (row ``r`` is vertex ``r``), the
        (d,) int64 digit weights of the key coordinates and the number of
        bits a code needs.

    Raises:
        ValueError: the keys need more than 62 bits (features spanning
            millions of standard deviations).
    """
    k, points = rem0.shape
    dim = k - 1
    low = rem0[:dim].amin(1) - 2 * k
    span = rem0[:dim].amax(1) - low + 2 * k + 1  # (d,)
    sizes = [int(s) for s in span.tolist()] + [batch]
    if sum(math.log2(s) for s in sizes) >= 62:
        raise ValueError(
            'the lattice keys do not fit into 62 bits: the features span '
            f'{sizes[:-1]} lattice cells (use larger standard deviations or '
            'smaller images)')
    steps = [1] * dim
    for i in range(dim - 2, -1, -1):
        steps[i] = steps[i + 1] * sizes[i + 1]
    base = torch.full((points,), -sum(int(low[i]) * steps[i]
                                     for i in range(dim)),
                      dtype=torch.int64, device=rem0.device)
    if batch > 1:  # the image index is the top digit
        base.view(batch, -1).add_(
            torch.arange(batch, device=rem0.device)[:, None]
            * (steps[0] * sizes[0]))
    for i in range(dim):
        base.add_(rem0[i], alpha=steps[i])
    # by_rank[t]: digit weight of the coordinates of rank t
    weights = torch.tensor(steps, device=rem0.device)
    by_rank = torch.zeros_like(rem0)
    by_rank.scatter_add_(0, rank[:dim],
                         weights[:, None].expand(dim, points))
    codes = torch.empty_like(rem0)
    codes[0] = base
    above = torch.zeros_like(base)
    for r in range(1, k):  # the ranks above d - r take r - (d + 1)
        above += by_rank[dim - r + 1]
        torch.sub(base + r * sum(steps), above, alpha=k, out=codes[r])
    bits = max(1, math.ceil(sum(math.log2(s) for s in sizes)))
    return codes, weights, bits
