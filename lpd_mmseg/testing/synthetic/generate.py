"""Entry point: :func:`generate_synthetic_bcss` and its summary."""
import os
import os.path as osp
from typing import Dict

import numpy as np

from .manifest import (
    build_manifest,
    make_dirs,
    prepare_out_dir,
    remove_owned,
    write_json_atomic,
)
from .naming import plan_split
from .params import (
    CLASS_NAMES,
    GENERATOR_VERSION,
    MANIFEST_NAME,
    SPLITS,
    check_class_mix,
    check_int,
    check_size,
)
from .writer import RenderJob, run_jobs


def make_params(seed: int = 0,
                num_train: int = 200,
                num_val: int = 40,
                num_test: int = 40,
                size: int = 224,
                with_train_masks: bool = False,
                class_mix: str = 'bcss') -> dict:
    """Validated generation parameters (what the manifest records).

    ``class_mix`` is recorded only when it is not the default ``'bcss'``,
    so that data sets written before it existed are still recognised.

    Raises:
        ValueError: a count is negative or all are zero, ``size`` is outside
            32..2048, ``seed`` is negative, or a value has the wrong type.
    """
    params = dict(generator_version=GENERATOR_VERSION,
                  seed=check_int('seed', seed, 0, 2**63 - 1),
                  num_train=check_int('num_train', num_train, 0),
                  num_val=check_int('num_val', num_val, 0),
                  num_test=check_int('num_test', num_test, 0),
                  size=check_size(size),
                  with_train_masks=bool(with_train_masks))
    if check_class_mix(class_mix) != 'bcss':
        params['class_mix'] = class_mix
    if params['num_train'] + params['num_val'] + params['num_test'] == 0:
        raise ValueError('num_train, num_val and num_test are all 0; '
                         'nothing to generate')
    return params


def generate_synthetic_bcss(out_dir: str,
                            seed: int = 0,
                            num_train: int = 200,
                            num_val: int = 40,
                            num_test: int = 40,
                            size: int = 224,
                            with_train_masks: bool = False,
                            class_mix: str = 'bcss',
                            overwrite: bool = False,
                            workers: int = 1,
                            progress: bool = True) -> dict:
    """Write a synthetic data set in the BCSS-WSSS layout.

    Layout::

        out_dir/training/<source>+<i>[abcd].png    RGB, label in the name
        out_dir/training_masks/<same name>.png     only with_train_masks
        out_dir/{val,test}/img/<source>+<i>.png    RGB
        out_dir/{val,test}/mask/<source>+<i>.png   palette PNG, values 0..4
        out_dir/synthetic_manifest.json            parameters and statistics

    An ``out_dir`` that already holds a complete data set with the same
    parameters is reused untouched.  A non-empty ``out_dir`` holding
    anything else is refused unless ``overwrite``; even then only
    :data:`OWNED_ENTRIES` of an earlier generated data set (one with a
    manifest) are removed.  A folder with ``training/``, ``val/`` or
    ``test/`` but no manifest may be a real data set and is always refused.

    Args:
        out_dir (str): data set root.
        seed (int): non-negative seed; same parameters give identical bytes.
        num_train (int): training patches (weak labels in the names).
        num_val (int): validation patches with masks.
        num_test (int): test patches with masks.
        size (int): patch side in pixels, 32..2048.
        with_train_masks (bool): also write ``training_masks/`` (for a fully
            supervised upper bound; not part of the real layout).
        class_mix (str): which classes patches hold: ``'bcss'`` (default,
            BCSS-WSSS-like shares) or ``'multi'`` (more multi-class
            patches, more lymphocytes and necrosis); see
            :data:`CLASS_MIXES`.
        overwrite (bool): regenerate even when ``out_dir`` is not empty.
        workers (int): processes; results do not depend on it.
        progress (bool): show a progress bar.

    Returns:
        dict: the manifest, plus ``out_dir`` and ``reused`` (True when an
        existing data set was kept); those two keys are not in the file.

    Raises:
        ValueError: bad arguments.
        FileExistsError: ``out_dir`` cannot be used without ``overwrite``.
    """
    params = make_params(seed, num_train, num_val, num_test, size,
                         with_train_masks, class_mix)
    workers = check_int('workers', workers, 1)
    if not isinstance(out_dir, (str, os.PathLike)) or not str(out_dir):
        raise ValueError(f'out_dir must be a folder path, got {out_dir!r}')
    out_dir = os.fspath(out_dir)
    existing = prepare_out_dir(out_dir, params, overwrite)
    if existing is not None:
        return dict(existing, out_dir=out_dir, reused=True)
    os.makedirs(out_dir, exist_ok=True)
    remove_owned(out_dir)
    make_dirs(out_dir, params['with_train_masks'])
    jobs = []
    for split in SPLITS:
        count = params[f'num_{split}']
        with_mask = split != 'train' or params['with_train_masks']
        for index, (stem, slide) in enumerate(
                plan_split(params['seed'], split, count)):
            jobs.append(
                RenderJob(params['seed'], split, index, slide, stem,
                          params['size'], out_dir, with_mask,
                          params.get('class_mix', 'bcss')))
    results = run_jobs(jobs, workers, progress)
    manifest = build_manifest(params, results)
    write_json_atomic(manifest, osp.join(out_dir, MANIFEST_NAME))
    return dict(manifest, out_dir=out_dir, reused=False)


def overall_pixel_frequencies(manifest: dict) -> Dict[str, float]:
    """Pixel share of each class over all splits of a manifest."""
    totals = np.zeros(len(CLASS_NAMES))
    for split, stats in manifest['splits'].items():
        pixels = stats['count'] * manifest['params']['size']**2
        for c, name in enumerate(CLASS_NAMES):
            totals[c] += stats['pixel_frequencies'][name] * pixels
    totals /= max(totals.sum(), 1e-12)
    return {name: float(totals[c]) for c, name in enumerate(CLASS_NAMES)}


def format_summary(manifest: dict) -> str:
    """One line: where the data set is, its counts and class frequencies.

    Args:
        manifest (dict): as returned by :func:`generate_synthetic_bcss`.

    Returns:
        str: human-readable summary.
    """
    counts = manifest['counts']
    freqs = overall_pixel_frequencies(manifest)
    train = manifest['splits']['train']['image_label_counts']
    state = 'reused' if manifest.get('reused') else 'written'
    where = manifest.get('out_dir', '?')
    return (f"Synthetic BCSS-WSSS data set {state} at {where}: "
            f"train {counts['train']}, val {counts['val']}, "
            f"test {counts['test']} patches of "
            f"{manifest['params']['size']} px; pixel frequencies " +
            ' '.join(f'{k} {v:.3f}' for k, v in freqs.items()) +
            '; training images per class ' +
            ' '.join(f'{k} {v}' for k, v in train.items()))
