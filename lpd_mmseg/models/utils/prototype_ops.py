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


def normalize_cams(cams: Tensor, eps: float = 1e-5) -> Tensor:
    """ReLU, then min-max normalise each ``(b, c)`` map to ``[0, 1]``.

    Args:
        cams (Tensor): ``(B, C, H, W)``.
    """
    cams = F.relu(cams)
    flat = cams.flatten(2)
    low = flat.amin(dim=2, keepdim=True)
    high = flat.amax(dim=2, keepdim=True)
    flat = (flat - low) / (high - low + eps)
    return flat.reshape_as(cams)


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
