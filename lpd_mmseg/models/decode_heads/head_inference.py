"""Inference half of :class:`~lpd_mmseg.models.decode_heads.LPDHead`:
fused CAMs and class evidence, and ``predict`` for a stock
``EncoderDecoder``."""
from typing import List, Sequence, Tuple

import torch
from torch import Tensor

from ..utils.prototype_ops import (
    fuse_stage_cams,
    merge_prototypes,
    normalize_cams,
    relative_peaks,
)


class LPDInferenceMixin:
    """Needs the head's ``forward``, ``stage_logit_maps``,
    ``class_logits`` and its merge/fusion settings."""

    @staticmethod
    def _output_size(batch_img_metas: List[dict]) -> Tuple[int, int]:
        meta = batch_img_metas[0]
        if isinstance(meta['img_shape'], torch.Size):
            return tuple(meta['img_shape'])
        if 'pad_shape' in meta:
            return tuple(meta['pad_shape'][:2])
        return tuple(meta['img_shape'][:2])

    def predict_cams(self, inputs: Sequence[Tensor],
                     size: Sequence[int]) -> Tuple[Tensor, Tensor]:
        """Fused CAMs ``(B, C, H, W)`` in ``[0, 1]`` at ``size`` and class
        probabilities ``(B, C)`` (:meth:`predict_evidence` without the
        peaks)."""
        return self.predict_evidence(inputs, size)[:2]

    def predict_evidence(self, inputs: Sequence[Tensor],
                         size: Sequence[int]) -> Tuple[Tensor, Tensor, Tensor]:
        """Fused tissue CAMs and the class evidence.

        Returns:
            tuple: ``cams (B, C, H, W)`` in ``[0, 1]`` at ``size``,
            ``class_probs (B, C)`` (sigmoid of the last stage's merged
            class logits) and ``peaks (B, C)``: each class's CAM peak
            before min-max normalisation relative to the image's strongest
            class, fused over stages like the CAMs
            (:func:`~lpd_mmseg.models.utils.prototype_ops.relative_peaks`).
        """
        logit_maps = self.stage_logit_maps(self.forward(inputs))
        merged = [merge_prototypes(m, self.num_prototypes, self.test_merge)
                  for m in logit_maps]
        weights = self.stage_fusion_weights
        cams = fuse_stage_cams([normalize_cams(m) for m in merged], weights,
                               size, self.align_corners) / sum(weights)
        peaks = sum(w * relative_peaks(m) for w, m in zip(weights, merged)
                    if w) / sum(weights)
        probs = torch.sigmoid(
            self.class_logits(logit_maps[-1], self.prob_merge).float())
        return cams, probs.to(cams.dtype), peaks.to(cams.dtype)

    def predict(self, inputs: Tuple[Tensor], batch_img_metas: List[dict],
                test_cfg) -> Tensor:
        """Scores ``(B, C + 1, H, W)`` (tissue classes, then background)
        for a stock ``EncoderDecoder``: the one post-processing path
        (:class:`~lpd_mmseg.models.postprocess.LPDPostProcessor`) with
        ``test_cfg.gate`` ``'predicted'`` or ``'none'``, its
        ``gate_rule``, and no CRF or tissue prior (those need the image,
        which only :class:`LPDEncoderDecoder` passes)."""
        from ..postprocess import LPDPostProcessor
        if (test_cfg or {}).get('gate') in ('oracle', 'labels'):
            raise ValueError(
                f"test_cfg.gate='{test_cfg['gate']}' reads the ground-truth "
                'mask or image label, which only LPDEncoderDecoder passes '
                "to the post-processing; use model=dict(type="
                "'LPDEncoderDecoder', ...)")
        post = LPDPostProcessor.from_test_cfg(
            dict(test_cfg or {}, crf=None, tissue_prior=None),
            self.background_alpha, gate_sources=('predicted', 'none'))
        cams, probs, peaks = self.predict_evidence(
            inputs, self._output_size(batch_img_metas))
        return post(cams, probs, peaks=peaks)[0]
