#!/usr/bin/env python
"""Compare the PyTorch dense CRF with the reference pydensecrf.

On generated tissue-like probability maps and matching noisy H&E-coloured
images, measures

(a) argmax pixel agreement and mean absolute probability difference between
    ``dense_crf_torch`` and ``dense_crf_pydensecrf`` (same DenseCRFParams, the
    paper's defaults), for each requested ``--downsample`` setting;
(b) time per image of each backend at ``--timing-size`` (224 by default):
    pydensecrf on CPU, torch on CPU and, when available, on CUDA.

Writes machine-readable JSON (device, torch version, date, command, settings
and every measurement).  Example::

    python benchmarks/crf_agreement.py --size 128 --num-images 8 \\
        --downsample 1 2 3
"""
import argparse
import dataclasses
import datetime
import json
import os
import platform
import shlex
import sys
import time
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from lpd_mmseg.models.crf import (  # noqa: E402
    DenseCRFParams,
    dense_crf_pydensecrf,
    dense_crf_torch,
)

# H&E-like colours: tumour, stroma, lymphocytes, necrosis, background.
PALETTE = ((205, 90, 160), (105, 60, 175), (235, 210, 225), (150, 30, 90),
           (248, 246, 248))


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add = parser.add_argument
    add('--out', default=os.path.join('benchmarks', 'results',
                                      'crf_agreement.json'),
        help='JSON file to write')
    add('--size', type=int, default=128,
        help='side of the square maps used for the agreement')
    add('--num-images', type=int, default=8,
        help='number of generated maps for the agreement')
    add('--downsample', type=int, nargs='+', default=[2],
        help='dense_crf_torch downsample settings to compare')
    add('--truncate', type=float, default=3.0,
        help='dense_crf_torch truncate setting')
    add('--timing-size', type=int, default=224,
        help='side of the square maps used for timing')
    add('--timing-images', type=int, default=4,
        help='images per timing run (torch gets them as one batch)')
    add('--repeats', type=int, default=2,
        help='timed runs per measurement, after one warm-up run; the '
        'median is reported')
    add('--threads', type=int, default=None,
        help='torch CPU threads (default: torch\'s own choice); 1 gives '
        'steadier CPU timings on a machine shared with other jobs')
    add('--seed', type=int, default=0, help='random seed')
    args = parser.parse_args(argv)
    positive = ['size', 'num_images', 'timing_size', 'timing_images',
                'repeats'] + ([] if args.threads is None else ['threads'])
    for name in positive:
        if getattr(args, name) < 1:
            parser.error(f'--{name.replace("_", "-")} must be >= 1')
    return args


# ---------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------
def smooth_noise(gen: torch.Generator, channels: int, size: int,
                 cell: int) -> torch.Tensor:
    """(channels, size, size) coarse Gaussian noise, upsampled bicubically."""
    coarse_side = max(2, size // cell)
    coarse = torch.randn(1, channels, coarse_side, coarse_side, generator=gen)
    return F.interpolate(coarse, size=(size, size), mode='bicubic',
                         align_corners=False)[0]


def make_case(gen: torch.Generator, num_classes: int,
              size: int) -> Tuple[np.ndarray, np.ndarray]:
    """One probability map and its image.

    The tissue layout is the argmax of a smooth random field; the image
    paints it with H&E-like colours plus pixel noise; the probabilities are a
    softmax of the same field disturbed at coarser and finer scales, so they
    are right in most places but blurred and noisy at the region borders.

    Returns:
        tuple: (C, H, W) float32 probabilities and (H, W, 3) uint8 RGB image.
    """
    field = smooth_noise(gen, num_classes, size, 16)
    palette = torch.tensor(PALETTE[:num_classes], dtype=torch.float32)
    noise = torch.randn(size, size, 3, generator=gen)
    image = (palette[field.argmax(0)] + 12.0 * noise).clamp(0, 255)
    logits = 2.0 * (field + 0.8 * smooth_noise(gen, num_classes, size, 8)
                    + smooth_noise(gen, num_classes, size, 2))
    probs = torch.softmax(logits, dim=0).numpy().astype(np.float32)
    return probs, image.to(torch.uint8).numpy()


def make_cases(seed: int, count: int,
               size: int) -> List[Tuple[np.ndarray, np.ndarray]]:
    """``count`` cases cycling through 2 to 5 classes."""
    gen = torch.Generator().manual_seed(seed)
    return [make_case(gen, 2 + i % 4, size) for i in range(count)]


def to_batch(cases: List[Tuple[np.ndarray, np.ndarray]]
             ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Stack same-C cases: (B, C, H, W) probabilities, (B, 3, H, W) images."""
    probs = torch.from_numpy(np.stack([p for p, _ in cases]))
    images = torch.from_numpy(np.stack([im for _, im in cases]))
    return probs, images.permute(0, 3, 1, 2)


# ---------------------------------------------------------------------------
# measurements
# ---------------------------------------------------------------------------
def agreement(cases, params: DenseCRFParams, truncate: float,
              downsamples: List[int]) -> Dict[str, Dict]:
    """Argmax agreement and mean |dp| of torch vs pydensecrf per downsample."""
    refs = [dense_crf_pydensecrf(p, im, params) for p, im in cases]
    results = {}
    for downsample in downsamples:
        agree, mad = [], []
        for (probs, image), ref in zip(cases, refs):
            out = dense_crf_torch(*to_batch([(probs, image)]), params,
                                  truncate=truncate, downsample=downsample)
            out = out[0].numpy()
            agree.append(float((out.argmax(0) == ref.argmax(0)).mean()))
            mad.append(float(np.abs(out - ref).mean()))
        results[f'downsample={downsample}'] = {
            'argmax_agreement_mean': float(np.mean(agree)),
            'argmax_agreement_min': float(np.min(agree)),
            'mean_abs_prob_diff_mean': float(np.mean(mad)),
            'per_image_agreement': agree,
            'per_image_mean_abs_prob_diff': mad,
        }
    changed = [(ref.argmax(0) != p.argmax(0)).mean()
               for (p, _), ref in zip(cases, refs)]
    # How much the reference CRF changes the labels: agreement is only
    # informative where this is well above 1 - agreement.
    results['pydensecrf_changed_argmax_fraction_mean'] = float(
        np.mean(changed))
    return results


def seconds_per_call(fn: Callable[[], object], repeats: int,
                     sync: Callable[[], None]) -> float:
    """Median wall time of ``fn`` over ``repeats`` runs after a warm-up."""
    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def no_sync() -> None:
    """Nothing to wait for on the CPU."""


def timing(cases, params: DenseCRFParams, truncate: float,
           downsamples: List[int], have_pydensecrf: bool,
           repeats: int) -> Dict[str, float]:
    """Seconds per image of each backend and device."""
    n = len(cases)
    results = {}
    if have_pydensecrf:
        def run_reference():
            for probs, image in cases:
                dense_crf_pydensecrf(probs, image, params)

        results['pydensecrf_cpu_s_per_image'] = seconds_per_call(
            run_reference, repeats, no_sync) / n
    probs, images = to_batch(cases)
    devices = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])
    for device in devices:
        sync = torch.cuda.synchronize if device == 'cuda' else no_sync
        p_dev, im_dev = probs.to(device), images.to(device)
        for downsample in downsamples:
            def run_torch(downsample=downsample):
                dense_crf_torch(p_dev, im_dev, params, truncate=truncate,
                                downsample=downsample, chunk_size=n)

            key = f'torch_{device}_downsample={downsample}_s_per_image'
            results[key] = seconds_per_call(run_torch, repeats, sync) / n
    return results


def environment() -> Dict[str, object]:
    """Device, versions, date and the command line."""
    try:
        import pydensecrf  # noqa: F401
        have_pydensecrf = True
    except ImportError:
        have_pydensecrf = False
    cuda = torch.cuda.is_available()
    now = datetime.datetime.now(datetime.timezone.utc)
    return {
        'date': now.isoformat(timespec='seconds'),
        'command': shlex.join(['python'] + sys.argv),
        'torch_version': torch.__version__,
        'numpy_version': np.__version__,
        'python_version': platform.python_version(),
        'cpu': cpu_name(),
        'cpu_count': os.cpu_count(),
        'torch_cpu_threads': torch.get_num_threads(),
        # Other processes on the machine slow the CPU timings down.
        'load_average_1min_at_start': os.getloadavg()[0],
        'cuda_device': torch.cuda.get_device_name(0) if cuda else None,
        'pydensecrf_available': have_pydensecrf,
    }


def cpu_name() -> str:
    """CPU model name from /proc/cpuinfo, else platform.processor()."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown'


def main(argv: Optional[List[str]] = None) -> Dict[str, object]:
    """Run the measurements and write the JSON report."""
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    params = DenseCRFParams()
    report = environment()
    report['params'] = dataclasses.asdict(params)
    report['settings'] = {
        key: getattr(args, key)
        for key in ('size', 'num_images', 'downsample', 'truncate',
                    'timing_size', 'timing_images', 'repeats', 'threads',
                    'seed')
    }
    if report['pydensecrf_available']:
        cases = make_cases(args.seed, args.num_images, args.size)
        report['agreement'] = agreement(cases, params, args.truncate,
                                        args.downsample)
    else:
        report['agreement'] = None
        print('pydensecrf is not installed (`make crf`): agreement skipped, '
              'torch timing only', file=sys.stderr)
    # Timing on 5-class maps: the BCSS-WSSS case of 4 tissues + background.
    gen = torch.Generator().manual_seed(args.seed + 1)
    timing_cases = [make_case(gen, 5, args.timing_size)
                    for _ in range(args.timing_images)]
    report['timing'] = timing(timing_cases, params, args.truncate,
                              args.downsample, report['pydensecrf_available'],
                              args.repeats)
    report['load_average_1min_at_end'] = os.getloadavg()[0]
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, 'w') as f:
        json.dump(report, f, indent=2)
    print(summary(report))
    print(f'wrote {args.out}')
    return report


def summary(report: Dict[str, object]) -> str:
    """Short human-readable digest of the report."""
    lines = []
    for key, value in (report['agreement'] or {}).items():
        if isinstance(value, dict):
            mean = value['argmax_agreement_mean']
            worst = value['argmax_agreement_min']
            mad = value['mean_abs_prob_diff_mean']
            lines.append(f'{key}: argmax agreement mean {mean:.4f} '
                         f'(min {worst:.4f}), mean |dp| {mad:.4f}')
    for key, value in report['timing'].items():
        lines.append(f'{key}: {value:.4f}')
    return '\n'.join(lines)


if __name__ == '__main__':
    main()
