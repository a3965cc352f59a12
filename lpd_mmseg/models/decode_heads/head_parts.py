"""Building blocks of :class:`~lpd_mmseg.models.decode_heads.LPDHead`:
argument checks, the stage projection, the refiner's view of the head."""
from typing import List, NamedTuple, Optional, Sequence, Tuple

import torch.nn as nn
from mmengine.logging import MessageHub
from torch import Tensor

from ..losses.utils import check_positive_int
from ..utils.config_checks import check_choice, check_per_stage

PROTOTYPE_MODES = ('learnable', 'frozen_bank')
MERGES = ('mean', 'softmax', 'max')


def current_train_iter() -> Optional[int]:
    """The training loop's current iteration (0-based), or None outside a
    runner.  mmengine's ``RuntimeInfoHook`` publishes it before each
    iteration."""
    hub = MessageHub.get_current_instance()
    return hub.get_info('iter', None)


class PrototypeEvidence(NamedTuple):
    """The head's last stage as the mask refiner sees it: ``logit_map``
    ``(B, C*k, h, w)``, ``prototype_scores`` ``(B, C*k)`` (pooled),
    ``class_scores`` ``(B, C)`` (training merge), ``prototypes``
    ``(C*k, C_last)`` and ``num_prototypes`` ``k``."""
    logit_map: Tensor
    prototype_scores: Tensor
    class_scores: Tensor
    prototypes: Tensor
    num_prototypes: int


class StageSimilarities(list):
    """``LPDHead.forward``'s per-stage similarity maps, optionally with
    ``raw_diversity`` ``(B, C*k, H, W)``: the raw prototypes' cosine maps
    for ``diversity_input='raw'`` (a list, so mmseg code sees the usual
    head output)."""
    raw_diversity: Optional[Tensor] = None


class StageProjection(nn.Sequential):
    """Two-layer MLP mapping shared prototypes ``(P, D)`` to one stage's
    channel width ``(P, C_i)``: ``D -> D/2 -> C_i`` with a ReLU."""

    def __init__(self, prototype_dim: int, out_channels: int):
        hidden = max(prototype_dim // 2, 1)
        super().__init__(
            nn.Linear(prototype_dim, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, out_channels))


def check_head_args(in_channels: Sequence[int], in_index: Sequence[int],
                    num_classes, num_prototypes, prototype_dim,
                    train_merge, test_merge, prob_merge, prototype_mode,
                    stage_loss_weights, stage_fusion_weights,
                    diversity_stage, warmup_iters, logit_scale_init
                    ) -> Tuple[List[float], List[float]]:
    """Validate ``LPDHead``'s arguments; returns the per-stage loss and
    fusion weights as floats."""
    num_stages = len(in_index)
    check_per_stage('in_channels', in_channels, num_stages)
    check_positive_int('num_classes', num_classes)
    check_positive_int('num_prototypes', num_prototypes)
    check_positive_int('prototype_dim', prototype_dim)
    check_choice('train_merge', train_merge, MERGES)
    check_choice('test_merge', test_merge, MERGES)
    if prob_merge is not None:
        check_choice('prob_merge', prob_merge, MERGES)
    check_choice('prototype_mode', prototype_mode, PROTOTYPE_MODES)
    loss_weights = [float(w) for w in check_per_stage(
        'stage_loss_weights', stage_loss_weights, num_stages)]
    fusion_weights = [float(w) for w in check_per_stage(
        'stage_fusion_weights', stage_fusion_weights, num_stages)]
    for i, (lw, fw) in enumerate(zip(loss_weights, fusion_weights)):
        if lw < 0 or fw < 0:
            raise ValueError('stage weights must be >= 0; stage '
                             f'{in_index[i]} has loss {lw}, fusion {fw}')
        if lw == 0 and fw == 0:
            raise ValueError(
                f'backbone stage {in_index[i]} has loss weight 0 and '
                'fusion weight 0, so it would do nothing; remove it '
                'from in_index and in_channels')
    if sum(fusion_weights) <= 0:
        raise ValueError('stage_fusion_weights must not all be 0')
    if not -num_stages <= diversity_stage < num_stages:
        raise ValueError(f'diversity_stage={diversity_stage} is out of '
                         f'range for {num_stages} stages')
    if warmup_iters < 0:
        raise ValueError(f'warmup_iters must be >= 0, got {warmup_iters}')
    if logit_scale_init <= 0:
        raise ValueError('logit_scale_init must be > 0, got '
                         f'{logit_scale_init}')
    return loss_weights, fusion_weights
