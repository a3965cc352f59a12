"""Confusion matrix and tissue-segmentation scores, as pure functions.

The histopathology literature scores weakly supervised tissue segmentation
from one confusion matrix accumulated over a whole split, and disagrees on
what to do with ground-truth background (see ``docs/datasets.md``):

* ``'ignore'`` (WSSS-Tissue, MLPS): background pixels of the mask are left
  out altogether;
* ``'count'`` (TPRO, PBIP, LPD): the model also predicts background, the
  full (C+1)x(C+1) matrix is scored, so tissue predicted on background lowers
  that tissue's IoU.  FwIoU is weighted over all C+1 rows.

In both protocols mIoU and mDice average the C tissue classes only.

Nothing here depends on mmengine; :class:`TissueIoUMetric` wires these
functions to the evaluator.
"""
from typing import Dict, Tuple, Union

import numpy as np
import torch

ArrayLike = Union[np.ndarray, torch.Tensor]

#: Names of the background protocols accepted by :func:`tissue_metrics`.
BACKGROUND_PROTOCOLS = ('count', 'ignore')


def check_background_protocol(background: str) -> str:
    """Return ``background`` if it names a known protocol, else raise.

    Args:
        background (str): ``'count'`` or ``'ignore'``.

    Returns:
        str: ``background`` unchanged.
    """
    if background not in BACKGROUND_PROTOCOLS:
        raise ValueError(f'background must be one of {BACKGROUND_PROTOCOLS}, '
                         f'got {background!r}')
    return background


def check_positive_int(value: object, name: str) -> int:
    """Return ``value`` as an int if it is a positive integer, else raise.

    Args:
        value (object): the value to check (bools are refused).
        name (str): argument name used in the error message.

    Returns:
        int: ``value``.
    """
    if isinstance(value, bool) or not isinstance(
            value, (int, np.integer)) or value < 1:
        raise ValueError(f'{name} must be a positive integer, got {value!r}')
    return int(value)


def _as_long_tensor(values: ArrayLike, name: str) -> torch.Tensor:
    """Integer array or tensor -> int64 tensor (device kept for tensors)."""
    if isinstance(values, torch.Tensor):
        dtype = values.dtype
        if dtype.is_floating_point or dtype.is_complex or dtype == torch.bool:
            raise ValueError(f'{name} must hold integer class indices, got a '
                             f'tensor of dtype {dtype}')
        return values.long()
    array = np.asarray(values)
    if array.dtype.kind not in 'iu':
        raise ValueError(f'{name} must hold integer class indices, got an '
                         f'array of dtype {array.dtype}')
    return torch.from_numpy(array.astype(np.int64, copy=False))


def confusion_matrix(pred: ArrayLike,
                     gt: ArrayLike,
                     num_classes: int,
                     ignore_index: int = 255) -> np.ndarray:
    """Count (ground truth, prediction) pairs over all pixels.

    Works on numpy arrays or torch tensors (also on GPU: the counting runs on
    the prediction's device and only the small matrix comes back).

    Args:
        pred (np.ndarray | torch.Tensor): predicted class indices, any
            integer dtype.  Every value must lie in ``0..num_classes-1``.
        gt (np.ndarray | torch.Tensor): ground-truth class indices of the
            same shape as ``pred``.  Pixels equal to ``ignore_index`` or
            outside ``0..num_classes-1`` are skipped.
        num_classes (int): size of the matrix.
        ignore_index (int): ground-truth value to skip.  Default 255.

    Returns:
        np.ndarray: int64 array of shape ``(num_classes, num_classes)``;
        entry ``[g, p]`` counts pixels of ground truth ``g`` predicted as
        ``p`` (rows: ground truth, columns: prediction).

    Raises:
        ValueError: if the shapes differ, if an input is not integer, if
            ``num_classes`` is not a positive integer, or if a prediction
            lies outside ``0..num_classes-1``.
    """
    num_classes = check_positive_int(num_classes, 'num_classes')
    pred = _as_long_tensor(pred, 'pred')
    gt = _as_long_tensor(gt, 'gt')
    if pred.shape != gt.shape:
        raise ValueError(f'pred and gt must have the same shape, got pred '
                         f'{tuple(pred.shape)} and gt {tuple(gt.shape)}')
    gt = gt.to(pred.device)
    if pred.numel() and (pred.min() < 0 or pred.max() >= num_classes):
        raise ValueError(
            f'pred holds values in [{int(pred.min())}, {int(pred.max())}], '
            f'outside the {num_classes} classes 0..{num_classes - 1}')
    keep = (gt != ignore_index) & (gt >= 0) & (gt < num_classes)
    pair_index = gt[keep] * num_classes + pred[keep]
    counts = torch.bincount(pair_index, minlength=num_classes**2)
    return counts.reshape(num_classes, num_classes).cpu().numpy()


def _nanmean(values: np.ndarray) -> float:
    """Mean of the non-NaN entries; NaN (without a warning) if there are
    none."""
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float('nan')


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Elementwise ``numerator / denominator`` with NaN where the
    denominator is 0."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    out = np.full(np.broadcast(numerator, denominator).shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def iou_and_dice(conf: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Per-class IoU and Dice of a (ground truth x prediction) matrix.

    The matrix may have fewer rows than columns (rows dropped by the
    ``'ignore'`` protocol); scores are given for each row's class, whose
    prediction column has the same index.

    Args:
        conf (np.ndarray): ``(R, K)`` counts with ``R <= K``.

    Returns:
        tuple[np.ndarray, np.ndarray]: IoU = TP/(TP+FP+FN) and
        Dice = 2TP/(2TP+FP+FN), each of shape ``(R,)`` in [0, 1]; NaN for a
        class with neither ground truth nor prediction.
    """
    conf = np.asarray(conf, dtype=np.float64)
    rows = conf.shape[0]
    true_pos = np.diag(conf[:, :rows])
    false_neg = conf.sum(axis=1) - true_pos
    false_pos = conf[:, :rows].sum(axis=0) - true_pos
    iou = _ratio(true_pos, true_pos + false_pos + false_neg)
    dice = _ratio(2 * true_pos, 2 * true_pos + false_pos + false_neg)
    return iou, dice


def frequency_weighted_iou(iou: np.ndarray, gt_pixels: np.ndarray) -> float:
    """``sum_c freq_c * IoU_c`` with ``freq_c`` the ground-truth share of c.

    Args:
        iou (np.ndarray): per-class IoU, shape ``(R,)``.
        gt_pixels (np.ndarray): per-class ground-truth pixel counts, ``(R,)``.

    Returns:
        float: FwIoU in [0, 1]; NaN if there are no ground-truth pixels.
        Classes without ground truth weigh 0 (their IoU may be NaN).
    """
    gt_pixels = np.asarray(gt_pixels, dtype=np.float64)
    total = gt_pixels.sum()
    if total == 0:
        return float('nan')
    present = gt_pixels > 0
    return float(np.sum(gt_pixels[present] / total * iou[present]))


def _check_matrix(conf: ArrayLike, num_tissue_classes: int) -> np.ndarray:
    if isinstance(conf, torch.Tensor):
        conf = conf.cpu().numpy()
    conf = np.asarray(conf)
    size = check_positive_int(num_tissue_classes, 'num_tissue_classes') + 1
    if conf.shape != (size, size):
        raise ValueError(
            f'conf must be a ({size}, {size}) matrix for '
            f'{num_tissue_classes} tissue classes plus background, got shape '
            f'{conf.shape}')
    if np.issubdtype(conf.dtype, np.number) and (conf < 0).any():
        raise ValueError('conf holds negative counts')
    return conf


def tissue_metrics(conf: ArrayLike,
                   num_tissue_classes: int,
                   background: str = 'count') -> Dict[str, object]:
    """Score a split's confusion matrix under one background protocol.

    Class ``C = num_tissue_classes`` is background; rows are ground truth,
    columns predictions (as returned by :func:`confusion_matrix`).

    * ``'ignore'``: row C (ground-truth background) is dropped before
      anything is computed.  A tissue pixel predicted as background is still
      a false negative of its tissue.  FwIoU is weighted over the C tissue
      rows, aAcc is taken over the kept pixels.
    * ``'count'``: the full matrix is used, so tissue predicted on background
      is a false positive of that tissue.  FwIoU is weighted over all C+1
      rows, aAcc is taken over all pixels, and the background's own IoU and
      Dice are reported separately.

    mIoU and mDice are, in both protocols, the NaN-ignoring mean
    (``nanmean``) over the C tissue classes: a class with neither ground
    truth nor prediction has NaN IoU and Dice and is left out of the means,
    whereas a class that is predicted but absent from the ground truth scores
    0 and is kept.

    Args:
        conf (np.ndarray | torch.Tensor): ``(C+1, C+1)`` pixel counts.
        num_tissue_classes (int): C, the number of tissue classes.
        background (str): ``'count'`` (default) or ``'ignore'``.

    Returns:
        dict: all scores as fractions in [0, 1] (NaN where undefined):

        * ``'IoU'``, ``'Dice'``: ``(C,)`` float arrays, tissue classes;
        * ``'mIoU'``, ``'mDice'``, ``'FwIoU'``, ``'aAcc'``: floats;
        * ``'gt_pixels'``: ``(C,)`` int array, ground-truth pixels per tissue;
        * ``'background_gt_pixels'``: int, ground-truth background pixels
          (scored under ``'count'``, excluded under ``'ignore'``);
        * ``'num_pixels'``: int, pixels scored (the aAcc denominator);
        * ``'background'``: the protocol name;
        * only under ``'count'``: ``'background_IoU'`` and
          ``'background_Dice'`` (floats, never part of the means).
    """
    check_background_protocol(background)
    conf = _check_matrix(conf, num_tissue_classes)
    num_tissue = int(num_tissue_classes)
    # Keep exact integer counts where possible; scores are float64.
    conf = conf.astype(np.int64) if np.issubdtype(conf.dtype,
                                                  np.integer) else conf
    scored = conf[:num_tissue] if background == 'ignore' else conf
    iou, dice = iou_and_dice(scored)
    row_pixels = scored.sum(axis=1)
    num_pixels = row_pixels.sum()
    correct = np.trace(scored[:, :scored.shape[0]])
    result = dict(
        background=background,
        IoU=iou[:num_tissue],
        Dice=dice[:num_tissue],
        mIoU=_nanmean(iou[:num_tissue]),
        mDice=_nanmean(dice[:num_tissue]),
        FwIoU=frequency_weighted_iou(iou, row_pixels),
        aAcc=float(_ratio(correct, num_pixels)),
        gt_pixels=conf[:num_tissue].sum(axis=1),
        background_gt_pixels=conf[num_tissue].sum().item(),
        num_pixels=num_pixels.item(),
    )
    if background == 'count':
        result['background_IoU'] = float(iou[num_tissue])
        result['background_Dice'] = float(dice[num_tissue])
    return result
