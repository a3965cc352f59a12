"""Pixel-level pseudo-masks for the weakly labelled training split.

A trained LPD model turns every training patch into a palette PNG of class
indices (``0..C-1`` tissue, ``C`` background) with the *same file name* as
the patch, so that any fully supervised MMSegmentation model can be trained
on ``training/`` + the pseudo-mask folder afterwards (the classic two-stage
WSSS recipe; see ``configs/second_stage/``).

The masks come from the model's one post-processing path
(:class:`~lpd_mmseg.models.postprocess.LPDPostProcessor`): fused CAMs,
class gating, background channel ``(1 - max) ** alpha``, optional dense
CRF, argmax over the allowed classes.  By default the classes are gated
by the image-level label in each file name (these labels are known for the
training split, so using them is not an oracle here): a pseudo-mask then
never holds a tissue class that the label rules out, even after the CRF.

A trained second stage (a plain segmentor whose last class is background)
can label the same patches again for a further round of self-training:
its scores, argmax over background and the labelled classes (no CRF, no
predicted gate: it has no image-level class probabilities).

Entry points: :func:`make_pseudo_masks` (config + checkpoint paths, what
``tools/make_pseudo_masks.py`` calls) and :func:`generate_pseudo_masks` (an
already loaded model and data set).
"""
import datetime
import json
import os
import os.path as osp
from typing import List, Optional, Tuple, Union

import numpy as np
import torch
from mmengine.config import Config
from torch import Tensor

from ..datasets.palette import save_palette_mask
from ..models.gating import check_gate_source
from .pseudo_mask_io import (
    META_FILE,
    build_pseudo_mask_dataset,
    check_output_folder,
    class_weight_option,
    foreign_pngs,
    mask_name_for,
    planned_outputs,
    pseudo_mask_dataset_cfg,
    summary_class_weights,
)

#: Gate sources a pseudo-mask run accepts (``'oracle'`` is left out: the
#: training patches have no masks).
GATE_CHOICES = ('labels', 'predicted', 'none')
CRF_CHOICES = ('none', 'torch', 'pydensecrf')


# ------------------------------------------------------------ pure helpers
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


def class_pixel_counts(mask: np.ndarray, num_values: int) -> np.ndarray:
    """Pixels per value ``0..num_values-1`` of an integer mask.

    Args:
        mask (np.ndarray): ``(H, W)`` integer mask.
        num_values (int): length of the result (``C + 1`` with background).

    Returns:
        np.ndarray: ``(num_values,)`` int64 counts.
    """
    flat = np.asarray(mask).reshape(-1).astype(np.int64)
    if flat.size and (flat.min() < 0 or flat.max() >= num_values):
        raise ValueError(f'mask values [{flat.min()}, {flat.max()}] outside '
                         f'0..{num_values - 1}')
    return np.bincount(flat, minlength=num_values).astype(np.int64)


# ------------------------------------------------------------------ model
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


# --------------------------------------------------------------- main loop
def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return None
    from mmengine.utils import ProgressBar
    return ProgressBar(total)


@torch.no_grad()
def generate_pseudo_masks(model,
                          dataset,
                          out_dir: str,
                          gate: str = 'labels',
                          crf: Optional[str] = None,
                          batch_size: int = 8,
                          num_workers: int = 0,
                          overwrite: bool = False,
                          progress: bool = True,
                          provenance: Optional[dict] = None) -> dict:
    """Write one palette pseudo-mask per image of ``dataset``.

    Args:
        model: a loaded ``LPDEncoderDecoder`` (e.g. from
            :func:`~lpd_mmseg.apis.init_segmentor`), or a plain segmentor
            whose last class is background (a second stage: the next
            round of self-training; gate ``'labels'`` or ``'none'``, no
            CRF).
        dataset: a data set whose pipeline packs images with
            ``PackWeakSegInputs`` (see :func:`build_pseudo_mask_dataset`).
        out_dir (str): output folder (created if missing).
        gate (str): ``'labels'`` (the image-level labels of the file names;
            default), ``'predicted'`` (the model's own class
            probabilities and ``test_cfg.gate_threshold``) or ``'none'``
            (gate sources of :mod:`lpd_mmseg.models.gating`).
        crf (str, optional): ``'none'``, ``'torch'`` or ``'pydensecrf'``;
            None keeps the config's ``test_cfg.crf``.
        batch_size (int): images per forward pass.
        num_workers (int): data loading processes.
        overwrite (bool): replace existing masks of the same names.
        progress (bool): show a progress bar.
        provenance (dict, optional): extra entries for the meta file
            (e.g. ``config`` and ``checkpoint`` paths).

    Returns:
        dict: the summary also written to ``out_dir/pseudo_masks_meta.json``
        (counts, class pixel shares, settings).
    """
    from mmengine.dataset import pseudo_collate
    from torch.utils.data import DataLoader

    check_gate_source('gate', gate, GATE_CHOICES)
    if batch_size < 1 or num_workers < 0:
        raise ValueError(f'batch_size must be >= 1 and num_workers >= 0, got '
                         f'{batch_size} and {num_workers}')
    num_classes, class_names, palette = _check_model(model, dataset)
    if len(dataset) == 0:
        raise ValueError('the data set holds no images')
    if gate == 'labels' and dataset.get_data_info(0).get(
            'gt_image_label') is None:
        raise ValueError(
            f"--gate labels needs image-level labels, but the images of "
            f"'{dataset.data_prefix.get('img_path')}' carry none (labels "
            'come from the training file names). Use --split train or '
            '--gate predicted.')
    pairs = planned_outputs(dataset, out_dir)
    check_output_folder(out_dir, [m for _, m in pairs], overwrite)
    os.makedirs(out_dir, exist_ok=True)

    lpd = is_lpd_segmentor(model)
    if lpd:
        post, crf_backend = _post_processor(model, crf)
    else:
        _check_plain_settings(gate, crf)
        post, crf_backend = None, 'none'
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, collate_fn=pseudo_collate)
    counts = np.zeros(num_classes + 1, dtype=np.int64)
    images_with = np.zeros(num_classes + 1, dtype=np.int64)
    written = 0
    bar = _progress_bar(len(dataset), progress)
    was_training = model.training
    model.eval()
    try:
        for batch in loader:
            data = model.data_preprocessor(batch, False)
            samples = data['data_samples']
            if lpd:
                masks = _batch_masks(model, post, data['inputs'], samples,
                                     gate)
            else:
                masks = _plain_batch_masks(model, data['inputs'], samples,
                                           gate)
            for sample, mask in zip(samples, masks):
                img_path, mask_path = pairs[written]
                if osp.basename(sample.metainfo['img_path']) != \
                        osp.basename(img_path):
                    raise RuntimeError('data loader order differs from the '
                                       'data set order')
                save_palette_mask(mask, mask_path, palette)
                pixel = class_pixel_counts(mask, num_classes + 1)
                counts += pixel
                images_with += pixel > 0
                written += 1
                if bar is not None:
                    bar.update()
    finally:
        model.train(was_training)
    if bar is not None:
        print()
    total = max(int(counts.sum()), 1)
    summary = dict(
        out_dir=osp.abspath(out_dir),
        image_dir=osp.abspath(dataset.data_prefix.get('img_path', '')),
        num_masks=written,
        gate=gate,
        crf=crf_backend,
        classes=class_names,
        palette=palette,
        background_index=num_classes,
        pixel_counts={n: int(c) for n, c in zip(class_names, counts)},
        pixel_shares={n: float(c) / total
                      for n, c in zip(class_names, counts)},
        images_with_class={n: int(c)
                           for n, c in zip(class_names, images_with)},
        other_png_files=len(foreign_pngs(out_dir, [m for _, m in pairs])),
        created=datetime.datetime.now().isoformat(timespec='seconds'))
    summary.update(provenance or {})
    from ..version import __version__
    summary['lpd_mmseg_version'] = __version__
    meta_path = osp.join(out_dir, META_FILE)
    with open(meta_path + '.partial', 'w') as f:
        json.dump(summary, f, indent=2)
    os.replace(meta_path + '.partial', meta_path)
    return summary


def make_pseudo_masks(config: Union[str, Config],
                      checkpoint: str,
                      out_dir: str,
                      split: str = 'train',
                      data_root: Optional[str] = None,
                      batch_size: int = 8,
                      num_workers: int = 2,
                      device: str = 'cpu',
                      crf: Optional[str] = None,
                      gate: str = 'labels',
                      overwrite: bool = False,
                      progress: bool = True) -> dict:
    """Load a config and checkpoint, then :func:`generate_pseudo_masks` on
    the config's training data set.

    The data set is scanned and the output folder checked before the
    checkpoint is loaded, so a wrong folder fails fast.

    Args:
        config (str | Config): LPD config, or a second-stage config
            (plain segmentor, last class background).
        checkpoint (str): trained checkpoint (strict, safe loading).
        out_dir (str): output folder for the masks and the meta file.
        split (str): ``'train'`` (default), ``'val'`` or ``'test'``.
        data_root (str, optional): replaces the config's data root.
        batch_size (int): images per forward pass.
        num_workers (int): data loading processes.
        device (str): e.g. ``'cpu'`` or ``'cuda:0'``.
        crf (str, optional): ``'none'``, ``'torch'``, ``'pydensecrf'``;
            None keeps the config's setting.
        gate (str): ``'labels'`` (default), ``'predicted'`` or ``'none'``.
        overwrite (bool): replace existing masks.
        progress (bool): show a progress bar.

    Returns:
        dict: see :func:`generate_pseudo_masks`.
    """
    from .inference import init_segmentor
    config_path = config if isinstance(config, str) else config.filename
    if isinstance(config, str) and not osp.isfile(config):
        raise FileNotFoundError(f'config {config}: no such file')
    if not osp.isfile(checkpoint):
        raise FileNotFoundError(f'checkpoint {checkpoint}: no such file')
    check_gate_source('gate', gate, GATE_CHOICES)
    cfg = Config.fromfile(config) if isinstance(config, str) else config
    dataset = build_pseudo_mask_dataset(cfg, split, data_root)
    check_output_folder(
        out_dir, [m for _, m in planned_outputs(dataset, out_dir)], overwrite)
    model = init_segmentor(cfg, checkpoint, device=device)
    provenance = dict(
        config=osp.abspath(config_path) if config_path else None,
        checkpoint=osp.abspath(checkpoint),
        split=split,
        data_root=getattr(dataset, 'data_root', None))
    return generate_pseudo_masks(
        model, dataset, out_dir, gate=gate, crf=crf, batch_size=batch_size,
        num_workers=num_workers, overwrite=overwrite, progress=progress,
        provenance=provenance)


def format_pseudo_mask_summary(summary: dict) -> str:
    """Human-readable report of :func:`generate_pseudo_masks`' result."""
    lines = [
        f"wrote {summary['num_masks']} pseudo-masks to {summary['out_dir']}",
        f"  images: {summary['image_dir']}",
        f"  gate: {summary['gate']}, crf: {summary['crf']}",
        f"  meta: {osp.join(summary['out_dir'], META_FILE)}",
        '  class      pixel share   masks containing it',
    ]
    for name in summary['classes']:
        share = 100 * summary['pixel_shares'][name]
        lines.append(f'  {name:<10} {share:>9.2f} %   '
                     f"{summary['images_with_class'][name]:>8d}")
    weights = summary_class_weights(summary)
    lines.append('  balanced second stage (rare classes weighted up): '
                 f'--cfg-options {class_weight_option(weights)}')
    if summary.get('other_png_files'):
        lines.append(
            f"  note: the folder also holds {summary['other_png_files']} "
            'other PNG files that belong to no image of this split; a data '
            'set pairing images and masks by name will refuse them.')
    return '\n'.join(lines)


__all__ = [
    'make_pseudo_masks', 'generate_pseudo_masks', 'build_pseudo_mask_dataset',
    'is_lpd_segmentor',
    'pseudo_mask_dataset_cfg', 'labelled_argmax', 'class_pixel_counts',
    'format_pseudo_mask_summary', 'check_output_folder',
    'planned_outputs', 'mask_name_for', 'META_FILE'
]
