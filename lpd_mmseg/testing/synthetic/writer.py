"""Rendering jobs on worker processes and the files they write."""
import multiprocessing
import os.path as osp
from typing import Dict, List, NamedTuple, Optional, Tuple

import cv2
import numpy as np
from PIL import Image

from ...datasets.palette import save_palette_mask
from ...engine.progress import TextProgress
from .naming import (
    composition_for_index,
    label_string,
    sample_rng,
    slide_style,
)
from .params import CLASS_NAMES, PALETTE
from .render import render_sample


# ------------------------------------------------------------- file output
def save_rgb(rgb: np.ndarray, path: str) -> None:
    """Write a uint8 (S, S, 3) RGB array as PNG."""
    Image.fromarray(np.ascontiguousarray(rgb, np.uint8),
                    mode='RGB').save(path, format='PNG')


class RenderJob(NamedTuple):
    seed: int
    split: str
    index: int
    slide: int
    stem: str
    size: int
    out_dir: str
    with_mask: bool
    class_mix: str = 'bcss'


class RenderResult(NamedTuple):
    split: str
    index: int
    file_name: str
    pixel_counts: Tuple[int, ...]
    label: str
    morphologies: Dict[int, str]


def split_dirs(out_dir: str, split: str) -> Tuple[str, Optional[str]]:
    if split == 'train':
        return osp.join(out_dir, 'training'), osp.join(out_dir,
                                                       'training_masks')
    return osp.join(out_dir, split, 'img'), osp.join(out_dir, split, 'mask')


def _render_job(job: RenderJob) -> RenderResult:
    """Render one sample and write its files (runs in a worker)."""
    rng = sample_rng(job.seed, job.split, job.index)
    style = slide_style(job.seed, job.split, job.slide)
    classes = composition_for_index(rng, job.index, job.class_mix)
    sample = render_sample(rng, job.size, classes, style)
    label = label_string(sample.mask)
    if job.split == 'train':
        file_name = f'{job.stem}[{label}].png'
    else:
        file_name = f'{job.stem}.png'
    img_dir, mask_dir = split_dirs(job.out_dir, job.split)
    save_rgb(sample.rgb, osp.join(img_dir, file_name))
    if job.with_mask:
        save_palette_mask(sample.mask, osp.join(mask_dir, file_name), PALETTE)
    counts = np.bincount(sample.mask.ravel(), minlength=len(CLASS_NAMES))
    return RenderResult(job.split, job.index, file_name,
                        tuple(int(c) for c in counts), label,
                        sample.morphologies)


def _worker_init() -> None:
    cv2.setNumThreads(1)


def run_jobs(jobs: List[RenderJob], workers: int,
             progress: bool) -> List[RenderResult]:
    """Render all jobs, in order, on ``workers`` processes."""
    bar = TextProgress(len(jobs), 'patches', progress)
    results = []
    if workers == 1 or len(jobs) < 2:
        for job in jobs:
            results.append(_render_job(job))
            bar.update()
    else:
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context('fork' if 'fork' in
                                              methods else None)
        chunk = max(1, min(16, len(jobs) // (4 * workers)))
        with context.Pool(min(workers, len(jobs)), _worker_init) as pool:
            for result in pool.imap(_render_job, jobs, chunksize=chunk):
                results.append(result)
                bar.update()
    bar.close()
    return results
