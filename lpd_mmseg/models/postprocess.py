"""From fused CAMs to scores and a mask: the one post-processing path.

Every caller (the segmentor's ``predict``, test-time augmentation,
pseudo-masks, the benchmarks and slide inference) turns fused CAMs and
class evidence into a segmentation through :class:`LPDPostProcessor`:

1. gate (:func:`~lpd_mmseg.models.gating.resolve_gate`, one vocabulary)
   and, for the model's own evidence, class weights
   (:func:`~lpd_mmseg.models.gating.weigh_gate`, ``test_cfg.gate_rule``);
2. scores: gated CAMs plus the background channel ``(1 - max) ** alpha``
   (:func:`lpd_scores`);
3. optional tissue prior: background wins on bare glass
   (:mod:`~lpd_mmseg.models.tissue_prior`, ``test_cfg.tissue_prior``);
4. optional dense CRF on the original image (the ``crf`` callable built
   once from ``test_cfg.crf`` by :func:`build_crf`);
5. mask: argmax over the allowed channels
   (:func:`~lpd_mmseg.models.gating.gated_argmax`).
"""
import dataclasses
from typing import Callable, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .crf import build_crf
from .gating import (
    DEFAULT_GATE_RULE,
    GATE_RULES,
    GATE_SOURCES,
    check_gate_source,
    check_threshold,
    gated_argmax,
    resolve_gate,
    weigh_gate,
)
from .tissue_prior import (
    TissuePrior,
    apply_tissue_prior,
    build_tissue_prior,
    glass_mask,
)
from .utils.prototype_ops import add_background, gate_cams

#: ``crf(scores (C+1, H, W), image (3, H, W) 0..255, gate (C,) or
#: (C, H, W) or None) -> (C+1, H, W)`` log-probabilities
#: (:class:`~lpd_mmseg.models.crf.DenseCRF`).
CRF = Callable[[Tensor, Tensor, Optional[Tensor]], Tensor]


def lpd_scores(cams: Tensor, gate: Optional[Tensor], alpha: float) -> Tensor:
    """Gated tissue CAMs plus the background channel ``(1 - max) ** alpha``.

    Args:
        cams (Tensor): ``(B, C, H, W)`` fused CAMs in ``[0, 1]``.
        gate (Tensor, optional): ``(B, C)`` or ``(B, C, H, W)``.

    Returns:
        Tensor: ``(B, C + 1, H, W)``; softmax over dim 1 gives the class
        probabilities of the paper's inference, argmax the mask.
    """
    if gate is not None and gate.dim() == 2:
        gate = gate[:, :, None, None]
    if cams.requires_grad and torch.is_grad_enabled():
        return add_background(cams if gate is None else gate_cams(cams, gate),
                              alpha)
    batch, channels, height, width = cams.shape
    # Written into one preallocated tensor: on a whole-slide region every
    # (C, H, W) temporary costs hundreds of MB.
    out = cams.new_empty(batch, channels + 1, height, width)
    tissue = out[:, :channels]
    if gate is None:
        tissue.copy_(cams)
    else:
        torch.mul(cams, gate.to(cams.dtype), out=tissue)
    top = tissue.amax(dim=1, keepdim=True)
    torch.sub(1, top.clamp_(0, 1), out=out[:, channels:]).pow_(alpha)
    return out


@dataclasses.dataclass(frozen=True)
class LPDPostProcessor:
    """Fused CAMs + class evidence + gate source -> scores and mask.

    Built once per segmentor from its ``test_cfg``
    (:meth:`from_test_cfg`); callers that need another setting for one
    job (a pseudo-mask run with its own CRF, a benchmark comparing gates)
    pass the gate source per call or derive a copy with
    :meth:`replace`; nothing is changed in place.

    Args:
        gate (str): default gate source, one of
            :data:`~lpd_mmseg.models.gating.GATE_SOURCES`.
        gate_threshold (float): for ``gate='predicted'``.
        gate_rule (str): how the model's own evidence weighs the classes
            it lets through (``gate='predicted'`` or ``'none'``), one of
            :data:`~lpd_mmseg.models.gating.GATE_RULES`.
        background_alpha (float): exponent of the background channel.
        tissue_prior (TissuePrior, optional): background on bare glass.
        crf (callable, optional): see :data:`CRF`; None for no CRF.
        key (str): the settings' name in error messages.
    """
    gate: str = 'predicted'
    gate_threshold: float = 0.5
    gate_rule: str = DEFAULT_GATE_RULE
    background_alpha: float = 10.0
    tissue_prior: Optional[TissuePrior] = None
    crf: Optional[CRF] = None
    key: str = 'test_cfg'

    def __post_init__(self):
        check_gate_source(f'{self.key}.gate', self.gate)
        check_threshold(f'{self.key}.gate_threshold', self.gate_threshold)
        check_gate_source(f'{self.key}.gate_rule', self.gate_rule,
                          GATE_RULES)

    @property
    def needs_image(self) -> bool:
        """Whether a call must pass the images (CRF or tissue prior)."""
        return self.crf is not None or self.tissue_prior is not None

    @classmethod
    def from_test_cfg(cls, test_cfg, background_alpha: float,
                      gate_sources: Sequence[str] = GATE_SOURCES
                      ) -> 'LPDPostProcessor':
        """Read ``gate``, ``gate_threshold``, ``gate_rule``,
        ``tissue_prior`` and ``crf`` (parsed here, the only place) from a
        ``test_cfg`` mapping."""
        test_cfg = test_cfg or {}
        gate = test_cfg.get('gate', 'predicted')
        check_gate_source('test_cfg.gate', gate, gate_sources)
        return cls(gate=gate,
                   gate_threshold=test_cfg.get('gate_threshold', 0.5),
                   gate_rule=test_cfg.get('gate_rule', DEFAULT_GATE_RULE),
                   background_alpha=float(background_alpha),
                   tissue_prior=build_tissue_prior(
                       test_cfg.get('tissue_prior')),
                   crf=build_crf(test_cfg.get('crf')))

    def replace(self, **changes) -> 'LPDPostProcessor':
        """A copy with some fields changed (``crf=None`` drops the CRF)."""
        return dataclasses.replace(self, **changes)

    def __call__(self,
                 cams: Tensor,
                 class_probs: Tensor,
                 gate: Optional[str] = None,
                 images: Optional[Tensor] = None,
                 gt_masks: Optional[Sequence[Optional[Tensor]]] = None,
                 labels: Optional[Sequence[Optional[Tensor]]] = None,
                 names: Optional[Sequence[Optional[str]]] = None,
                 peaks: Optional[Tensor] = None
                 ) -> Tuple[Tensor, Tensor]:
        """Scores and mask of a batch.

        Args:
            cams (Tensor): ``(B, C, H, W)`` fused CAMs in ``[0, 1]``.
            class_probs (Tensor): ``(B, C)`` or ``(B, C, H, W)`` class
                probabilities (per pixel after tiling or TTA).
            gate (str, optional): gate source for this call; None uses
                :attr:`gate`.
            images (Tensor, optional): ``(B, 3, H, W)`` pixel values
                0..255, needed with a CRF or a tissue prior.
            gt_masks (list, optional): per image a mask, for ``'oracle'``.
            labels (list, optional): per image ``(C,)``, for ``'labels'``.
            names (list, optional): per image a path, for errors.
            peaks (Tensor, optional): ``(B, C)`` or ``(B, C, H, W)``
                relative CAM peaks, needed by the ``'peak'`` rules.

        Returns:
            tuple: ``scores (B, C + 1, H, W)`` (gated CAMs and background;
            log-probabilities after a CRF) and ``mask (B, H, W)`` int64
            with values ``0..C`` (``C`` = background).
        """
        source = self.gate if gate is None else gate
        class_gate = resolve_gate(source, class_probs, self.gate_threshold,
                                  gt_masks, labels, names,
                                  key=f'{self.key}.gate')
        if source in ('predicted', 'none'):
            class_gate = weigh_gate(self.gate_rule, class_gate, class_probs,
                                    peaks, key=f'{self.key}.gate_rule')
        scores = lpd_scores(cams, class_gate, self.background_alpha)
        if self.needs_image and images is None:
            what = 'crf' if self.crf is not None else 'tissue_prior'
            raise ValueError(f'{self.key}.{what} needs the image; none was '
                             'given')
        if self.tissue_prior is not None:
            scores = apply_tissue_prior(
                scores, glass_mask(images, self.tissue_prior))
        if self.crf is not None:
            scores = torch.stack([
                self.crf(scores[i], images[i],
                         None if class_gate is None else class_gate[i])
                for i in range(scores.shape[0])
            ])
        return scores, gated_argmax(scores, class_gate)
