import inspect
import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.registry import MODELS
from torch import Tensor

from ..utils.config_checks import check_choice, reject_unknown_keys
from ..utils.prototype_ops import (
    REGION_RULES,
    cosine_similarity_maps,
    global_average_pool,
    merge_prototypes,
    normalize_cams,
    region_cams,
    region_mask_from_cams,
    region_pairs,
)
from .head_inference import LPDInferenceMixin
from .head_parts import (
    PrototypeEvidence,
    StageProjection,
    StageSimilarities,
    check_head_args,
    current_train_iter,
)

MAX_LOGIT_SCALE = 100.0


@MODELS.register_module()
class LPDHead(LPDInferenceMixin, BaseDecodeHead):
    """Learnable prototypes with diversity regularisation (LPD).

    A weakly supervised decode head: it is trained with image-level
    multi-hot labels only (``data_sample.gt_image_label``) and predicts
    pixel-level tissue maps from prototype class activation maps (CAMs).
    Le et al., "LPD: Learnable Prototypes with Diversity Regularization for
    Weakly Supervised Histopathology Segmentation", arXiv 2512.05922, 2025.

    ``num_classes * k`` learnable prototypes of width ``D`` are shared by all
    stages; a per-stage MLP projects them to the stage's channel width.  A
    pixel's response to a prototype is the cosine similarity of the two,
    times a learnable per-stage logit scale.  Global average pooling gives a
    score per prototype; the ``k`` scores of a class merge into its logit
    (mean in training, soft maximum ``sum_j softmax(s)_j s_j`` at test).
    Training: multi-label BCE per stage, plus (after ``warmup_iters``) the
    diversity loss on the class regions of a pseudo-mask computed without
    gradient from the head's own CAMs.  Inference: per-stage merged CAMs,
    ReLU, min-max normalisation, weighted fusion, class gating and a
    background channel ``(1 - max) ** background_alpha``.

    Args:
        in_channels (Sequence[int]): channels of each used backbone stage.
        num_classes (int): number of tissue classes ``C`` (background is not
            a class here; the output adds it as channel ``C``).
        num_prototypes (int): prototypes per class ``k``.  Default 10.
        prototype_dim (int): prototype width ``D``.  Default 512.
        in_index (Sequence[int]): backbone outputs used.  Default
            ``(1, 2, 3)``: MiT stages 2-4 (the paper's stage-1 weight is 0).
        stage_loss_weights (Sequence[float]): classification loss weight per
            used stage.  Default ``(0.1, 1.0, 1.0)``.
        stage_fusion_weights (Sequence[float]): CAM fusion weight per used
            stage at inference.  Default ``(0.3, 0.3, 0.4)``.
        logit_scale_init (float): initial per-stage logit scale.  Default
            ``1 / 0.07``.
        learn_logit_scale (bool): learn the scales (stored as logs, capped at
            100).  Default True.
        train_merge (str): ``'mean'``, ``'softmax'`` or ``'max'``.  Default
            ``'mean'``.
        test_merge (str): same choices, for the CAMs at inference.
            Default ``'softmax'``.
        prob_merge (str, optional): merge of the last stage's prototype
            scores whose sigmoid gives the class probabilities used for
            ``gate='predicted'``; None uses ``train_merge`` (the merge the
            BCE was trained on).  Default ``'softmax'``, the paper's
            test-time class score (on the demo checkpoint: honest mIoU 39.5
            with it, 36.8 with ``'mean'``).
        prototype_mode (str): ``'learnable'`` (LPD) or ``'frozen_bank'``:
            per-stage prototypes are fixed buffers filled by k-means
            (``PrototypeBankHook``), the clustering-bank baseline.
        loss_decode (dict): classification loss.  Default
            ``MultiLabelBCELoss`` named ``loss_cls``.
        loss_diversity (dict, optional): diversity loss, e.g.
            ``JeffreysDiversityLoss`` (default, weight 0.5) or
            ``CorrelationDiversityLoss``; None disables it.
        diversity_stage (int): which used stage (index into ``in_index``)
            the diversity loss is computed on.  Default -1 (the last).
        region_labels_only (bool): let only the image's labelled classes
            compete in the pseudo-mask.  Default True.
        region_rule (str): class maps of that pseudo-mask: ``'relu'``
            (the inference CAMs; a labelled class whose map is still
            negative everywhere gets no region) or ``'minmax'`` (no ReLU:
            every labelled class gets the pixels where it is relatively
            strongest), see
            :func:`~lpd_mmseg.models.utils.prototype_ops.region_cams`.
            Default ``'relu'``.  The number of (image, class) pairs that
            received the loss is logged as ``div_pairs``.
        diversity_input (str): similarities the diversity loss compares:
            ``'projected'`` (the stage's prototype projections, the CAMs)
            or ``'raw'`` (the raw prototypes against the raw stage
            features, as the reference code does; needs
            ``prototype_dim`` equal to that stage's width).  Default
            ``'projected'``.
        warmup_iters (int): training iterations with the classification loss
            alone; the diversity loss switches on at this iteration, read
            from the training loop (mmengine's message hub).  Outside a
            training loop no iteration is known and the extra losses stay
            off unless ``warmup_iters=0``.  Default 3000.
        background_alpha (float): exponent of the background channel, used
            for inference and for the training pseudo-mask.  Default 10.
        prototype_init_std (float): std of the normal prototype init.
            Default 1.0.
        align_corners (bool): for resizing CAMs.  Default False.
        init_cfg (dict, optional): mmengine init config.

    Inference options are read from the segmentor's ``test_cfg``:
    ``gate`` (``'predicted'`` default, ``'none'``; ``'oracle'`` needs
    :class:`LPDEncoderDecoder`), ``gate_threshold`` (default 0.5).
    """

    def __init__(self,
                 in_channels: Sequence[int],
                 num_classes: int,
                 num_prototypes: int = 10,
                 prototype_dim: int = 512,
                 in_index: Sequence[int] = (1, 2, 3),
                 stage_loss_weights: Sequence[float] = (0.1, 1.0, 1.0),
                 stage_fusion_weights: Sequence[float] = (0.3, 0.3, 0.4),
                 logit_scale_init: float = 1 / 0.07,
                 learn_logit_scale: bool = True,
                 train_merge: str = 'mean',
                 test_merge: str = 'softmax',
                 prob_merge: Optional[str] = 'softmax',
                 prototype_mode: str = 'learnable',
                 loss_decode: dict = dict(
                     type='MultiLabelBCELoss',
                     loss_weight=1.0,
                     loss_name='loss_cls'),
                 loss_diversity: Optional[dict] = dict(
                     type='JeffreysDiversityLoss', loss_weight=0.5),
                 diversity_stage: int = -1,
                 region_labels_only: bool = True,
                 region_rule: str = 'relu',
                 diversity_input: str = 'projected',
                 warmup_iters: int = 3000,
                 background_alpha: float = 10.0,
                 prototype_init_std: float = 1.0,
                 align_corners: bool = False,
                 init_cfg: Optional[dict] = None,
                 **kwargs):
        reject_unknown_keys(
            'LPDHead', kwargs,
            set(inspect.signature(LPDHead.__init__).parameters) -
            {'self', 'kwargs'})
        in_channels, in_index = list(in_channels), list(in_index)
        num_stages = len(in_index)
        loss_weights, fusion_weights = check_head_args(
            in_channels=in_channels, in_index=in_index,
            num_classes=num_classes, num_prototypes=num_prototypes,
            prototype_dim=prototype_dim, train_merge=train_merge,
            test_merge=test_merge, prob_merge=prob_merge,
            prototype_mode=prototype_mode,
            stage_loss_weights=stage_loss_weights,
            stage_fusion_weights=stage_fusion_weights,
            diversity_stage=diversity_stage, warmup_iters=warmup_iters,
            logit_scale_init=logit_scale_init)

        super().__init__(
            in_channels=in_channels,
            channels=prototype_dim,
            num_classes=num_classes,
            in_index=in_index,
            input_transform='multiple_select',
            loss_decode=loss_decode,
            dropout_ratio=0,
            align_corners=align_corners,
            init_cfg=init_cfg)
        # The base class builds a 1x1 classifier that LPD does not use; an
        # unused parameter would break DistributedDataParallel.
        del self.conv_seg
        self.out_channels = num_classes + 1  # tissue classes + background

        self.num_prototypes = num_prototypes
        self.prototype_dim = prototype_dim
        self.num_stages = num_stages
        self.stage_loss_weights = loss_weights
        self.stage_fusion_weights = fusion_weights
        self.train_merge = train_merge
        self.test_merge = test_merge
        self.prob_merge = prob_merge or train_merge
        self.prototype_mode = prototype_mode
        self.diversity_stage = diversity_stage % num_stages
        self.region_labels_only = region_labels_only
        check_choice('region_rule', region_rule, REGION_RULES)
        check_choice('diversity_input', diversity_input,
                     ('projected', 'raw'))
        if diversity_input == 'raw' and (
                prototype_mode != 'learnable'
                or prototype_dim != in_channels[self.diversity_stage]):
            raise ValueError(
                "diversity_input='raw' compares the raw prototypes with the "
                'raw stage features, so it needs learnable prototypes and '
                f'prototype_dim ({prototype_dim}) equal to the width of the '
                'diversity stage '
                f'({in_channels[self.diversity_stage]})')
        self.region_rule = region_rule
        self.diversity_input = diversity_input
        self.warmup_iters = warmup_iters
        self.background_alpha = float(background_alpha)

        num_protos = num_classes * num_prototypes
        if prototype_mode == 'learnable':
            self.prototypes = nn.Parameter(
                torch.randn(num_protos, prototype_dim) * prototype_init_std)
            self.projections = nn.ModuleList(
                StageProjection(prototype_dim, c) for c in in_channels)
        else:
            for i, c in enumerate(in_channels):
                self.register_buffer(f'bank_{i}', torch.zeros(num_protos, c))
            self.register_buffer('bank_ready',
                                 torch.zeros((), dtype=torch.bool))
        log_scale = torch.full((num_stages, ), math.log(logit_scale_init))
        if learn_logit_scale:
            self.log_logit_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer('log_logit_scale', log_scale)
        self.loss_diversity = (
            MODELS.build(loss_diversity) if loss_diversity else None)

    # ----------------------------------------------------------- prototypes
    def stage_prototypes(self, stage: int) -> Tensor:
        """Prototypes of one used stage, ``(num_classes * k, C_stage)``."""
        if self.prototype_mode == 'learnable':
            return self.projections[stage](self.prototypes)
        if not bool(self.bank_ready):
            raise RuntimeError(
                "LPDHead(prototype_mode='frozen_bank') has no prototype bank "
                'yet: add PrototypeBankHook to custom_hooks, or load a '
                'checkpoint that holds one')
        return getattr(self, f'bank_{stage}')

    def set_prototype_bank(self, banks: Sequence[Tensor]) -> None:
        """Fill the frozen bank: one ``(num_classes * k, C_i)`` per stage."""
        if self.prototype_mode != 'frozen_bank':
            raise RuntimeError("set_prototype_bank needs prototype_mode="
                               "'frozen_bank'")
        if len(banks) != self.num_stages:
            raise ValueError(f'expected {self.num_stages} banks, got '
                             f'{len(banks)}')
        for i, bank in enumerate(banks):
            buffer = getattr(self, f'bank_{i}')
            if tuple(bank.shape) != tuple(buffer.shape):
                raise ValueError(f'bank {i} has shape {tuple(bank.shape)}, '
                                 f'expected {tuple(buffer.shape)}')
            buffer.copy_(bank.to(buffer))
        self.bank_ready.fill_(True)

    def logit_scales(self) -> Tensor:
        return self.log_logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    # -------------------------------------------------------------- forward
    def forward(self, inputs: Sequence[Tensor]) -> List[Tensor]:
        """Cosine similarity maps of every used stage.

        Args:
            inputs (list[Tensor]): backbone outputs.

        Returns:
            list[Tensor]: per used stage ``(B, num_classes * k, H_i, W_i)``.
        """
        feats = self._transform_inputs(inputs)
        for i, feat in enumerate(feats):
            if feat.shape[1] != self.in_channels[i]:
                raise ValueError(
                    f'backbone output {self.in_index[i]} has '
                    f'{feat.shape[1]} channels but LPDHead.in_channels[{i}] '
                    f'is {self.in_channels[i]}; set in_channels to the '
                    'backbone\'s stage widths')
        return [
            cosine_similarity_maps(feat, self.stage_prototypes(i))
            for i, feat in enumerate(feats)
        ]

    def stage_logit_maps(self, similarities: Sequence[Tensor]) -> List[Tensor]:
        """Similarity maps times each stage's logit scale."""
        scales = self.logit_scales()
        return [sim * scales[i].to(sim.dtype)
                for i, sim in enumerate(similarities)]

    def class_logits(self, logit_map: Tensor, merge: str) -> Tensor:
        """``(B, C*k, H, W)`` -> class logits ``(B, C)``."""
        return merge_prototypes(global_average_pool(logit_map),
                                self.num_prototypes, merge)

    def class_cams(self, logit_map: Tensor, merge: str) -> Tensor:
        """Normalised class CAMs ``(B, C, H, W)`` in ``[0, 1]``."""
        return normalize_cams(
            merge_prototypes(logit_map, self.num_prototypes, merge))

    # ----------------------------------------------------------------- loss
    @staticmethod
    def stack_image_labels(batch_data_samples) -> Tensor:
        labels = []
        for i, sample in enumerate(batch_data_samples):
            if 'gt_image_label' not in sample:
                raise KeyError(
                    f'sample {i} ({sample.metainfo.get("img_path")}) has no '
                    'gt_image_label; the training pipeline must end with '
                    'PackWeakSegInputs on a weakly labelled data set')
            labels.append(sample.gt_image_label)
        return torch.stack(labels).float()

    def extra_losses_active(self) -> bool:
        """True once the training loop has passed ``warmup_iters``."""
        if self.warmup_iters == 0:
            return True
        it = current_train_iter()
        return it is not None and it >= self.warmup_iters

    def loss_by_feat(self, seg_logits: Sequence[Tensor],
                     batch_data_samples) -> Dict[str, Tensor]:
        """Losses from ``seg_logits``, the :meth:`forward` similarity maps
        (per stage ``(B, C*k, H_i, W_i)``), and the samples'
        ``gt_image_label`` ``(C,)``: mmseg's ``BaseDecodeHead`` signature,
        called by its ``loss()``."""
        similarities = seg_logits
        labels = self.stack_image_labels(batch_data_samples).to(
            similarities[-1].device)
        if labels.shape[1] != self.num_classes:
            raise ValueError(
                f'image labels have {labels.shape[1]} classes but the head '
                f'has num_classes={self.num_classes}')
        logit_maps = self.stage_logit_maps(similarities)
        losses = {}
        name = self.loss_decode.loss_name
        for i, logit_map in enumerate(logit_maps):
            logits = self.class_logits(logit_map, self.train_merge)
            stage = self.in_index[i] + 1
            losses[f'{name}_s{stage}'] = (self.stage_loss_weights[i] *
                                          self.loss_decode(logits, labels))
        with torch.no_grad():
            last = self.class_logits(logit_maps[-1], self.train_merge)
            losses['acc_cls'] = ((last > 0).float() == labels).float().mean()
        if self.loss_diversity is not None and self.extra_losses_active():
            similarity = getattr(seg_logits, 'raw_diversity', None)
            if similarity is None:
                similarity = similarities[self.diversity_stage]
            loss, pairs = self.diversity_loss(
                similarity, logit_maps[self.diversity_stage], labels)
            losses[self.loss_diversity.loss_name] = loss
            losses['div_pairs'] = pairs.float()
        return losses

    def loss(self, inputs: Sequence[Tensor], batch_data_samples,
             train_cfg=None) -> Dict[str, Tensor]:
        """``BaseDecodeHead.loss``; with ``diversity_input='raw'`` the
        similarities also carry (attribute ``raw_diversity``) the raw
        prototypes' cosine maps on the diversity stage's features."""
        seg_logits = StageSimilarities(self.forward(inputs))
        if self.diversity_input == 'raw':
            feat = self._transform_inputs(inputs)[self.diversity_stage]
            seg_logits.raw_diversity = cosine_similarity_maps(
                feat, self.prototypes)
        return self.loss_by_feat(seg_logits, batch_data_samples)

    def prototype_evidence(self, inputs: Sequence[Tensor]
                           ) -> 'PrototypeEvidence':
        """What the mask refiner needs from the head: the last stage's
        logit maps, prototype and class scores (training merge) and
        prototypes."""
        last = self.num_stages - 1
        feat = self._transform_inputs(inputs)[last]
        prototypes = self.stage_prototypes(last)
        similarity = cosine_similarity_maps(feat, prototypes)
        logit_map = similarity * self.logit_scales()[last].to(
            similarity.dtype)
        return PrototypeEvidence(
            logit_map=logit_map,
            prototype_scores=global_average_pool(logit_map),
            class_scores=self.class_logits(logit_map, self.train_merge),
            prototypes=prototypes,
            num_prototypes=self.num_prototypes)

    def diversity_loss(self, similarity: Tensor, logit_map: Tensor,
                       labels: Tensor) -> Tuple[Tensor, Tensor]:
        """Diversity loss on the head's own pseudo-mask, and the number of
        (image, class) pairs that own pixels of it."""
        with torch.no_grad():
            cams = region_cams(merge_prototypes(
                logit_map.detach(), self.num_prototypes, self.train_merge),
                self.region_rule)
            region = region_mask_from_cams(
                cams, self.background_alpha,
                labels if self.region_labels_only else None)
        return (self.loss_diversity(similarity, region, self.num_classes),
                region_pairs(region, labels))
