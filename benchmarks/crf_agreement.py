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

    python benchmarks/crf_agreement.py --size 128 --num-images 8 --downsample 1 2 3
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

from lpd_mmseg.models.crf import (DenseCRFParams, dense_crf_pydensecrf,  # noqa: E402
                                  dense_crf_torch)

# H&E-like colours: tumour, stroma, lymphocytes, necrosis, background.
PALETTE = ((205, 90, 160), (105, 60, 175), (235, 210, 225), (150, 30, 90), (248, 246, 248))


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--out', default=os.path.join('benchmarks', 'results',
                                                      'crf_agreement.json'),
                        help='JSON file to write')
    parser.add_argument('--size', type=int, default=128,
                        help='side of the square maps used for the agreement')
    parser.add_argument('--num-images', type=int, default=8,
                        help='number of generated maps for the agreement')
    parser.add_argument('--downsample', type=int, nargs='+', default=[2],
                        help='dense_crf_torch downsample settings to compare')
    parser.add_argument('--truncate', type=float, default=3.0,
                        help='dense_crf_torch truncate setting')
    parser.add_argument('--timing-size', type=int, default=224,
                        help='side of the square maps used for timing')
    parser.add_argument('--timing-images', type=int, default=4,
                        help='images per timing run (torch gets them as one batch)')
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    args = parser.parse_args(argv)
    for name in ('size', 'num_images', 'timing_size', 'timing_images'):
        if getattr(args, name) < 1:
            parser.error(f'--{name.replace("_", "-")} must be >= 1')
    return args


# ---------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------
def smooth_noise(gen: torch.Generator, channels: int, size: int, cell: int) -> torch.Tensor:
    """(channels, size, size) Gaussian noise upsampled bicubically from a coarse grid."""
    coarse_side = max(2, size // cell)
    coarse = torch.randn(1, channels, coarse_side, coarse_side, generator=gen)
    return F.interpolate(coarse, size=(size, size), mode='bicubic', align_corners=False)[0]


def make_case(gen: torch.Generator, num_classes: int, size: int) -> Tuple[np.ndarray, np.ndarray]:
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
    image = palette[field.argmax(0)] + 12.0 * torch.randn(size, size, 3, generator=gen)
    logits = 2.0 * (field + 0.8 * smooth_noise(gen, num_classes, size, 8)
                    + smooth_noise(gen, num_classes, size, 2))
    probs = torch.softmax(logits, dim=0).numpy().astype(np.float32)
    return probs, image.clamp(0, 255).to(torch.uint8).numpy()


def make_cases(seed: int, count: int, size: int) -> List[Tuple[np.ndarray, np.ndarray]]:
    """``count`` cases cycling through 2 to 5 classes."""
    gen = torch.Generator().manual_seed(seed)
    return [make_case(gen, 2 + i % 4, size) for i in range(count)]


def to_batch(cases: List[Tuple[np.ndarray, np.ndarray]]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Stack same-C cases into (B, C, H, W) probabilities and (B, 3, H, W) images."""
    probs = torch.from_numpy(np.stack([p for p, _ in cases]))
    images = torch.from_numpy(np.stack([im for _, im in cases])).permute(0, 3, 1, 2)
    return probs, images


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
                                  truncate=truncate, downsample=downsample)[0].numpy()
            agree.append(float((out.argmax(0) == ref.argmax(0)).mean()))
            mad.append(float(np.abs(out - ref).mean()))
        results[f'downsample={downsample}'] = {
            'argmax_agreement_mean': float(np.mean(agree)),
            'argmax_agreement_min': float(np.min(agree)),
            'mean_abs_prob_diff_mean': float(np.mean(mad)),
            'per_image_agreement': agree,
            'per_image_mean_abs_prob_diff': mad,
        }
    changed = [float((ref.argmax(0) != p.argmax(0)).mean()) for (p, _), ref in zip(cases, refs)]
    results['pydensecrf_changed_argmax_fraction_mean'] = float(np.mean(changed))
    return results


def seconds_per_call(fn: Callable[[], object], repeats: int, sync: Callable[[], None]) -> float:
    """Median wall time of ``fn`` over ``repeats`` runs after one warm-up run."""
    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def timing(cases, params: DenseCRFParams, truncate: float, downsamples: List[int],
           have_pydensecrf: bool) -> Dict[str, float]:
    """Seconds per image of each backend and device."""
    n = len(cases)
    results = {}
    if have_pydensecrf:
        run_ref = lambda: [dense_crf_pydensecrf(p, im, params) for p, im in cases]  # noqa: E731
        results['pydensecrf_cpu_s_per_image'] = seconds_per_call(run_ref, 2, lambda: None) / n
    probs, images = to_batch(cases)
    devices = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])
    for device in devices:
        sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)
        p_dev, im_dev = probs.to(device), images.to(device)
        for downsample in downsamples:
            run = lambda: dense_crf_torch(p_dev, im_dev, params, truncate=truncate,  # noqa: E731
                                          downsample=downsample, chunk_size=n)
            key = f'torch_{device}_downsample={downsample}_s_per_image'
            results[key] = seconds_per_call(run, 2 if device == 'cpu' else 5, sync) / n
    return results


def environment() -> Dict[str, object]:
    """Device, versions, date and the command line."""
    try:
        import pydensecrf  # noqa: F401
        have_pydensecrf = True
    except ImportError:
        have_pydensecrf = False
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'command': shlex.join(['python'] + sys.argv),
        'torch_version': torch.__version__,
        'numpy_version': np.__version__,
        'python_version': platform.python_version(),
        'cpu': cpu_name(),
        'torch_cpu_threads': torch.get_num_threads(),
        'cuda_device': cuda,
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
    params = DenseCRFParams()
    report = environment()
    report['params'] = dataclasses.asdict(params)
    report['settings'] = {
        'size': args.size, 'num_images': args.num_images, 'downsample': args.downsample,
        'truncate': args.truncate, 'timing_size': args.timing_size,
        'timing_images': args.timing_images, 'seed': args.seed,
    }
    if report['pydensecrf_available']:
        cases = make_cases(args.seed, args.num_images, args.size)
        report['agreement'] = agreement(cases, params, args.truncate, args.downsample)
    else:
        report['agreement'] = None
        print('pydensecrf is not installed (`make crf`): agreement skipped, '
              'torch timing only', file=sys.stderr)
    # Timing on 5-class maps: the BCSS-WSSS case of 4 tissues + background.
    gen = torch.Generator().manual_seed(args.seed + 1)
    timing_cases = [make_case(gen, 5, args.timing_size) for _ in range(args.timing_images)]
    report['timing'] = timing(timing_cases, params, args.truncate, args.downsample,
                              report['pydensecrf_available'])
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
            lines.append(f"{key}: argmax agreement mean {value['argmax_agreement_mean']:.4f} "
                         f"(min {value['argmax_agreement_min']:.4f}), mean |dp| "
                         f"{value['mean_abs_prob_diff_mean']:.4f}")
    for key, value in report['timing'].items():
        lines.append(f'{key}: {value:.4f}')
    return '\n'.join(lines)


if __name__ == '__main__':
    main()
