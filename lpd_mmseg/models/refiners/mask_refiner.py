"""LPD's optional mask refiner: contrastive foreground/background loss.

For a prototype that fires on an image (its class is labelled and its score
beats the class's merged score), its CAM splits the image into a foreground
``cam * img * mask`` and a background ``(1 - cam) * img * (1 - mask)``
(``mask`` = CAM above half its maximum).  A frozen image encoder embeds
both; InfoNCE pulls the foreground embedding to the prototype and pushes it
from the others, and pushes the background embedding from the prototype.
A small penalty on the mean CAM keeps the foreground from growing to the
whole image.  The reference code uses MedCLIP as the frozen encoder; here it
is any registry backbone (with an optional checkpoint) or a momentum copy of
the model's own backbone, taken when the refiner first runs (the end of the
head's warm-up) and then updated by EMA.
"""
import copy
from typing import Dict, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmseg.registry import MODELS
from torch import Tensor

from ..utils.prototype_ops import normalize_cams


def select_firing_prototypes(scores: Tensor, class_scores: Tensor,
                             labels: Tensor, k: int,
                             max_pairs: Optional[int] = None) -> Tensor:
    """(image, prototype) pairs that qualify for refinement.

    A pair qualifies when the prototype's class is labelled and the
    prototype's score exceeds its class's merged score.  With ``max_pairs``
    the pairs with the largest margin are kept.

    Args:
        scores (Tensor): ``(B, C*k)`` prototype scores.
        class_scores (Tensor): ``(B, C)`` merged class scores.
        labels (Tensor): ``(B, C)`` multi-hot labels.

    Returns:
        Tensor: ``(N, 2)`` int64 rows ``(image, prototype)``.
    """
    margin = scores - class_scores.repeat_interleave(k, dim=1)
    ok = (labels.repeat_interleave(k, dim=1) > 0) & (margin > 0)
    pairs = ok.nonzero()
    if max_pairs is not None and pairs.shape[0] > max_pairs:
        order = margin[pairs[:, 0], pairs[:, 1]].argsort(descending=True)
        pairs = pairs[order[:max_pairs]]
    return pairs


def foreground_background(images: Tensor, cams: Tensor,
                          threshold: float = 0.5):
    """Split images by CAMs.

    Args:
        images (Tensor): ``(N, 3, H, W)``.
        cams (Tensor): ``(N, 1, H, W)`` in ``[0, 1]``.
        threshold (float): mask = CAM above ``threshold * max``.

    Returns:
        tuple: ``(cam * img * mask, (1 - cam) * img * (1 - mask))``.
    """
    peak = cams.flatten(1).amax(dim=1).reshape(-1, 1, 1, 1)
    mask = (cams > threshold * peak).to(cams.dtype).detach()
    return cams * images * mask, (1 - cams) * images * (1 - mask)


def contrastive_terms(fg: Tensor, bg: Tensor, prototypes: Tensor,
                      targets: Tensor, temperature: float = 0.07):
    """InfoNCE over all prototypes.

    Args:
        fg (Tensor): ``(N, D)`` foreground embeddings.
        bg (Tensor): ``(N, D)`` background embeddings.
        prototypes (Tensor): ``(P, D)``.
        targets (Tensor): ``(N,)`` selected prototype indices.

    Returns:
        tuple: foreground loss ``-log p_target(fg)`` and background loss
        ``-log(1 - p_target(bg))``, each averaged over ``N``.
    """
    protos = F.normalize(prototypes.float(), dim=1)
    fg_logits = F.normalize(fg.float(), dim=1) @ protos.T / temperature
    bg_logits = F.normalize(bg.float(), dim=1) @ protos.T / temperature
    fg_loss = F.cross_entropy(fg_logits, targets)
    bg_log_p = F.log_softmax(bg_logits, dim=1)
    others = bg_log_p.clone()
    others[torch.arange(len(targets)), targets] = float('-inf')
    bg_loss = -torch.logsumexp(others, dim=1).mean()
    return fg_loss, bg_loss


@torch.no_grad()
def momentum_update(target: nn.Module, source: nn.Module,
                    momentum: float) -> None:
    """``target = momentum * target + (1 - momentum) * source`` for
    parameters; buffers are copied."""
    for t, s in zip(target.parameters(), source.parameters()):
        t.mul_(momentum).add_(s.detach(), alpha=1 - momentum)
    for t, s in zip(target.buffers(), source.buffers()):
        t.copy_(s)


@MODELS.register_module()
class MaskRefiner(nn.Module):
    """Contrastive mask refiner (optional LPD module).

    Args:
        encoder (str | dict): ``'ema'`` for a momentum copy of the model's
            own backbone (no external weights needed): at the first step on
            which the refiner runs (the first iteration after the head's
            ``warmup_iters``) it is a copy of the backbone as trained up to
            then, not of its pre-trained weights (unless
            ``warmup_iters=0``); every later step moves it towards the
            backbone by EMA.  Or a backbone config from the registry, e.g.
            ``dict(type='ResNetV1c', depth=18, init_cfg=dict(
            type='Pretrained', checkpoint=URL))``, initialised by
            :meth:`init_weights`.  Frozen either way: no gradient, no
            optimizer state.
        embed_channels (int, optional): width of the encoder's last output,
            needed for an external encoder whose width differs from the
            head's last stage (a learnable linear map then projects it; it
            gets a zero gradient on steps without refiner losses, so DDP
            needs no ``find_unused_parameters``).
        momentum (float): EMA momentum for ``encoder='ema'``.  Default 0.999.
        temperature (float): InfoNCE temperature.  Default 0.07.
        loss_weight (float): weight of the contrastive terms.  Default 0.1.
        size_weight (float): weight of the mean-CAM penalty.  Default 5e-4.
        cam_threshold (float): foreground mask threshold relative to the
            CAM maximum.  Default 0.5.
        max_pairs (int, optional): most (image, prototype) pairs refined per
            batch, the largest score margins first.  Default 8.
    """

    def __init__(self,
                 encoder: Union[str, dict] = 'ema',
                 embed_channels: Optional[int] = None,
                 momentum: float = 0.999,
                 temperature: float = 0.07,
                 loss_weight: float = 0.1,
                 size_weight: float = 5e-4,
                 cam_threshold: float = 0.5,
                 max_pairs: Optional[int] = 8):
        super().__init__()
        if not 0 <= momentum < 1:
            raise ValueError(f'momentum must be in [0, 1), got {momentum}')
        if temperature <= 0:
            raise ValueError(f'temperature must be > 0, got {temperature}')
        if not 0 < cam_threshold < 1:
            raise ValueError('cam_threshold must be in (0, 1), got '
                             f'{cam_threshold}')
        if encoder != 'ema' and not isinstance(encoder, dict):
            raise TypeError("encoder must be 'ema' or a backbone config "
                            f'dict, got {encoder!r}')
        self.use_ema = encoder == 'ema'
        self.encoder_cfg = None if self.use_ema else dict(encoder)
        self.embed_channels = embed_channels
        self.momentum = momentum
        self.temperature = temperature
        self.loss_weight = loss_weight
        self.size_weight = size_weight
        self.cam_threshold = cam_threshold
        self.max_pairs = max_pairs
        self.encoder = None if self.use_ema else MODELS.build(encoder)
        self.adapter = None
        self.register_buffer('ema_ready', torch.zeros((), dtype=torch.bool))
        if self.encoder is not None:
            self._freeze(self.encoder)

    @staticmethod
    def _freeze(module: nn.Module) -> None:
        for p in module.parameters():
            p.requires_grad_(False)
        module.eval()

    def build(self, backbone: nn.Module, stage_channels: int) -> None:
        """Create what depends on the model: the EMA encoder's module (its
        weights are meaningless until :meth:`sync_encoder` first copies the
        backbone) and the projection to the head's last-stage width."""
        if self.use_ema:
            self.encoder = copy.deepcopy(backbone)
            # Overwritten by the backbone, as trained by then, at the first
            # refinement step (after warm-up); fetching the pre-trained
            # checkpoint for it is pointless.
            self.encoder.init_cfg = None
            self._freeze(self.encoder)
        width = self.embed_channels or stage_channels
        if width != stage_channels:
            self.adapter = nn.Linear(width, stage_channels)

    def init_weights(self) -> None:
        """Initialise an external encoder from its ``init_cfg`` (e.g. a
        ``Pretrained`` checkpoint) and freeze it again.

        The segmentor's ``BaseModule.init_weights`` calls this; it does not
        descend into this plain ``nn.Module`` by itself.  The EMA encoder is
        left alone: :meth:`sync_encoder` overwrites it.
        """
        if self.use_ema:
            return
        if hasattr(self.encoder, 'init_weights'):
            self.encoder.init_weights()
        self._freeze(self.encoder)

    def zero_term(self) -> Optional[Tensor]:
        """``0 * sum`` of the refiner's learnable parameters (the adapter),
        or None when it has none.

        Added to the losses on steps without refinement (warm-up, no
        qualifying prototype) so that those parameters still get a (zero)
        gradient: DDP without ``find_unused_parameters`` fails otherwise.
        """
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            return None
        return sum(p.sum() for p in params) * 0.0

    def train(self, mode: bool = True):
        super().train(mode)
        if self.encoder is not None:
            self.encoder.eval()  # frozen: BN statistics never update
        return self

    def sync_encoder(self, backbone: nn.Module) -> None:
        """EMA step towards ``backbone``.

        The first call (the first refinement step, i.e. the first iteration
        after the head's warm-up) copies the backbone as trained up to then;
        later calls apply ``momentum``.  No-op for an external encoder.
        """
        if not self.use_ema:
            return
        if not bool(self.ema_ready):
            momentum_update(self.encoder, backbone, 0.0)
            self.ema_ready.fill_(True)
        else:
            momentum_update(self.encoder, backbone, self.momentum)

    def embed(self, images: Tensor) -> Tensor:
        feats = self.encoder(images)
        last = feats[-1] if isinstance(feats, (list, tuple)) else feats
        pooled = last.mean(dim=(2, 3))
        return self.adapter(pooled) if self.adapter is not None else pooled

    def loss(self, images: Tensor, evidence, labels: Tensor,
             backbone: nn.Module) -> Dict[str, Tensor]:
        """Refinement losses for one batch.

        Args:
            images (Tensor): ``(B, 3, H, W)`` network inputs.
            evidence: the head's last stage,
                :class:`~lpd_mmseg.models.decode_heads.lpd_head.\
PrototypeEvidence` (``LPDHead.prototype_evidence``).
            labels (Tensor): ``(B, C)``.
            backbone: the model's backbone (for the EMA encoder).
        """
        self.sync_encoder(backbone)
        logit_map = evidence.logit_map
        pairs = select_firing_prototypes(
            evidence.prototype_scores.detach(),
            evidence.class_scores.detach(), labels,
            evidence.num_prototypes, self.max_pairs)
        zero = logit_map.sum() * 0.0
        if pairs.shape[0] == 0:
            anchor = self.zero_term()
            if anchor is not None:
                zero = zero + anchor
            return dict(loss_refine=zero, loss_cam_size=zero)
        maps = logit_map[pairs[:, 0], pairs[:, 1]][:, None]
        cams = F.interpolate(normalize_cams(maps), size=images.shape[2:],
                             mode='bilinear', align_corners=False)
        fg, bg = foreground_background(images[pairs[:, 0]], cams,
                                       self.cam_threshold)
        fg_loss, bg_loss = contrastive_terms(
            self.embed(fg), self.embed(bg), evidence.prototypes,
            pairs[:, 1], self.temperature)
        return dict(
            loss_refine=self.loss_weight * (fg_loss + bg_loss),
            loss_cam_size=self.size_weight * cams.mean())
