"""Diversity regularisers for the k prototypes of a class.

Both functions score how much the prototypes of one class respond to the
same pixels of that class's region; minimising them spreads the prototypes
over different sub-regions (intra-class heterogeneity).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmseg.registry import MODELS
from torch import Tensor

from .utils import check_positive_int


def _validate(similarity: Tensor, class_mask: Tensor, num_classes: int):
    if similarity.dim() != 4:
        raise ValueError('similarity must be (B, num_classes * k, H, W), '
                         f'got shape {tuple(similarity.shape)}')
    batch, channels, height, width = similarity.shape
    if num_classes < 1 or channels % num_classes:
        raise ValueError(f'similarity has {channels} channels, which is not '
                         f'num_classes * k for num_classes={num_classes}')
    if tuple(class_mask.shape) != (batch, height, width):
        raise ValueError(f'class_mask must be (B, H, W) = '
                         f'{(batch, height, width)}, got '
                         f'{tuple(class_mask.shape)}')
    return channels // num_classes


def _class_regions(class_mask: Tensor, num_classes: int) -> Tensor:
    """``(B, H, W)`` -> boolean ``(B, C, H*W)``; other values drop out."""
    classes = torch.arange(num_classes, device=class_mask.device)
    return class_mask.flatten(1)[:, None, :] == classes[None, :, None]


def _zero_with_grad(similarity: Tensor) -> Tensor:
    return similarity.sum() * 0.0


def _mean_over_valid(per_class: Tensor, valid: Tensor,
                     similarity: Tensor) -> Tensor:
    """Mean over valid classes per image, then over images having one.

    Args:
        per_class (Tensor): ``(B, C)`` values (anything where invalid).
        valid (Tensor): ``(B, C)`` bool.
    """
    if not valid.any():
        return _zero_with_grad(similarity)
    per_class = torch.where(valid, per_class, torch.zeros_like(per_class))
    count = valid.sum(dim=1)
    has_class = count > 0
    per_image = per_class.sum(dim=1)[has_class] / count[has_class]
    return per_image.mean()


def jeffreys_diversity(similarity: Tensor,
                       class_mask: Tensor,
                       num_classes: int,
                       temperature: float = 1.0) -> Tensor:
    """Mean pairwise ``exp(-Jeffreys divergence)`` between prototype maps.

    For every image and every class ``c`` whose region (pixels where
    ``class_mask == c``) is non-empty, each prototype ``j`` of ``c`` gets a
    distribution over the region's pixels,
    ``v_j = softmax(similarity_j / temperature)``; each pair ``i < j``
    scores ``exp(-(KL(v_i || v_j) + KL(v_j || v_i)))`` (1 for identical
    responses, towards 0 for prototypes that peak on different pixels).
    The result is the mean over pairs, then over the classes present, then
    over the images that have at least one class.

    Args:
        similarity (Tensor): ``(B, num_classes * k, H, W)`` cosine
            similarities; prototypes of class ``c`` are channels
            ``c*k .. c*k+k-1``.
        class_mask (Tensor): ``(B, H, W)`` int64, class index
            ``0..num_classes-1`` for region pixels; any other value (e.g.
            background ``num_classes`` or 255) belongs to no region.
        num_classes (int): number of classes ``C``.
        temperature (float): softmax temperature.  Default 1.0.

    Returns:
        Tensor: 0-dim.  Zero, still connected to ``similarity`` for autograd
        and never NaN, when no image has a non-empty region or ``k < 2``.
    """
    k = _validate(similarity, class_mask, num_classes)
    if temperature <= 0:
        raise ValueError(f'temperature must be > 0, got {temperature}')
    if k < 2:
        return _zero_with_grad(similarity)
    batch = similarity.shape[0]
    logits = similarity.float().flatten(2).reshape(batch, num_classes, k, -1)
    logits = logits / temperature
    region = _class_regions(class_mask, num_classes)  # (B, C, N)
    valid = region.any(dim=2)  # (B, C)
    region_k = region[:, :, None, :].expand_as(logits)
    # Pixels outside the region get probability 0; an empty region keeps
    # finite logits so nothing becomes NaN (it is excluded below).
    masked = torch.where(region_k | ~valid[:, :, None, None], logits,
                         torch.full_like(logits, float('-inf')))
    log_v = F.log_softmax(masked, dim=3)
    log_v = torch.where(region_k, log_v, torch.zeros_like(log_v))
    v = log_v.exp() * region_k
    # KL(v_i || v_j) for all ordered pairs: sum_x v_i (log v_i - log v_j).
    self_term = (v * log_v).sum(dim=3)  # (B, C, k)
    cross = torch.einsum('bcin,bcjn->bcij', v, log_v)  # sum_x v_i log v_j
    kl = self_term[..., :, None] - cross  # (B, C, k, k): KL(i || j)
    jeffreys = kl + kl.transpose(2, 3)
    pair_i, pair_j = torch.triu_indices(k, k, offset=1,
                                        device=similarity.device)
    pair_similarity = torch.exp(-jeffreys[:, :, pair_i, pair_j])
    per_class = pair_similarity.mean(dim=2)  # (B, C)
    return _mean_over_valid(per_class, valid, similarity).to(
        similarity.dtype)


def correlation_diversity(similarity: Tensor,
                          class_mask: Tensor,
                          num_classes: int,
                          window: int = 7,
                          eps: float = 1e-6) -> Tensor:
    """Mean squared off-diagonal correlation of prototype responses.

    The alternative regulariser of the first LPD code version: prototype
    response maps are averaged over ``window x window`` neighbourhoods,
    restricted to the class region, centred and L2-normalised over the
    region; the ``k x k`` Gram matrix of the normalised responses holds
    their correlations, and the penalty is the mean of its squared
    off-diagonal entries.  Aggregated like :func:`jeffreys_diversity`.

    Args:
        similarity (Tensor): ``(B, num_classes * k, H, W)``.
        class_mask (Tensor): ``(B, H, W)`` int64.
        num_classes (int): number of classes ``C``.
        window (int): odd averaging window.  Default 7.

    Returns:
        Tensor: 0-dim, zero (with a gradient path) when nothing is valid.
    """
    k = _validate(similarity, class_mask, num_classes)
    if window < 1 or window % 2 == 0:
        raise ValueError(f'window must be a positive odd number, got '
                         f'{window}')
    if k < 2:
        return _zero_with_grad(similarity)
    batch = similarity.shape[0]
    smoothed = F.avg_pool2d(similarity.float(), window, stride=1,
                            padding=window // 2, count_include_pad=False)
    responses = smoothed.flatten(2).reshape(batch, num_classes, k, -1)
    region = _class_regions(class_mask, num_classes)[:, :, None, :]
    count = region.sum(dim=3, keepdim=True).clamp(min=1)
    mean = (responses * region).sum(dim=3, keepdim=True) / count
    centred = (responses - mean) * region
    unit = centred / (centred.norm(dim=3, keepdim=True) + eps)
    gram = torch.einsum('bcin,bcjn->bcij', unit, unit)
    off_diagonal = ~torch.eye(k, dtype=torch.bool, device=gram.device)
    per_class = gram.pow(2)[:, :, off_diagonal].mean(dim=2)
    # A single-pixel region has no variance to correlate.
    valid = region[:, :, 0, :].sum(dim=2) > 1
    return _mean_over_valid(per_class, valid, similarity).to(
        similarity.dtype)


class _DiversityLoss(nn.Module):

    def __init__(self, loss_weight: float, loss_name: str):
        super().__init__()
        if loss_weight < 0:
            raise ValueError(f'loss_weight must be >= 0, got {loss_weight}')
        if not loss_name.startswith('loss_'):
            raise ValueError("loss_name must start with 'loss_' so that "
                             f'mmseg adds it to the total, got {loss_name!r}')
        self.loss_weight = loss_weight
        self._loss_name = loss_name

    @property
    def loss_name(self) -> str:
        return self._loss_name


@MODELS.register_module()
class JeffreysDiversityLoss(_DiversityLoss):
    """LPD's diversity regulariser, see :func:`jeffreys_diversity`.

    Args:
        loss_weight (float): lambda_div.  Default 0.5 (paper).
        temperature (float): softmax temperature over region pixels.
            Default 1.0 (softmax of raw cosine similarities, as in the
            paper's code).
        loss_name (str): default ``'loss_div'``.
    """

    def __init__(self, loss_weight: float = 0.5, temperature: float = 1.0,
                 loss_name: str = 'loss_div'):
        super().__init__(loss_weight, loss_name)
        if temperature <= 0:
            raise ValueError(f'temperature must be > 0, got {temperature}')
        self.temperature = temperature

    def forward(self, similarity: Tensor, class_mask: Tensor,
                num_classes: int) -> Tensor:
        return self.loss_weight * jeffreys_diversity(
            similarity, class_mask, num_classes, self.temperature)


@MODELS.register_module()
class CorrelationDiversityLoss(_DiversityLoss):
    """Correlation-based alternative, see :func:`correlation_diversity`.

    Args:
        loss_weight (float): default 0.5.
        window (int): averaging window.  Default 7.
        loss_name (str): default ``'loss_div'``.
    """

    def __init__(self, loss_weight: float = 0.5, window: int = 7,
                 loss_name: str = 'loss_div'):
        super().__init__(loss_weight, loss_name)
        check_positive_int('window', window)
        if window % 2 == 0:
            raise ValueError(f'window must be odd, got {window}')
        self.window = window

    def forward(self, similarity: Tensor, class_mask: Tensor,
                num_classes: int) -> Tensor:
        return self.loss_weight * correlation_diversity(
            similarity, class_mask, num_classes, self.window)
