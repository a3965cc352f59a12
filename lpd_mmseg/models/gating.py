"""Class gating: which tissue classes may appear in an image's mask.

One vocabulary for every caller (``test_cfg.gate``, test-time
augmentation, pseudo-masks, tools):

- ``'predicted'``: the model's own class probabilities, a class is on where
  it reaches the threshold (the most probable class is always on); honest,
  needs nothing but the image;
- ``'oracle'``: the classes present in the ground-truth mask; only for
  comparing with published tables that gate this way;
- ``'labels'``: known image-level labels (``gt_image_label``), e.g. of a
  weakly labelled training patch, whose labels are the training data;
- ``'none'``: every class competes.

All functions are pure tensor functions.
"""
from numbers import Real
from typing import Optional, Sequence

import torch
from torch import Tensor

GATE_SOURCES = ('predicted', 'oracle', 'labels', 'none')
#: How the model's own evidence weighs the classes that its gate lets
#: through (:func:`weigh_gate`).
GATE_RULES = ('hard', 'prob', 'peak')
DEFAULT_GATE_RULE = 'hard'


def check_gate_source(key: str, value,
                      allowed: Sequence[str] = GATE_SOURCES) -> str:
    """Return ``value`` if it is one of ``allowed``; otherwise raise a
    ``ValueError`` that names ``key``, the value and the choices."""
    if value not in allowed:
        raise ValueError(f'{key} must be one of {tuple(allowed)}, got '
                         f'{value!r}')
    return value


def check_threshold(key: str, value) -> float:
    """A probability threshold in ``[0, 1]`` (bools and strings refused)."""
    if (isinstance(value, bool) or not isinstance(value, Real)
            or not 0 <= value <= 1):
        raise ValueError(f'{key} must be a probability in [0, 1], got '
                         f'{value!r}')
    return float(value)


def predicted_class_gate(class_probs: Tensor, threshold: float) -> Tensor:
    """Presence gate from predicted class probabilities.

    A class is on where its probability reaches ``threshold``; the most
    probable class is always on, so no pixel is left without a tissue
    candidate.

    Args:
        class_probs (Tensor): ``(B, C)`` or ``(B, C, H, W)``.

    Returns:
        Tensor: 0/1 of the same shape and dtype.
    """
    top = class_probs.amax(dim=1, keepdim=True)
    gate = class_probs >= top
    return gate.logical_or_(class_probs >= threshold).to(class_probs.dtype)


def present_classes(mask: Tensor, num_classes: int) -> Tensor:
    """``(C,)`` 0/1 float: which of the classes ``0..C-1`` occur in
    ``mask`` (any shape; other values, e.g. background or ignore, are not
    classes)."""
    values = torch.unique(mask)
    values = values[(values >= 0) & (values < num_classes)].long()
    gate = torch.zeros(num_classes, device=mask.device)
    gate[values] = 1
    return gate


def resolve_gate(source: str,
                 class_probs: Tensor,
                 threshold: float = 0.5,
                 gt_masks: Optional[Sequence[Optional[Tensor]]] = None,
                 labels: Optional[Sequence[Optional[Tensor]]] = None,
                 names: Optional[Sequence[Optional[str]]] = None,
                 key: str = 'gate') -> Optional[Tensor]:
    """The gate of a batch for one gate source.

    Args:
        source (str): one of :data:`GATE_SOURCES`.
        class_probs (Tensor): ``(B, C)`` or ``(B, C, H, W)`` class
            probabilities (used by ``'predicted'``; gives ``B`` and ``C``).
        threshold (float): for ``'predicted'``.
        gt_masks (list, optional): per image a ground-truth mask (any shape)
            or None; needed by ``'oracle'``.
        labels (list, optional): per image a ``(C,)`` multi-hot label or
            None; needed by ``'labels'``.
        names (list, optional): per image a name (path) for errors.
        key (str): the setting's name for errors, e.g. ``'test_cfg.gate'``.

    Returns:
        Tensor | None: ``(B, C)`` (or ``(B, C, H, W)`` for per-pixel
        probabilities with ``'predicted'``) 0/1 in ``class_probs``' dtype;
        None for ``'none'``.
    """
    check_gate_source(key, source)
    if source == 'none':
        return None
    if source == 'predicted':
        return predicted_class_gate(class_probs, threshold)
    batch, num_classes = class_probs.shape[:2]
    given = gt_masks if source == 'oracle' else labels
    given = list(given) if given is not None else [None] * batch
    names = list(names) if names is not None else [None] * batch
    if len(given) != batch:
        raise ValueError(f'{key}={source!r}: {len(given)} entries for a '
                         f'batch of {batch} images')
    rows = []
    for item, name in zip(given, names):
        what = name or 'this sample'
        if item is None and source == 'oracle':
            raise ValueError(
                f"{key}='oracle' takes class presence from the "
                f'ground-truth mask, but {what} has none; use '
                "gate='predicted' on data without masks")
        if item is None:
            raise ValueError(
                f"{key}='labels' takes the image-level label "
                f'(gt_image_label), but {what} has none; labels come from '
                'the file names of the weakly labelled training split. Use '
                "gate='predicted' for other images.")
        if source == 'oracle':
            rows.append(present_classes(item, num_classes))
            continue
        row = item.reshape(-1)
        if row.numel() != num_classes:
            raise ValueError(f'{what}: its label has {row.numel()} classes, '
                             f'the model {num_classes}')
        rows.append(row)
    return torch.stack(rows).to(class_probs)


def allowed_mask(gate: Optional[Tensor], shape: Sequence[int]
                 ) -> Optional[Tensor]:
    """Boolean ``(B, C + 1, H, W)``: the channels a pixel may take, i.e.
    the classes with a gate above 0 and, always, background (channel
    ``C``); None when ``gate`` is None.

    Args:
        gate (Tensor, optional): ``(B, C)`` or ``(B, C, H, W)``.
        shape: ``(B, C + 1, H, W)`` of the scores.
    """
    if gate is None:
        return None
    batch, channels, height, width = shape
    if gate.shape[1] != channels - 1:
        raise ValueError(f'gate has {gate.shape[1]} entries but the scores '
                         f'have {channels - 1} tissue channels '
                         '(+ background)')
    if gate.dim() == 2:
        gate = gate[:, :, None, None]
    allowed = torch.ones(batch, channels, height, width, dtype=torch.bool,
                         device=gate.device)
    allowed[:, :channels - 1] = (gate > 0).expand(batch, channels - 1,
                                                  height, width)
    return allowed


def gated_argmax(scores: Tensor, gate: Optional[Tensor]) -> Tensor:
    """Argmax over the allowed channels only (see :func:`allowed_mask`).

    This keeps the gate's promise even after a CRF, which can move
    probability onto channels that the gating had set to zero.

    Args:
        scores (Tensor): ``(B, C + 1, H, W)`` (any monotone scale).
        gate (Tensor, optional): ``(B, C)`` or ``(B, C, H, W)``; None
            allows every channel.

    Returns:
        Tensor: ``(B, H, W)`` int64 mask with values ``0..C``.
    """
    allowed = allowed_mask(gate, scores.shape)
    if allowed is None:
        return scores.argmax(dim=1)
    masked = scores.float().masked_fill(~allowed.to(scores.device),
                                        float('-inf'))
    return masked.argmax(dim=1)


def weigh_gate(rule: str, gate: Optional[Tensor], class_probs: Tensor,
               peaks: Optional[Tensor] = None,
               key: str = 'gate_rule') -> Optional[Tensor]:
    """Class weights from the model's own evidence.

    Every gated class's CAM is min-max normalised to a peak of 1, so under a
    0/1 gate any class that passes claims pixels, however weak its
    evidence.  The soft rules scale each class's CAM so that a weak class
    cannot reach 1:

    - ``'hard'``: the gate as it is (0/1; None stays None);
    - ``'prob'``: ``gate * p_c / max_c' p_c'``;
    - ``'peak'``: ``gate * peak_c``, the class's CAM peak before
      normalisation relative to the strongest class
      (:func:`~lpd_mmseg.models.utils.prototype_ops.relative_peaks`).

    Args:
        rule (str): one of :data:`GATE_RULES`.
        gate (Tensor, optional): ``(B, C)`` or ``(B, C, H, W)`` 0/1; None
            lets every class through.
        class_probs (Tensor): ``(B, C)`` or ``(B, C, H, W)``.
        peaks (Tensor, optional): same shapes, needed by ``'peak'``.

    Returns:
        Tensor | None: weights in ``[0, 1]``, zero where ``gate`` is.
    """
    check_gate_source(key, rule, GATE_RULES)
    if rule == 'hard':
        return gate
    if rule == 'prob':
        weights = class_probs / class_probs.amax(
            dim=1, keepdim=True).clamp_min(1e-6)
    else:
        if peaks is None:
            raise ValueError(f"{key}='peak' needs the relative CAM peaks "
                             '(LPDHead.predict_evidence); none were given')
        weights = peaks.to(class_probs)
    weights = weights.clamp(0, 1)
    if gate is None:
        return weights
    if gate.dim() != weights.dim():  # one is (B, C), the other per pixel
        gate, weights = (t if t.dim() == 4 else t[:, :, None, None]
                         for t in (gate, weights))
    return gate * weights
