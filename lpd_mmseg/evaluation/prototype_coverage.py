"""Prototype coverage: how the ``k`` prototypes of a class share its region.

For each class, the share of that class's region (predicted mask, or a
ground-truth mask) where each of its ``k`` prototypes is the strongest of
the class's ``k`` prototypes.  Diverse prototypes split a class region into
complementary parts (shares near ``1/k``, normalised entropy near 1);
collapsed prototypes leave one prototype winning almost everywhere (entropy
near 0).  This is the quantitative form of the paper's claim about the
diversity regulariser.  Pure functions on tensors; the figures are drawn by
:mod:`lpd_mmseg.visualization.prototype_figures` and the images are run by
:func:`lpd_mmseg.apis.visualization.visualize_prototypes`.
"""
import math
from typing import Sequence

import torch
from torch import Tensor


def prototype_coverage(similarity: Tensor, region: Tensor, num_classes: int,
                       num_prototypes: int) -> Tensor:
    """Pixel counts of the winning prototype inside each class region.

    For class ``c`` only the pixels with ``region == c`` count; at each of
    them the winner is the prototype ``j`` with the largest
    ``similarity[c * k + j]`` among the class's ``k`` prototypes (ties go to
    the lowest ``j``).  Region values outside ``0..C-1`` (background,
    ignore) count for no class.

    Args:
        similarity (Tensor): ``(C * k, H, W)`` prototype maps.
        region (Tensor): ``(H, W)`` integer class map.
        num_classes (int): ``C``.
        num_prototypes (int): ``k``.

    Returns:
        Tensor: ``(C, k)`` int64; row ``c`` sums to the pixel count of
        class ``c`` in ``region``.
    """
    c, k = int(num_classes), int(num_prototypes)
    if similarity.dim() != 3 or similarity.shape[0] != c * k:
        raise ValueError(f'similarity must be (C*k, H, W) = ({c * k}, H, W), '
                         f'got {tuple(similarity.shape)}')
    if tuple(region.shape) != tuple(similarity.shape[1:]):
        raise ValueError(f'region {tuple(region.shape)} and similarity '
                         f'{tuple(similarity.shape[1:])} differ in size')
    winner = similarity.reshape(c, k, -1).argmax(dim=1)  # (C, H*W)
    labels = region.reshape(-1).long().to(winner.device)
    counts = torch.zeros(c, k, dtype=torch.int64, device=winner.device)
    for cls in range(c):
        inside = winner[cls][labels == cls]
        counts[cls] = torch.bincount(inside, minlength=k)
    return counts.cpu()


def coverage_shares(counts: Tensor) -> Tensor:
    """Row-normalise ``(C, k)`` counts; rows without pixels become NaN.

    Args:
        counts (Tensor): ``(C, k)`` pixel counts.

    Returns:
        Tensor: ``(C, k)`` float64 shares, each non-empty row sums to 1.
    """
    counts = counts.double()
    totals = counts.sum(dim=1, keepdim=True)
    return torch.where(totals > 0, counts / totals.clamp_min(1),
                       torch.full_like(counts, float('nan')))


def coverage_entropy(shares: Tensor) -> Tensor:
    """Normalised entropy of each row of :func:`coverage_shares`.

    ``H_c = -sum_j p_j log p_j / log k``: 1 when the ``k`` prototypes split
    the class region evenly, 0 when one prototype wins everywhere.  NaN for
    a class without pixels; 0 when ``k == 1``.

    Args:
        shares (Tensor): ``(C, k)``.

    Returns:
        Tensor: ``(C,)`` float64.
    """
    shares = shares.double()
    k = shares.shape[1]
    terms = torch.where(shares > 0, shares * shares.clamp_min(1e-300).log(),
                        torch.zeros_like(shares))
    entropy = -terms.sum(dim=1)
    entropy = entropy / math.log(k) if k > 1 else torch.zeros_like(entropy)
    return torch.where(torch.isnan(shares).any(dim=1),
                       torch.full_like(entropy, float('nan')), entropy)


def coverage_report(counts: Tensor, class_names: Sequence[str]) -> dict:
    """JSON-ready per-class numbers from ``(C, k)`` counts.

    Per class: ``pixels``, ``counts`` (per prototype), ``shares``,
    ``entropy`` (normalised, see :func:`coverage_entropy`) and
    ``effective_prototypes`` (``k ** entropy``, between 1 and ``k``).
    Classes without pixels get ``None`` for the derived numbers.
    """
    shares = coverage_shares(counts)
    entropy = coverage_entropy(shares)
    k = counts.shape[1]
    report = {}
    for c, name in enumerate(class_names):
        empty = bool(torch.isnan(entropy[c]))
        report[str(name)] = dict(
            pixels=int(counts[c].sum()),
            counts=[int(v) for v in counts[c]],
            shares=None if empty else [float(v) for v in shares[c]],
            entropy=None if empty else float(entropy[c]),
            effective_prototypes=None if empty else float(
                k**float(entropy[c])))
    return report


def format_coverage(report: dict) -> str:
    """Text table of the aggregate coverage (what the tool prints)."""
    k = report['num_prototypes']
    lines = [f"prototype coverage over {report['num_images']} image(s), "
             f"regions from {report['region']} "
             f"(backbone stage {report['backbone_stage']}):",
             f"  {'class':<8}{'pixels':>9}  entropy  eff.  "
             f'shares p0..p{k - 1}']
    for name, entry in report['aggregate'].items():
        if entry['shares'] is None:
            lines.append(f'  {name:<8}{0:>9}  (no pixels)')
            continue
        shares = ' '.join(f'{s:.2f}' for s in entry['shares'])
        lines.append(f"  {name:<8}{entry['pixels']:>9}  "
                     f"{entry['entropy']:>7.2f}  "
                     f"{entry['effective_prototypes']:>4.1f}  {shares}")
    return '\n'.join(lines)


__all__ = [
    'prototype_coverage', 'coverage_shares', 'coverage_entropy',
    'coverage_report', 'format_coverage'
]
