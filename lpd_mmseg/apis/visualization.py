"""What the prototypes of a trained LPD model respond to.

Two outputs:

* a **panel** per image: the image, the predicted mask over it (palette
  colours, legend of class names) and a grid of per-prototype activation
  heatmaps (rows = classes, columns = the ``k`` prototypes of the class),
  from the cosine similarity maps of one used stage, upsampled to the image;
* a **coverage** report: for each class, the share of that class's region
  (predicted mask, or a ground-truth mask) where each of its ``k``
  prototypes is the strongest of the class's ``k`` prototypes.  Diverse
  prototypes split a class region into complementary parts (shares near
  ``1/k``, normalised entropy near 1); collapsed prototypes leave one
  prototype winning almost everywhere (entropy near 0).  This is the
  quantitative form of the paper's claim about the diversity regulariser.

The arithmetic lives in small pure functions (:func:`prototype_coverage`,
:func:`coverage_shares`, :func:`coverage_entropy`); drawing uses
matplotlib's object API with the Agg canvas, so importing this module
never changes the global matplotlib backend.
"""
import json
import math
import os
import os.path as osp
from typing import List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .outputs import refuse_to_overwrite

ImageInput = Union[str, np.ndarray]
IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.tif', '.tiff', '.bmp')
COVERAGE_JSON = 'prototype_coverage.json'
COVERAGE_FIGURE = 'prototype_coverage.png'
PANEL_SUFFIX = '_prototypes.png'


# ------------------------------------------------------------------- math
def prototype_coverage(similarity: Tensor, region: Tensor, num_classes: int,
                       num_prototypes: int) -> Tensor:
    """Pixel counts of the winning prototype inside each class region.

    For class ``c`` only the pixels with ``region == c`` count; at each of
    them the winner is the prototype ``j`` with the largest
    ``similarity[c * k + j]`` among the class's ``k`` prototypes (ties go to
    the lowest ``j``).  Region values outside ``0..C-1`` (background,
    ignore) count for no class.

    Args:
        similarity (Tensor): ``(C * k, H, W)`` prototype maps.
        region (Tensor): ``(H, W)`` integer class map.
        num_classes (int): ``C``.
        num_prototypes (int): ``k``.

    Returns:
        Tensor: ``(C, k)`` int64; row ``c`` sums to the pixel count of
        class ``c`` in ``region``.
    """
    c, k = int(num_classes), int(num_prototypes)
    if similarity.dim() != 3 or similarity.shape[0] != c * k:
        raise ValueError(f'similarity must be (C*k, H, W) = ({c * k}, H, W), '
                         f'got {tuple(similarity.shape)}')
    if tuple(region.shape) != tuple(similarity.shape[1:]):
        raise ValueError(f'region {tuple(region.shape)} and similarity '
                         f'{tuple(similarity.shape[1:])} differ in size')
    winner = similarity.reshape(c, k, -1).argmax(dim=1)  # (C, H*W)
    labels = region.reshape(-1).long().to(winner.device)
    counts = torch.zeros(c, k, dtype=torch.int64, device=winner.device)
    for cls in range(c):
        inside = winner[cls][labels == cls]
        counts[cls] = torch.bincount(inside, minlength=k)
    return counts.cpu()


def coverage_shares(counts: Tensor) -> Tensor:
    """Row-normalise ``(C, k)`` counts; rows without pixels become NaN.

    Args:
        counts (Tensor): ``(C, k)`` pixel counts.

    Returns:
        Tensor: ``(C, k)`` float64 shares, each non-empty row sums to 1.
    """
    counts = counts.double()
    totals = counts.sum(dim=1, keepdim=True)
    return torch.where(totals > 0, counts / totals.clamp_min(1),
                       torch.full_like(counts, float('nan')))


def coverage_entropy(shares: Tensor) -> Tensor:
    """Normalised entropy of each row of :func:`coverage_shares`.

    ``H_c = -sum_j p_j log p_j / log k``: 1 when the ``k`` prototypes split
    the class region evenly, 0 when one prototype wins everywhere.  NaN for
    a class without pixels; 0 when ``k == 1``.

    Args:
        shares (Tensor): ``(C, k)``.

    Returns:
        Tensor: ``(C,)`` float64.
    """
    shares = shares.double()
    k = shares.shape[1]
    terms = torch.where(shares > 0, shares * shares.clamp_min(1e-300).log(),
                        torch.zeros_like(shares))
    entropy = -terms.sum(dim=1)
    entropy = entropy / math.log(k) if k > 1 else torch.zeros_like(entropy)
    return torch.where(torch.isnan(shares).any(dim=1),
                       torch.full_like(entropy, float('nan')), entropy)


def coverage_report(counts: Tensor, class_names: Sequence[str]) -> dict:
    """JSON-ready per-class numbers from ``(C, k)`` counts.

    Per class: ``pixels``, ``counts`` (per prototype), ``shares``,
    ``entropy`` (normalised, see :func:`coverage_entropy`) and
    ``effective_prototypes`` (``k ** entropy``, between 1 and ``k``).
    Classes without pixels get ``None`` for the derived numbers.
    """
    shares = coverage_shares(counts)
    entropy = coverage_entropy(shares)
    k = counts.shape[1]
    report = {}
    for c, name in enumerate(class_names):
        empty = bool(torch.isnan(entropy[c]))
        report[str(name)] = dict(
            pixels=int(counts[c].sum()),
            counts=[int(v) for v in counts[c]],
            shares=None if empty else [float(v) for v in shares[c]],
            entropy=None if empty else float(entropy[c]),
            effective_prototypes=None if empty else float(
                k**float(entropy[c])))
    return report


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
    from PIL import Image
    if not osp.isfile(path):
        raise FileNotFoundError(f"mask '{path}': no such file (--masks needs "
                                'a mask of the same file name per image)')
    with Image.open(path) as img:
        if img.mode not in ('P', 'L', 'I', 'I;16'):
            raise ValueError(f"mask '{path}' is a {img.mode} image; expected "
                             'a palette or greyscale PNG of class indices')
        mask = np.array(img)
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


# ---------------------------------------------------------------- drawing
def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def colorize_mask(mask: np.ndarray, palette: Sequence[Sequence[int]]
                  ) -> np.ndarray:
    """``(H, W)`` class indices -> ``(H, W, 3)`` uint8 palette colours
    (values without a colour become black)."""
    lut = np.zeros((256, 3), np.uint8)
    lut[:len(palette)] = np.asarray(palette, np.uint8)
    return lut[np.clip(np.asarray(mask), 0, 255).astype(np.int64)]


def overlay(rgb: np.ndarray, colours: np.ndarray, alpha: float = 0.5
            ) -> np.ndarray:
    """Blend an image with a colour map, ``alpha`` = weight of the map."""
    mixed = (1 - alpha) * rgb.astype(np.float32) + alpha * colours.astype(
        np.float32)
    return mixed.round().clip(0, 255).astype(np.uint8)


def draw_prototype_panel(path: str,
                         rgb: np.ndarray,
                         pred: np.ndarray,
                         similarity: np.ndarray,
                         class_names: Sequence[str],
                         palette: Sequence[Sequence[int]],
                         num_prototypes: int,
                         shares: Optional[np.ndarray] = None,
                         title: str = ''):
    """Save the image / mask overlay / per-prototype heatmap panel.

    Args:
        path (str): output PNG.
        rgb (np.ndarray): ``(H, W, 3)`` uint8.
        pred (np.ndarray): ``(H, W)`` mask, values ``0..C``.
        similarity (np.ndarray): ``(C*k, H, W)`` cosine maps.
        class_names (list[str]): ``C + 1`` names (background last).
        palette (list): ``C + 1`` RGB triples.
        num_prototypes (int): ``k``.
        shares (np.ndarray, optional): ``(C, k)`` coverage shares of this
            image, shown under each heatmap title.
        title (str): figure title.

    Returns:
        matplotlib.figure.Figure: the saved figure.
    """
    from matplotlib.patches import Patch
    k = num_prototypes
    num_classes = similarity.shape[0] // k
    cols = max(k, 2)
    fig = _new_figure(2.2 * cols + 1.2, 2.3 * (num_classes + 1))
    grid = fig.add_gridspec(num_classes + 1, cols + 1,
                            width_ratios=[1] * cols + [0.06], top=0.94,
                            hspace=0.35)
    ax = fig.add_subplot(grid[0, 0])
    ax.imshow(rgb)
    ax.set_title('image', fontsize=9)
    ax.axis('off')
    ax = fig.add_subplot(grid[0, 1])
    ax.imshow(overlay(rgb, colorize_mask(pred, palette)))
    ax.set_title('prediction', fontsize=9)
    ax.axis('off')
    handles = [Patch(facecolor=np.asarray(palette[i]) / 255.0,
                     edgecolor='black', label=str(name))
               for i, name in enumerate(class_names)]
    legend_anchor = fig.add_subplot(grid[0, 2:cols]) if cols > 2 else ax
    if cols > 2:
        legend_anchor.axis('off')
        legend_anchor.legend(handles=handles, loc='center left',
                             fontsize=8, frameon=False)
    else:
        ax.legend(handles=handles, loc='upper left', fontsize=6,
                  bbox_to_anchor=(1.0, 1.0), frameon=False)
    grey = rgb.astype(np.float32).mean(axis=2)
    low, high = float(similarity.min()), float(similarity.max())
    if high <= low:
        high = low + 1e-6
    shown = None
    for c in range(num_classes):
        for j in range(k):
            ax = fig.add_subplot(grid[c + 1, j])
            ax.imshow(grey, cmap='gray', vmin=0, vmax=255)
            shown = ax.imshow(similarity[c * k + j], cmap='jet', alpha=0.55,
                              vmin=low, vmax=high)
            label = f'{class_names[c]} p{j}'
            if shares is not None and not np.isnan(shares[c, j]):
                label += f'\n{100 * shares[c, j]:.0f}% of {class_names[c]}'
            ax.set_title(label, fontsize=8)
            ax.axis('off')
    cax = fig.add_subplot(grid[1:, cols])
    fig.colorbar(shown, cax=cax, label='cosine similarity')
    if title:
        fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=80, bbox_inches='tight')
    return fig


def draw_coverage_figure(path: str, report: dict, num_prototypes: int,
                         palette: Sequence[Sequence[int]],
                         title: str = ''):
    """Bar chart per class of the share of its region won by each
    prototype (from :func:`coverage_report`); returns the saved
    ``Figure``."""
    names = list(report)
    fig = _new_figure(2.6 * len(names) + 0.5, 3.0)
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    xs = np.arange(num_prototypes)
    for c, (ax, name) in enumerate(zip(axes, names)):
        entry = report[name]
        ax.set_xticks(xs, [f'p{j}' for j in xs], fontsize=7)
        ax.set_xlim(-0.6, num_prototypes - 0.4)
        ax.set_ylim(0, 1)
        ax.axhline(1.0 / num_prototypes, color='grey', lw=0.8, ls='--')
        if entry['shares'] is None:
            ax.set_title(f'{name}: no pixels', fontsize=9)
            continue
        colour = np.asarray(palette[c]) / 255.0
        ax.bar(xs, entry['shares'], color=colour, edgecolor='black')
        ax.set_title(f"{name}: {entry['pixels']} px\nentropy "
                     f"{entry['entropy']:.2f}, eff. "
                     f"{entry['effective_prototypes']:.1f}/{num_prototypes}",
                     fontsize=8)
    axes[0].set_ylabel('share of class region')
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return fig


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

    bar = None
    if progress:
        from mmengine.utils import ProgressBar
        bar = ProgressBar(len(images))
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
            if bar is not None:
                bar.update()
    finally:
        model.train(was_training)
    if bar is not None:
        print()
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


def format_coverage(report: dict) -> str:
    """Text table of the aggregate coverage (what the tool prints)."""
    k = report['num_prototypes']
    lines = [f"prototype coverage over {report['num_images']} image(s), "
             f"regions from {report['region']} "
             f"(backbone stage {report['backbone_stage']}):",
             f"  {'class':<8}{'pixels':>9}  entropy  eff.  "
             f'shares p0..p{k - 1}']
    for name, entry in report['aggregate'].items():
        if entry['shares'] is None:
            lines.append(f'  {name:<8}{0:>9}  (no pixels)')
            continue
        shares = ' '.join(f'{s:.2f}' for s in entry['shares'])
        lines.append(f"  {name:<8}{entry['pixels']:>9}  "
                     f"{entry['entropy']:>7.2f}  "
                     f"{entry['effective_prototypes']:>4.1f}  {shares}")
    return '\n'.join(lines)


__all__ = [
    'prototype_coverage', 'coverage_shares', 'coverage_entropy',
    'coverage_report', 'visualize_prototypes', 'image_prototype_maps',
    'draw_prototype_panel', 'draw_coverage_figure', 'format_coverage',
    'expand_image_inputs', 'check_masks_exist', 'check_output_folder',
    'planned_outputs', 'load_region_mask', 'colorize_mask'
]
