"""The manifest of a generated set and the output folder checks."""
import json
import os
import os.path as osp
import shutil
from typing import Dict, List, Optional

import numpy as np

from .naming import count_slides
from .params import (
    BACKGROUND,
    CLASS_NAMES,
    MANIFEST_NAME,
    MIN_CLASS_FRACTION,
    MORPHOLOGIES,
    OWNED_ENTRIES,
    PALETTE,
    SPLITS,
    TISSUE_CLASSES,
    min_class_pixels,
)
from .writer import RenderResult, split_dirs


# --------------------------------------------------------------- manifest
def _split_statistics(results: List[RenderResult]) -> dict:
    pixels = np.zeros(len(CLASS_NAMES), np.int64)
    labels = np.zeros(len(TISSUE_CLASSES), np.int64)
    singles = np.zeros(len(TISSUE_CLASSES), np.int64)
    combos: Dict[str, int] = {}
    morph = {
        CLASS_NAMES[c]: {
            m: 0
            for m in names
        }
        for c, names in MORPHOLOGIES.items()
    }
    with_background = 0
    for r in results:
        counts = np.asarray(r.pixel_counts)
        pixels += counts
        bits = np.array([int(ch) for ch in r.label])
        labels += bits
        if bits.sum() == 1:
            singles += bits
        combos[r.label] = combos.get(r.label, 0) + 1
        with_background += int(counts[BACKGROUND] > 0)
        for c, name in r.morphologies.items():
            morph[CLASS_NAMES[c]][name] += 1
    total = max(int(pixels.sum()), 1)
    return dict(count=len(results),
                pixel_frequencies={
                    CLASS_NAMES[c]: round(float(pixels[c]) / total, 6)
                    for c in range(len(CLASS_NAMES))
                },
                image_label_counts={
                    CLASS_NAMES[c]: int(labels[c])
                    for c in TISSUE_CLASSES
                },
                single_label_counts={
                    CLASS_NAMES[c]: int(singles[c])
                    for c in TISSUE_CLASSES
                },
                label_combinations=dict(sorted(combos.items())),
                patches_with_background=with_background,
                morphology_counts=morph)


def build_manifest(params: dict, results: List[RenderResult]) -> dict:
    by_split = {
        split: [r for r in results if r.split == split]
        for split in SPLITS
    }
    return dict(
        generator='lpd_mmseg.testing.synthetic',
        layout='BCSS-WSSS',
        params=params,
        classes=list(CLASS_NAMES),
        palette=[list(c) for c in PALETTE],
        label_order=list(CLASS_NAMES[:len(TISSUE_CLASSES)]),
        min_class_fraction=MIN_CLASS_FRACTION,
        min_class_pixels=min_class_pixels(params['size']),
        counts={split: len(by_split[split])
                for split in SPLITS},
        num_slides={
            split:
            count_slides(params[f'num_{split}'])
            if params[f'num_{split}'] else 0
            for split in SPLITS
        },
        splits={split: _split_statistics(by_split[split])
                for split in SPLITS})


def write_json_atomic(data: dict, path: str) -> None:
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(data, f, indent=2, sort_keys=False)
        f.write('\n')
    os.replace(tmp, path)


def _read_manifest(out_dir: str) -> Optional[dict]:
    path = osp.join(out_dir, MANIFEST_NAME)
    if not osp.isfile(path):
        return None
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _count_pngs(folder: str) -> int:
    if not osp.isdir(folder):
        return -1
    return sum(1 for n in os.listdir(folder) if n.endswith('.png'))


def _missing_files(out_dir: str, manifest: dict) -> List[str]:
    """Folders whose PNG count differs from the manifest's counts."""
    counts = manifest.get('counts', {})
    with_masks = manifest.get('params', {}).get('with_train_masks', False)
    problems = []
    for split in SPLITS:
        img_dir, mask_dir = split_dirs(out_dir, split)
        folders = [img_dir]
        if split != 'train' or with_masks:
            folders.append(mask_dir)
        for folder in folders:
            found = _count_pngs(folder)
            if found != counts.get(split):
                problems.append(f'{folder}: {max(found, 0)} PNGs, manifest '
                                f'says {counts.get(split)}')
    return problems


def _param_diff(old: dict, new: dict) -> str:
    keys = sorted(set(old) | set(new))
    return ', '.join(f'{k}: {old.get(k)!r} -> {new.get(k)!r}' for k in keys
                     if old.get(k) != new.get(k))


def remove_owned(out_dir: str) -> None:
    for entry in OWNED_ENTRIES:
        path = osp.join(out_dir, entry)
        if osp.isdir(path) and not osp.islink(path):
            shutil.rmtree(path)
        elif osp.lexists(path):
            os.remove(path)


def prepare_out_dir(out_dir: str, params: dict,
                    overwrite: bool) -> Optional[dict]:
    """Check ``out_dir``; return an existing manifest to reuse, else None.

    Raises:
        FileExistsError: ``out_dir`` is a file, holds other data, or holds a
            synthetic data set of other parameters, and ``overwrite`` is off.
    """
    if osp.exists(out_dir) and not osp.isdir(out_dir):
        raise FileExistsError(f"'{out_dir}' exists and is not a folder")
    if not osp.isdir(out_dir) or not os.listdir(out_dir):
        return None
    manifest = _read_manifest(out_dir)
    hint = ('Pass overwrite=True (--overwrite) to regenerate; that removes '
            f'only {", ".join(OWNED_ENTRIES)} inside it.  Or choose another '
            'folder.')
    if manifest is None:
        foreign = [
            e for e in OWNED_ENTRIES if osp.lexists(osp.join(out_dir, e))
        ]
        if foreign:
            # Possibly a real data set: never delete what we did not write.
            raise FileExistsError(
                f"'{out_dir}' holds {', '.join(foreign)} but no "
                f'{MANIFEST_NAME}, so they were not written by this generator '
                '(they may be a real data set); refusing to write into it or '
                'remove them, even with overwrite. Choose another folder.')
        if overwrite:
            return None
        raise FileExistsError(
            f"'{out_dir}' is not empty and holds no readable "
            f'{MANIFEST_NAME}, so it was not written (completely) by this '
            f'generator; refusing to write into it. {hint}')
    if overwrite:
        return None
    if manifest.get('params') != params:
        raise FileExistsError(
            f"'{out_dir}' holds a synthetic data set made with other "
            f"parameters ({_param_diff(manifest.get('params', {}), params)})."
            f' {hint}')
    problems = _missing_files(out_dir, manifest)
    if problems:
        raise FileExistsError(
            f"'{out_dir}' holds a synthetic data set with the same "
            'parameters, but its files do not match its manifest: ' +
            '; '.join(problems[:4]) + f'. {hint}')
    return manifest


def make_dirs(out_dir: str, with_train_masks: bool) -> None:
    for split in SPLITS:
        img_dir, mask_dir = split_dirs(out_dir, split)
        os.makedirs(img_dir, exist_ok=True)
        if split != 'train' or with_train_masks:
            os.makedirs(mask_dir, exist_ok=True)
