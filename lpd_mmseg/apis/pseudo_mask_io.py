"""Where pseudo-masks come from and go to: the deterministic training data
set they are computed on, their file names, and the output-folder checks
(nothing is overwritten without ``overwrite``)."""
import copy
import os
import os.path as osp
from typing import List, Optional, Sequence, Tuple

from mmengine.config import Config

from ..datasets.weak_label_dataset import PSEUDO_MASK_META_FILE
from .outputs import refuse_to_overwrite

META_FILE = PSEUDO_MASK_META_FILE
MASK_SUFFIX = '.png'
#: Deterministic loading for pseudo-masks: no augmentation, no mask.
DETERMINISTIC_PIPELINE = (dict(type='LoadImageFromFile'),
                          dict(type='PackWeakSegInputs'))
#: Dataset wrappers whose inner ``dataset`` is the one to read.
_WRAPPERS = ('RepeatDataset', 'ClassBalancedDataset')


def mask_name_for(img_path: str) -> str:
    """Pseudo-mask file name of an image: its base name with ``.png``."""
    return osp.splitext(osp.basename(img_path))[0] + MASK_SUFFIX


# ------------------------------------------------------------------ dataset
def pseudo_mask_dataset_cfg(cfg: Config, split: str = 'train',
                            data_root: Optional[str] = None) -> dict:
    """The config's training data set, made deterministic.

    Starts from ``cfg.train_dataloader.dataset`` (unwrapping
    ``RepeatDataset``/``ClassBalancedDataset``), replaces its pipeline by
    :data:`DETERMINISTIC_PIPELINE` and optionally its ``split`` and
    ``data_root``.

    Args:
        cfg (Config): model config.
        split (str): ``'train'`` (default; the weakly labelled split),
            ``'val'`` or ``'test'``.
        data_root (str, optional): replaces the config's ``data_root``.

    Returns:
        dict: a data set config for ``DATASETS.build``.
    """
    loader = cfg.get('train_dataloader')
    if not loader or not loader.get('dataset'):
        raise KeyError('the config has no train_dataloader.dataset to take '
                       'the training images from')
    ds = copy.deepcopy(loader['dataset'])
    ds = ds.to_dict() if hasattr(ds, 'to_dict') else dict(ds)
    while ds.get('type') in _WRAPPERS and 'dataset' in ds:
        ds = dict(ds['dataset'])
    if 'datasets' in ds:
        raise ValueError(
            f"train_dataloader.dataset is a {ds.get('type')} of several data "
            'sets; pseudo-masks need one data set (one image folder)')
    if split not in ('train', 'val', 'test'):
        raise ValueError(f"split must be 'train', 'val' or 'test', got "
                         f'{split!r}')
    if 'split' in ds or split != 'train':
        ds['split'] = split
        ds.pop('data_prefix', None)
    if data_root is not None:
        ds['data_root'] = data_root
    ds['pipeline'] = [dict(t) for t in DETERMINISTIC_PIPELINE]
    return ds


def build_pseudo_mask_dataset(cfg: Config, split: str = 'train',
                              data_root: Optional[str] = None):
    """Build :func:`pseudo_mask_dataset_cfg` in the config's registry
    scope."""
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    return DATASETS.build(pseudo_mask_dataset_cfg(cfg, split, data_root))


def planned_outputs(dataset, out_dir: str) -> List[Tuple[str, str]]:
    """``(image path, mask path)`` for every sample, in data set order."""
    pairs, seen = [], {}
    for idx in range(len(dataset)):
        img_path = dataset.get_data_info(idx)['img_path']
        name = mask_name_for(img_path)
        if name in seen:
            raise ValueError(
                f"images '{seen[name]}' and '{img_path}' would both get the "
                f"pseudo-mask name '{name}'")
        seen[name] = img_path
        pairs.append((img_path, osp.join(out_dir, name)))
    return pairs


def check_output_folder(out_dir: str, mask_paths: Sequence[str],
                        overwrite: bool) -> None:
    """Refuse to replace existing files unless ``overwrite``.

    Raises:
        NotADirectoryError: ``out_dir`` exists and is a file.
        FileExistsError: some planned output (a mask or the meta file)
            already exists and ``overwrite`` is False; names the folder.
    """
    refuse_to_overwrite(out_dir,
                        list(mask_paths) + [osp.join(out_dir, META_FILE)],
                        overwrite, 'old pseudo-masks')


def foreign_pngs(out_dir: str, mask_paths: Sequence[str]) -> List[str]:
    """PNG files in ``out_dir`` that this run does not write."""
    ours = {osp.basename(p) for p in mask_paths}
    with os.scandir(out_dir) as entries:
        return sorted(e.name for e in entries
                      if e.name.endswith(MASK_SUFFIX) and e.name not in ours)


# ------------------------------------------------------ training stage 2
def balanced_class_weights(shares: Sequence[float]) -> List[float]:
    """Cross-entropy class weights for a second stage trained on
    pseudo-masks: the inverse square root of each class's pixel share,
    scaled to a mean of 1 over the classes present.

    Pseudo-masks under-label the rare classes (e.g. necrosis), and an
    unweighted second stage can then stop predicting them at all.  A class
    with no pixels gets weight 1 (it contributes no loss anyway).

    Args:
        shares: (C,) pixel shares of the classes in the pseudo-masks, each
            >= 0, summing to > 0 (e.g. ``pixel_shares`` of the meta file).

    Returns:
        list[float]: (C,) weights, rounded to 4 decimals.

    Example:
        shares (0.64, 0.16, 0.04, 0.16) -> 1 / sqrt = (1.25, 2.5, 5, 2.5),
        mean 2.8125 -> (0.4444, 0.8889, 1.7778, 0.8889).
    """
    values = [float(s) for s in shares]
    if not values or any(v < 0 or v != v for v in values) or \
            sum(values) <= 0:
        raise ValueError(f'pixel shares must be >= 0 with a positive sum, '
                         f'got {list(shares)!r}')
    raw = [v**-0.5 if v > 0 else None for v in values]
    present = [r for r in raw if r is not None]
    mean = sum(present) / len(present)
    return [round(r / mean, 4) if r is not None else 1.0 for r in raw]


def summary_class_weights(summary: dict) -> List[float]:
    """:func:`balanced_class_weights` of a pseudo-mask summary (the meta
    file's ``classes`` and ``pixel_shares``), in its class order."""
    return balanced_class_weights(
        [summary['pixel_shares'][name] for name in summary['classes']])


def class_weight_option(weights: Sequence[float]) -> str:
    """The ``--cfg-options`` entry that sets a second stage's
    cross-entropy class weights, e.g.
    ``model.decode_head.loss_decode.class_weight=[0.5,1.5]``."""
    values = ','.join(f'{w:g}' for w in weights)
    return f'model.decode_head.loss_decode.class_weight=[{values}]'


def stage2_class_weight(mask_dir: str) -> List[float]:
    """:func:`balanced_class_weights` of the pseudo-masks in ``mask_dir``,
    from the ``pixel_shares`` of its meta file, in the meta's class order.

    Raises:
        FileNotFoundError: the folder has no meta file.
        KeyError: the meta file has no ``pixel_shares``/``classes``.
    """
    import json
    path = osp.join(mask_dir, META_FILE)
    if not osp.isfile(path):
        raise FileNotFoundError(f'{path}: no pseudo-mask meta file; write '
                                'the masks with tools/make_pseudo_masks.py')
    with open(path) as f:
        meta = json.load(f)
    for key in ('classes', 'pixel_shares'):
        if key not in meta:
            raise KeyError(f'{path}: no {key!r} entry')
    return summary_class_weights(meta)
