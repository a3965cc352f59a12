"""Prototype matching and CAM arithmetic (pure tensor functions).

Conventions: ``C`` tissue classes, ``k`` prototypes per class, prototypes of
class ``c`` are rows ``c*k .. c*k+k-1``, so a prototype axis of length
``C*k`` reshapes to ``(C, k)``.
"""
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

MERGE_MODES = ('mean', 'softmax', 'max')


def cosine_similarity_maps(features: Tensor, prototypes: Tensor,
                           eps: float = 1e-6) -> Tensor:
    """Cosine similarity of every pixel feature with every prototype.

    Args:
        features (Tensor): ``(B, D, H, W)``.
        prototypes (Tensor): ``(P, D)``.

    Returns:
        Tensor: ``(B, P, H, W)`` with values in ``[-1, 1]``.
    """
    if features.shape[1] != prototypes.shape[1]:
        raise ValueError(f'feature width {features.shape[1]} does not match '
                         f'prototype width {prototypes.shape[1]}')
    feats = F.normalize(features, dim=1, eps=eps)
    protos = F.normalize(prototypes, dim=1, eps=eps).to(feats.dtype)
    return torch.einsum('bdhw,pd->bphw', feats, protos)


def merge_prototypes(x: Tensor, k: int, mode: str = 'mean') -> Tensor:
    """Merge the ``k`` prototypes of each class along dim 1.

    Args:
        x (Tensor): ``(B, C*k, ...)``: prototype scores or maps.
        k (int): prototypes per class.
        mode (str): ``'mean'``; ``'softmax'`` for the soft maximum
            ``sum_j softmax(x)_j * x_j``; or ``'max'``.

    Returns:
        Tensor: ``(B, C, ...)``.
    """
    if mode not in MERGE_MODES:
        raise ValueError(f'merge mode must be one of {MERGE_MODES}, '
                         f'got {mode!r}')
    if x.shape[1] % k:
        raise ValueError(f'{x.shape[1]} prototypes are not a multiple of '
                         f'k={k}')
    grouped = x.reshape(x.shape[0], x.shape[1] // k, k, *x.shape[2:])
    if mode == 'mean':
        return grouped.mean(dim=2)
    if mode == 'max':
        return grouped.amax(dim=2)
    weights = torch.softmax(grouped.float(), dim=2).to(grouped.dtype)
    return (weights * grouped).sum(dim=2)


def global_average_pool(maps: Tensor) -> Tensor:
    """``(B, P, H, W)`` -> ``(B, P)``."""
    return maps.mean(dim=(2, 3))


def normalize_cams(cams: Tensor, eps: float = 1e-5,
                   relu: bool = True) -> Tensor:
    """ReLU, then min-max normalise each ``(b, c)`` map to ``[0, 1]``.

    Args:
        cams (Tensor): ``(B, C, H, W)``.
        relu (bool): apply the ReLU first (inference).  Without it a map
            that is negative everywhere still spans ``[0, 1]``.
    """
    if relu:
        cams = F.relu(cams)
    flat = cams.flatten(2)
    low = flat.amin(dim=2, keepdim=True)
    high = flat.amax(dim=2, keepdim=True)
    flat = (flat - low) / (high - low + eps)
    return flat.reshape_as(cams)


def relative_peaks(maps: Tensor, eps: float = 1e-6) -> Tensor:
    """Each class's peak evidence relative to the image's strongest class.

    ``max_hw relu(maps[b, c]) / max_c' max_hw relu(maps[b, c'])``: 1 for
    the class with the highest activation, near 0 for a class that never
    responds clearly.  Min-max normalisation (:func:`normalize_cams`)
    throws this away: every class's CAM peaks at 1 however weak it is.

    Args:
        maps (Tensor): ``(B, C, H, W)`` merged class maps (logits).

    Returns:
        Tensor: ``(B, C)`` in ``[0, 1]``.
    """
    peaks = F.relu(maps).flatten(2).amax(dim=2)
    return peaks / peaks.amax(dim=1, keepdim=True).clamp_min(eps)


def fuse_stage_cams(stage_cams: Sequence[Tensor], weights: Sequence[float],
                    size: Sequence[int], align_corners: bool = False
                    ) -> Tensor:
    """Weighted sum of per-stage CAMs resized to ``size``.

    Args:
        stage_cams (list[Tensor]): each ``(B, C, H_i, W_i)``.
        weights (list[float]): one per stage; stages with weight 0 are
            skipped.
        size (tuple[int]): output ``(H, W)``.

    Returns:
        Tensor: ``(B, C, H, W)``.
    """
    if len(stage_cams) != len(weights):
        raise ValueError(f'{len(stage_cams)} stages but {len(weights)} '
                         'fusion weights')
    fused = None
    for cam, weight in zip(stage_cams, weights):
        if weight == 0:
            continue
        cam = F.interpolate(cam, size=tuple(size), mode='bilinear',
                            align_corners=align_corners)
        fused = weight * cam if fused is None else fused + weight * cam
    if fused is None:
        raise ValueError('all fusion weights are zero')
    return fused


def background_score(cams: Tensor, alpha: float) -> Tensor:
    """``(1 - max_c cam_c) ** alpha``: ``(B, C, H, W)`` -> ``(B, 1, H, W)``.

    ``cams`` are expected in ``[0, 1]``.
    """
    top = cams.amax(dim=1, keepdim=True).clamp(0, 1)
    return (1 - top).pow(alpha)


def add_background(cams: Tensor, alpha: float) -> Tensor:
    """Append the background channel: ``(B, C+1, H, W)``."""
    return torch.cat([cams, background_score(cams, alpha)], dim=1)


def gate_cams(cams: Tensor, gate: Tensor) -> Tensor:
    """Zero the CAMs of absent classes.

    Args:
        cams (Tensor): ``(B, C, H, W)``.
        gate (Tensor): ``(B, C)`` or ``(B, C, H, W)`` of 0/1 (or weights).
    """
    if gate.dim() == 2:
        gate = gate[:, :, None, None]
    return cams * gate.to(cams.dtype)


REGION_RULES = ('relu', 'minmax')


def region_cams(maps: Tensor, rule: str) -> Tensor:
    """Class maps for the diversity pseudo-mask.

    - ``'relu'``: ReLU + min-max, the inference CAMs: a class whose map is
      still negative everywhere (early in training) is 0 everywhere, so it
      gets no region and its prototypes no diversity gradient;
    - ``'minmax'``: min-max without the ReLU: every class's map spans
      ``[0, 1]``, so every labelled class wins the pixels where it is
      relatively strongest.

    Args:
        maps (Tensor): ``(B, C, H, W)`` merged class logit maps.

    Returns:
        Tensor: ``(B, C, H, W)`` in ``[0, 1]``.
    """
    if rule not in REGION_RULES:
        raise ValueError(f'region_rule must be one of {REGION_RULES}, got '
                         f'{rule!r}')
    return normalize_cams(maps, relu=rule == 'relu')


def region_pairs(region: Tensor, labels: Tensor) -> Tensor:
    """How many (image, labelled class) pairs own at least one pixel of
    the pseudo-mask, i.e. receive the diversity loss.

    Args:
        region (Tensor): ``(B, H, W)`` values ``0..C`` (``C`` background).
        labels (Tensor): ``(B, C)`` multi-hot.

    Returns:
        Tensor: scalar int64.
    """
    num_classes = labels.shape[1]
    classes = torch.arange(num_classes, device=region.device)
    owns = (region.flatten(1)[:, :, None] == classes).any(dim=1)
    return (owns & (labels > 0)).sum()


def region_mask_from_cams(cams: Tensor, alpha: float,
                          labels: Optional[Tensor] = None) -> Tensor:
    """Pseudo-mask from normalised CAMs, for the diversity regulariser.

    Each pixel takes the class with the highest CAM, or background (value
    ``C``) when the background score ``(1 - max) ** alpha`` is higher, the
    same rule as inference.  With ``labels`` only the image's labelled
    classes compete.

    Args:
        cams (Tensor): ``(B, C, H, W)`` in ``[0, 1]``.
        alpha (float): background exponent.
        labels (Tensor, optional): ``(B, C)`` multi-hot.

    Returns:
        Tensor: ``(B, H, W)`` int64 with values ``0..C``.
    """
    if labels is not None:
        cams = gate_cams(cams, labels)
    return add_background(cams, alpha).argmax(dim=1)
