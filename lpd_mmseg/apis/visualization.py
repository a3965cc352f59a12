"""Prototype panels and coverage for images: the run behind
``tools/visualize_prototypes.py``.

For every image this runs the model once, keeps the cosine similarity maps
of one used stage (upsampled to the image) and the prediction, then

* draws a **panel** (image, predicted mask with legend, one heatmap per
  prototype; :mod:`lpd_mmseg.visualization.prototype_figures`), and
* adds the pixels of each class region to the **coverage** counts
  (:mod:`lpd_mmseg.evaluation.prototype_coverage`): which of the ``k``
  prototypes of a class wins where, over the predicted or a ground-truth
  mask.

The input and output folder checks live here too.
"""
import json
import os
import os.path as osp
from typing import List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..datasets.palette import read_index_mask
from ..engine.progress import TextProgress
from ..evaluation.prototype_coverage import (
    coverage_report,
    coverage_shares,
    prototype_coverage,
)
from ..visualization.prototype_figures import (
    draw_coverage_figure,
    draw_prototype_panel,
)
from .outputs import refuse_to_overwrite

ImageInput = Union[str, np.ndarray]
IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.tif', '.tiff', '.bmp')
COVERAGE_JSON = 'prototype_coverage.json'
COVERAGE_FIGURE = 'prototype_coverage.png'
PANEL_SUFFIX = '_prototypes.png'


# ----------------------------------------------------------------- inputs
def expand_image_inputs(paths: Sequence[str]) -> List[str]:
    """Image files from paths; a folder contributes its images (sorted).

    Raises:
        FileNotFoundError: a path does not exist, or a folder holds no
            image.
    """
    images = []
    for path in paths:
        if osp.isdir(path):
            found = sorted(
                osp.join(path, n) for n in os.listdir(path)
                if n.lower().endswith(IMAGE_SUFFIXES))
            if not found:
                raise FileNotFoundError(f"folder '{path}' holds no image "
                                        f'({", ".join(IMAGE_SUFFIXES)})')
            images.extend(found)
        elif osp.isfile(path):
            images.append(path)
        else:
            raise FileNotFoundError(f"image '{path}': no such file")
    if not images:
        raise ValueError('no images given')
    return images


def _image_name(image: ImageInput, index: int) -> str:
    if isinstance(image, str):
        return osp.splitext(osp.basename(image))[0]
    return f'image_{index}'


def mask_path_for(image: str, mask_dir: str) -> str:
    """Mask of an image: same base name, ``.png``, in ``mask_dir``."""
    return osp.join(mask_dir, osp.splitext(osp.basename(image))[0] + '.png')


def check_masks_exist(images: Sequence[ImageInput], mask_dir: str) -> None:
    """Every image path must have a mask of its name in ``mask_dir``.

    Raises:
        FileNotFoundError: the folder or a mask is missing (named).
        ValueError: an image is an array (no name to match).
    """
    if not osp.isdir(mask_dir):
        raise FileNotFoundError(f"--masks folder '{mask_dir}' does not "
                                'exist')
    for img in images:
        if not isinstance(img, str):
            raise ValueError('--masks needs image paths (to find masks by '
                             'file name), not arrays')
        path = mask_path_for(img, mask_dir)
        if not osp.isfile(path):
            raise FileNotFoundError(
                f"no mask '{path}' for image '{img}' (masks must have the "
                "image's file name)")


def planned_outputs(images: Sequence[ImageInput]) -> List[str]:
    """File names :func:`visualize_prototypes` writes for ``images``:
    one panel per image, then the coverage figure and JSON."""
    names = [_image_name(img, i) for i, img in enumerate(images)]
    return [n + PANEL_SUFFIX for n in names] + [COVERAGE_FIGURE,
                                                COVERAGE_JSON]


def check_output_folder(out_dir: str, images: Sequence[ImageInput],
                        overwrite: bool) -> None:
    """Refuse to replace existing outputs unless ``overwrite``.

    Raises:
        NotADirectoryError: ``out_dir`` exists and is a file.
        FileExistsError: some planned output (a panel or the coverage
            figure / JSON) already exists in ``out_dir`` and ``overwrite``
            is False; names a few of them.
    """
    refuse_to_overwrite(
        out_dir, [osp.join(out_dir, n) for n in planned_outputs(images)],
        overwrite, 'old files')


def load_region_mask(path: str, shape: Sequence[int]) -> Tensor:
    """Read a palette/greyscale mask of class indices as ``(H, W)`` int64.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not single-channel, or not of ``shape``.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f"mask '{path}': no such file (--masks needs "
                                'a mask of the same file name per image)')
    mask = read_index_mask(path)
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"mask '{path}' is {mask.shape[1]}x{mask.shape[0]} "
                         f'but its image is {shape[1]}x{shape[0]}')
    return torch.from_numpy(mask.astype(np.int64))


def _rgb_of(image: ImageInput) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB for display (inputs are paths or BGR)."""
    if isinstance(image, np.ndarray):
        bgr = image if image.ndim == 3 else np.repeat(image[..., None], 3, 2)
    else:
        import mmcv
        bgr = mmcv.imread(image)
    return np.ascontiguousarray(bgr[..., ::-1])


# ------------------------------------------------------------------ model
def _stage_index(head, stage: int) -> int:
    num = head.num_stages
    if not -num <= stage < num:
        raise ValueError(
            f'stage {stage} is out of range: the head uses {num} backbone '
            f'stages (backbone outputs {list(head.in_index)}), so --stage '
            f'must be in {-num}..{num - 1}')
    return stage % num


@torch.no_grad()
def image_prototype_maps(model, image: ImageInput, stage: int = -1) -> dict:
    """Prototype maps and prediction of one image at its original size.

    Args:
        model: a loaded ``LPDEncoderDecoder``.
        image (str | np.ndarray): path or BGR array.
        stage (int): index into the head's used stages (-1: the last).

    Returns:
        dict: ``similarity`` ``(C*k, H0, W0)`` cosine maps upsampled to the
        image, ``pred`` ``(H0, W0)`` int64 mask (values ``0..C``) and
        ``rgb`` ``(H0, W0, 3)`` uint8.
    """
    from .inference import prepare_batch
    stage = _stage_index(model.decode_head, stage)
    data = prepare_batch(model, [image])
    inputs, samples = data['inputs'], data['data_samples']
    meta = samples[0].metainfo
    similarity = model.decode_head.forward(model.extract_feat(inputs))[stage]
    similarity = F.interpolate(similarity.float(), size=inputs.shape[2:],
                               mode='bilinear', align_corners=False)
    similarity = model.restore_geometry(similarity, meta, 'bilinear')
    # plain images carry no mask or label: an oracle/labels gate falls
    # back to the model's own prediction
    gate = 'predicted' if model.post_processor.gate in ('oracle',
                                                        'labels') else None
    pred = model.predict(inputs, samples, gate=gate)[0].pred_sem_seg.data[0]
    rgb = _rgb_of(image)
    if tuple(rgb.shape[:2]) != tuple(pred.shape):
        raise RuntimeError(f'prediction {tuple(pred.shape)} and image '
                           f'{rgb.shape[:2]} differ in size')
    return dict(similarity=similarity.cpu(), pred=pred.long().cpu(), rgb=rgb)


# ------------------------------------------------------------------- main
def visualize_prototypes(model,
                         images: Sequence[ImageInput],
                         out_dir: str,
                         stage: int = -1,
                         mask_dir: Optional[str] = None,
                         progress: bool = True,
                         provenance: Optional[dict] = None,
                         overwrite: bool = False) -> dict:
    """Panels and prototype-coverage numbers for a list of images.

    Writes ``out_dir/<image name>_prototypes.png`` per image,
    ``out_dir/prototype_coverage.png`` and
    ``out_dir/prototype_coverage.json`` (aggregate over all images and per
    image).  Existing files of these names are only replaced with
    ``overwrite``.

    Args:
        model: a loaded ``LPDEncoderDecoder``.
        images (list): image paths or BGR arrays.
        out_dir (str): output folder (created if missing).
        stage (int): which used stage's prototype maps (-1: the last).
        mask_dir (str, optional): folder of ground-truth masks with the
            images' file names; the coverage regions then come from them
            instead of the prediction.
        progress (bool): show a progress bar.
        provenance (dict, optional): extra entries for the JSON.
        overwrite (bool): replace outputs already in ``out_dir``.

    Returns:
        dict: the coverage report written to the JSON.

    Raises:
        FileExistsError: outputs exist and ``overwrite`` is False (nothing
            is written).
    """
    if not images:
        raise ValueError('no images given')
    head = model.decode_head
    if not (hasattr(head, 'num_prototypes')
            and hasattr(model, 'post_processor')):
        raise TypeError('prototype visualisation needs an LPD segmentor '
                        f'(LPDEncoderDecoder), got {type(model).__name__}')
    stage_idx = _stage_index(head, stage)
    num_classes, k = head.num_classes, head.num_prototypes
    meta = getattr(model, 'dataset_meta', None) or {}
    class_names = [str(c) for c in meta.get('classes') or []]
    if len(class_names) != num_classes + 1:
        class_names = [f'class{i}' for i in range(num_classes)] + ['BACK']
    palette = meta.get('palette')
    if not palette or len(palette) < num_classes + 1:
        rng = np.random.default_rng(0)
        palette = rng.integers(0, 255, (num_classes + 1, 3)).tolist()
    palette = [list(map(int, p)) for p in palette[:num_classes + 1]]
    names = [_image_name(img, i) for i, img in enumerate(images)]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f'several images share the name(s) {duplicates}; '
                         'their panels would overwrite each other')
    if mask_dir is not None:
        check_masks_exist(images, mask_dir)
    check_output_folder(out_dir, images, overwrite)
    os.makedirs(out_dir, exist_ok=True)

    bar = TextProgress(len(images), 'images', progress)
    total = torch.zeros(num_classes, k, dtype=torch.int64)
    per_image = []
    was_training = model.training
    model.eval()
    try:
        for img, name in zip(images, names):
            maps = image_prototype_maps(model, img, stage_idx)
            if mask_dir is not None:
                region = load_region_mask(mask_path_for(img, mask_dir),
                                          maps['pred'].shape)
            else:
                region = maps['pred']
            counts = prototype_coverage(maps['similarity'], region,
                                        num_classes, k)
            total += counts
            panel = name + PANEL_SUFFIX
            draw_prototype_panel(
                osp.join(out_dir, panel), maps['rgb'], maps['pred'].numpy(),
                maps['similarity'].numpy(), class_names, palette, k,
                shares=coverage_shares(counts).numpy(),
                title=f'{name}  (stage {head.in_index[stage_idx] + 1} '
                'prototype maps)')
            per_image.append(dict(
                image=img if isinstance(img, str) else name, panel=panel,
                classes=coverage_report(counts, class_names[:num_classes])))
            bar.update()
    finally:
        model.train(was_training)
    bar.close()
    aggregate = coverage_report(total, class_names[:num_classes])
    region_source = 'masks' if mask_dir is not None else 'predicted'
    report = dict(
        stage=stage_idx,
        backbone_stage=int(head.in_index[stage_idx]) + 1,
        region=region_source,
        mask_dir=osp.abspath(mask_dir) if mask_dir else None,
        classes=class_names[:num_classes],
        num_prototypes=k,
        num_images=len(images),
        aggregate=aggregate,
        images=per_image)
    report.update(provenance or {})
    draw_coverage_figure(
        osp.join(out_dir, COVERAGE_FIGURE), aggregate, k, palette,
        title=f'prototype coverage of the class regions ({region_source}), '
        f'{len(images)} image(s)')
    with open(osp.join(out_dir, COVERAGE_JSON), 'w') as f:
        json.dump(report, f, indent=2)
    return report


__all__ = [
    'visualize_prototypes', 'image_prototype_maps', 'expand_image_inputs',
    'check_masks_exist', 'check_output_folder', 'planned_outputs',
    'load_region_mask'
]
