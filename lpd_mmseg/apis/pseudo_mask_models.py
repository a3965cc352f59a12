"""How a segmentor turns a preprocessed batch into pseudo-masks.

Two kinds of model label the training patches (:mod:`.pseudo_masks` runs
the loop and writes the files):

- an LPD segmentor, through its one post-processing path
  (:class:`~lpd_mmseg.models.postprocess.LPDPostProcessor`: fused CAMs,
  class gating, background channel, optional CRF);
- a plain segmentor whose last class is background (a trained second
  stage, for a further round of self-training): its scores, argmax over
  background and the gated-in classes, no CRF, no predicted gate.
"""
from typing import List, Optional, Tuple

import numpy as np
from torch import Tensor

#: ``--crf`` choices of a pseudo-mask run.
CRF_CHOICES = ('none', 'torch', 'pydensecrf')


def labelled_argmax(seg_logits: Tensor, gate: Tensor) -> Tensor:
    """Argmax over the gated-in tissue channels and background, for one
    image (:func:`~lpd_mmseg.models.gating.gated_argmax`).

    Args:
        seg_logits (Tensor): ``(C + 1, H, W)`` scores (any monotone scale).
        gate (Tensor): ``(C,)`` 0/1 class presence.

    Returns:
        Tensor: ``(H, W)`` int64 mask with values in ``0..C``.
    """
    from ..models.gating import gated_argmax
    gate = gate.reshape(1, -1).to(seg_logits.device)
    return gated_argmax(seg_logits[None], gate)[0]


def is_lpd_segmentor(model) -> bool:
    """True for an LPD segmentor (CAMs + class probabilities through the
    one post-processing path); False for a plain MMSeg segmentor such as
    the second stage's ``EncoderDecoder``."""
    return all(hasattr(model, attr)
               for attr in ('post_processor', 'inference', 'restore_result'))


def _check_model(model, dataset) -> Tuple[int, List[str], list]:
    """Tissue class count, class names and palette; refuses models that
    are neither LPD nor a plain segmentor, and class-count mismatches.

    A plain segmentor (e.g. the second stage) predicts ``C + 1`` values,
    the last one background, so it has ``decode_head.num_classes - 1``
    tissue classes."""
    if is_lpd_segmentor(model):
        num_classes = model.decode_head.num_classes
    elif hasattr(model, 'predict') and hasattr(model, 'decode_head'):
        num_classes = model.decode_head.num_classes - 1
    else:
        raise TypeError(
            'pseudo-masks need an LPD segmentor (LPDEncoderDecoder, e.g. '
            'from configs/lpd/) or a segmentor predicting the tissue '
            'classes + background (e.g. configs/second_stage/); got '
            f'{type(model).__name__}')
    ds_classes = list(dataset.metainfo.get('classes', ()))
    if ds_classes and len(ds_classes) != num_classes + 1:
        raise ValueError(
            f'the model has {num_classes} tissue classes but the data set '
            f'{type(dataset).__name__} has classes {tuple(ds_classes)} '
            f'({len(ds_classes) - 1} tissue classes + background)')
    meta = getattr(model, 'dataset_meta', None) or {}
    classes = list(meta.get('classes') or ds_classes)
    palette = meta.get('palette') or dataset.metainfo.get('palette')
    if not palette or len(palette) < num_classes + 1:
        raise ValueError(
            f'need a palette of {num_classes + 1} colours (tissue classes + '
            "background) in model.dataset_meta['palette'], got "
            f'{palette!r}')
    if len(classes) != num_classes + 1:
        classes = [f'class{i}' for i in range(num_classes)] + ['background']
    return num_classes, [str(c) for c in classes], \
        [list(map(int, c)) for c in palette[:num_classes + 1]]


def _check_plain_settings(gate: str, crf: Optional[str]) -> None:
    """A plain segmentor has no image-level class probabilities and no
    post-processing path: refuse the settings that need them."""
    if gate == 'predicted':
        raise ValueError(
            "gate 'predicted' needs the image-level class probabilities of "
            'an LPD model; this segmentor predicts pixels only. Use '
            "gate 'labels' (training split) or 'none'.")
    if crf not in (None, 'none'):
        raise ValueError(
            f'crf {crf!r}: the dense CRF runs in the LPD post-processing '
            'path; a plain segmentor\'s pseudo-masks take crf none')


def _post_processor(model, crf: Optional[str]):
    """The model's post-processor, with the CRF a ``--crf`` choice asks
    for (None keeps the config's), and the backend's name."""
    from ..models.crf import build_crf
    current = model.test_cfg.get('crf')
    if crf is None:
        new = current
    elif crf not in CRF_CHOICES:
        raise ValueError(f'crf must be one of {CRF_CHOICES} or None, got '
                         f'{crf!r}')
    elif crf == 'none':
        new = None
    else:
        new = dict(current or {})
        new['backend'] = crf
    post = model.post_processor
    if crf is not None:  # fails early, e.g. without pydensecrf
        post = post.replace(crf=build_crf(new))
    return post, post.crf.backend if post.crf is not None else 'none'


def _batch_masks(model, post, inputs: Tensor, samples,
                 gate: str) -> List[np.ndarray]:
    """Pseudo-masks ``(H0, W0)`` of a preprocessed batch, through the
    model's one post-processing path."""
    raw = model.inference(inputs, [s.metainfo for s in samples])
    restored = model.restore_result(
        raw, samples, inputs if post.needs_image else None)
    masks = []
    for sample, maps in zip(samples, restored):
        label = sample.gt_image_label if 'gt_image_label' in sample \
            else None
        image = None if maps.image is None else maps.image[None]
        _, mask = post(maps.cams[None], maps.class_probs[None], gate, image,
                       labels=[label],
                       names=[sample.metainfo.get('img_path')],
                       peaks=maps.peaks[None])
        masks.append(mask[0].cpu().numpy())
    return masks


def _plain_batch_masks(model, inputs: Tensor, samples,
                       gate: str) -> List[np.ndarray]:
    """Pseudo-masks ``(H0, W0)`` of a preprocessed batch from a plain
    segmentor: its scores at the original size (``predict``), argmax over
    background and, with ``gate='labels'``, the labelled tissue classes
    only."""
    from ..models.gating import resolve_gate
    results = model.predict(inputs, samples)
    masks = []
    for sample, result in zip(samples, results):
        scores = result.seg_logits.data  # (C + 1, H0, W0)
        label = sample.gt_image_label if 'gt_image_label' in sample \
            else None
        row = resolve_gate(gate, scores.new_zeros(1, scores.shape[0] - 1),
                           labels=[label],
                           names=[sample.metainfo.get('img_path')])
        if row is None:
            masks.append(scores.argmax(dim=0).cpu().numpy())
        else:
            masks.append(labelled_argmax(scores, row[0]).cpu().numpy())
    return masks
