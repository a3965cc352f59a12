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
from typing import Optional, Union

import numpy as np
import torch
from mmengine.config import Config

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
from .pseudo_mask_models import (
    CRF_CHOICES,
    _batch_masks,
    _check_model,
    _check_plain_settings,
    _plain_batch_masks,
    _post_processor,
    is_lpd_segmentor,
    labelled_argmax,
)

#: Gate sources a pseudo-mask run accepts (``'oracle'`` is left out: the
#: training patches have no masks).
GATE_CHOICES = ('labels', 'predicted', 'none')


# ------------------------------------------------------------ pure helpers
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
    'is_lpd_segmentor', 'CRF_CHOICES', 'GATE_CHOICES',
    'pseudo_mask_dataset_cfg', 'labelled_argmax', 'class_pixel_counts',
    'format_pseudo_mask_summary', 'check_output_folder',
    'planned_outputs', 'mask_name_for', 'META_FILE'
]
