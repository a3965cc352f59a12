#!/usr/bin/env python
"""Dense CRF benchmark: the PyTorch lattice backend against pydensecrf.

On generated tissue-like probability maps and matching noisy H&E-coloured
images (paper parameters, 2 to 5 classes), in one run:

(a) argmax pixel agreement and mean |dp| of ``dense_crf_torch`` (the
    permutohedral lattice) with ``dense_crf_pydensecrf`` at full resolution,
    and of the variant that blurs the position-only kernel exactly
    (separable dense products) instead of on a lattice;
(b) seconds per image of both backends at each ``--timing-sizes`` side and
    each ``--threads`` setting, alternating the backends so that load from
    other jobs hits both; pydensecrf always runs on one thread;
    ``torch_over_pydensecrf_speed`` > 1 means the lattice is faster;
(c) plain torch workloads (many element-wise ops, a few matrix products)
    at each ``--threads`` setting, to tell a slowdown of the CRF's own
    from one of a machine whose cores other jobs occupy;
(c') with CUDA, batched lattice throughput against pydensecrf's;
(d) a ``--region`` x ``--region`` 5-class map refined through
    ``build_crf(dict(backend='torch'))``: estimated memory (worst case and
    with the real vertex counts) against the default ``max_memory_gb``
    guard, and the measured peak resident memory.

Writes JSON (environment, command, settings, every measurement)::

    python benchmarks/crf_agreement.py                 # 4-10 min, 2 cores
    python benchmarks/crf_agreement.py --quick         # smoke run
"""
import argparse
import dataclasses
import json
import os
import sys
import time
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from benchmarks import common  # noqa: E402
from lpd_mmseg.models.crf import (  # noqa: E402
    DEFAULT_MAX_MEMORY_GB,
    DenseCRFParams,
    PermutohedralLattice,
    build_crf,
    dense_crf_pydensecrf,
    dense_crf_torch,
    dense_crf_torch_bytes,
    import_pydensecrf,
)
from lpd_mmseg.models.crf.torch_backend import (  # noqa: E402
    build_kernels,
    mean_field,
    pixel_features,
    unary_from_probs,
)

# ---------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------
# H&E-like colours: tumour, stroma, lymphocytes, necrosis, background.
PALETTE = ((205, 90, 160), (105, 60, 175), (235, 210, 225), (150, 30, 90),
           (248, 246, 248))


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


def make_cases(seed: int, count: int, size: int,
               classes: Optional[int] = None
               ) -> List[Tuple[np.ndarray, np.ndarray]]:
    """``count`` cases, cycling through 2 to 5 classes unless ``classes``."""
    gen = torch.Generator().manual_seed(seed)
    return [make_case(gen, classes or 2 + i % 4, size) for i in range(count)]


def to_batch(cases: List[Tuple[np.ndarray, np.ndarray]]
             ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Stack same-C cases: (B, C, H, W) probabilities, (B, 3, H, W) images."""
    probs = torch.from_numpy(np.stack([p for p, _ in cases]))
    images = torch.from_numpy(np.stack([im for _, im in cases]))
    return probs, images.permute(0, 3, 1, 2)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add = parser.add_argument
    add('--out', default=os.path.join(common.RESULTS, 'crf_agreement.json'),
        help='JSON file to write')
    add('--size', type=int, default=224,
        help='side of the square maps used for the agreement')
    add('--num-images', type=int, default=8,
        help='number of generated maps for the agreement')
    add('--timing-sizes', type=int, nargs='+', default=[224, 1024],
        help='sides of the square 5-class maps used for timing')
    add('--timing-pixels', type=int, default=4 * 224 * 224,
        help='pixels per timing batch (images = this / side^2, >= 1)')
    add('--threads', type=int, nargs='+', default=[1, 2],
        help='torch CPU thread settings to time')
    add('--repeats', type=int, default=3,
        help='timed A/B rounds per measurement after one warm-up; the '
        'median is reported')
    add('--region', type=int, default=2048,
        help='side of the memory-check region (0 skips it)')
    add('--seed', type=int, default=0, help='random seed')
    add('--render', metavar='JSON',
        help='only print the Markdown tables of an earlier report')
    add('--quick', action='store_true',
        help='smoke run: 64 px agreement on 2 maps, 96 px timing, 256 px '
        'region, 1 repeat')
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.num_images, args.timing_sizes = 64, 2, [96]
        args.timing_pixels, args.repeats, args.region = 96 * 96, 1, 256
    for name in ('size', 'num_images', 'timing_pixels', 'repeats'):
        if getattr(args, name) < 1:
            parser.error(f'--{name.replace("_", "-")} must be >= 1')
    if min(args.threads) < 1 or min(args.timing_sizes) < 1:
        parser.error('--threads and --timing-sizes must be >= 1')
    return args


# ---------------------------------------------------------------------------
# the alternative for the position-only kernel: exact separable blur
# ---------------------------------------------------------------------------
class ExactSpatialKernel:
    """Symmetrically normalised exact Gaussian on pixel positions.

    Separable: ``K q = G_h q G_w`` with dense ``(H, H)`` and ``(W, W)``
    Gaussian matrices, every pixel pair, the pixel itself included.
    """

    def __init__(self, height: int, width: int, sxy: float):
        def gaussian(size):
            idx = torch.arange(size, dtype=torch.float32)
            return torch.exp(-(idx[:, None] - idx[None]).square() /
                             (2 * sxy * sxy))

        self.rows, self.cols = gaussian(height), gaussian(width)
        self.shape = (height, width)
        ones = torch.ones(1, 1, height * width)
        self.inv_sqrt_norm = self.blur(ones).rsqrt()

    def blur(self, q: torch.Tensor) -> torch.Tensor:
        """(B, C, N) -> (B, C, N) unnormalised exact Gaussian sum."""
        b, c, _ = q.shape
        out = self.rows @ q.view(b, c, *self.shape) @ self.cols
        return out.reshape(b, c, -1)

    def __call__(self, q: torch.Tensor,
                 sums_to_one: bool = False) -> torch.Tensor:
        return self.inv_sqrt_norm * self.blur(q * self.inv_sqrt_norm)


@torch.no_grad()
def dense_crf_exact_spatial(probs: torch.Tensor, images: torch.Tensor,
                            params: DenseCRFParams) -> torch.Tensor:
    """The torch backend with the exact position-only kernel."""
    b, c, h, w = probs.shape
    terms = build_kernels(images.float(), dataclasses.replace(
        params, gaussian_compat=0.0))
    terms.insert(0, (float(params.gaussian_compat),
                     ExactSpatialKernel(h, w, params.gaussian_sxy)))
    q = mean_field(unary_from_probs(probs).flatten(2), terms,
                   params.iterations)
    return q.view(b, c, h, w)


# ---------------------------------------------------------------------------
# measurements
# ---------------------------------------------------------------------------
def agreement(cases, params: DenseCRFParams,
              solver: Callable = dense_crf_torch) -> Dict[str, object]:
    """Argmax agreement and mean |dp| of a torch solver vs pydensecrf."""
    agree, mad, changed = [], [], []
    for probs, image in cases:
        ref = dense_crf_pydensecrf(probs, image, params)
        out = solver(*to_batch([(probs, image)]), params)[0].numpy()
        agree.append(float((out.argmax(0) == ref.argmax(0)).mean()))
        mad.append(float(np.abs(out - ref).mean()))
        # agreement is informative only where the CRF changes the labels
        changed.append(float((ref.argmax(0) != probs.argmax(0)).mean()))
    return {
        'argmax_agreement_mean': float(np.mean(agree)),
        'argmax_agreement_min': float(np.min(agree)),
        'mean_abs_prob_diff_mean': float(np.mean(mad)),
        'pydensecrf_changed_argmax_fraction_mean': float(np.mean(changed)),
        'per_image_agreement': agree,
        'per_image_mean_abs_prob_diff': mad,
    }


def no_sync() -> None:
    """Nothing to wait for on the CPU."""


def alternate(fns: Dict[str, Callable[[], object]], repeats: int,
              sync: Callable[[], None] = no_sync) -> Dict[str, float]:
    """Median seconds of each function, run in A/B rounds after a warm-up."""
    times = {name: [] for name in fns}
    for name, fn in fns.items():
        fn()
    sync()
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


def timing(args, params: DenseCRFParams,
           have_pydensecrf: bool) -> List[Dict[str, object]]:
    """Seconds per image of both backends per side and thread setting."""
    rows = []
    for size in args.timing_sizes:
        count = max(1, args.timing_pixels // (size * size))
        cases = make_cases(args.seed + 1, count, size, classes=5)
        probs, images = to_batch(cases)
        for threads in args.threads:
            torch.set_num_threads(threads)
            fns = {'torch': lambda: dense_crf_torch(probs, images, params)}
            if size <= 512:  # (H, H) and (W, W) dense matrices
                fns['torch_exact_spatial'] = lambda: dense_crf_exact_spatial(
                    probs, images, params)
            if have_pydensecrf:
                fns['pydensecrf'] = lambda: [
                    dense_crf_pydensecrf(p, im, params) for p, im in cases]
            load = os.getloadavg()[0]
            seconds = alternate(fns, args.repeats)
            row = dict(size=size, images=count, torch_threads=threads,
                       load_average_1min=load,
                       torch_s_per_image=seconds['torch'] / count)
            if 'torch_exact_spatial' in seconds:
                row['torch_exact_spatial_s_per_image'] = (
                    seconds['torch_exact_spatial'] / count)
            if have_pydensecrf:
                row['pydensecrf_s_per_image'] = seconds['pydensecrf'] / count
                row['torch_over_pydensecrf_speed'] = (
                    seconds['pydensecrf'] / seconds['torch'])
            rows.append(row)
            print(row, flush=True)
    return rows


def phase_profile(args, params: DenseCRFParams) -> Dict[str, object]:
    """Where the time of one image goes: median seconds of each phase.

    One ``--timing-sizes[0]`` px 5-class image, one thread, the cached
    position-only kernel warm (as for the second of many same-size
    tiles): pixel features, the bilateral lattice build, its
    normalisation, and the mean-field iterations; then the whole call.
    """
    size = args.timing_sizes[0]
    probs, images = to_batch(make_cases(args.seed + 4, 1, size, classes=5))
    images = images.float()
    unary = unary_from_probs(probs).flatten(2)
    features = pixel_features(size, size, params.bilateral_sxy, images,
                              params.bilateral_srgb)
    rounds = max(5, args.repeats)
    # each phase on fresh inputs of its own, prepared outside the clock
    prepare = {
        'features': lambda: None,
        'bilateral_lattice_build': lambda: None,
        'normalisation': lambda: PermutohedralLattice(features),
        'iterations': lambda: build_kernels(images, params),
        'whole_call': lambda: None,
    }
    phases = {
        'features': lambda _: pixel_features(
            size, size, params.bilateral_sxy, images, params.bilateral_srgb),
        'bilateral_lattice_build': lambda _: PermutohedralLattice(features),
        'normalisation': lambda lattice: lattice.normalise_(),
        'iterations': lambda terms: mean_field(unary, terms,
                                               params.iterations),
        'whole_call': lambda _: dense_crf_torch(probs, images, params),
    }
    seconds = {}
    for name, fn in phases.items():
        fn(prepare[name]())  # warm-up
        inputs = [prepare[name]() for _ in range(rounds)]
        times = []
        for item in inputs:
            start = time.perf_counter()
            fn(item)
            times.append(time.perf_counter() - start)
        seconds[name] = float(np.median(times))
    return dict(size=size, classes=5, load_average_1min=os.getloadavg()[0],
                seconds=seconds)


def thread_check(args) -> List[Dict[str, object]]:
    """Is a two-thread slowdown the CRF's or the machine's?

    Times two plain torch workloads at each ``--threads`` setting, in
    rounds: many medium element-wise ops (500 additions on 300k floats,
    the size of the CRF's per-pixel arrays; every op is one parallel
    region) and a few large ones (ten 1024^2 matrix products).  When
    other jobs occupy the cores, each parallel region waits until all its
    threads get a core, which costs the many-op workload far more than
    the few-op one.  Reports the median seconds, the process CPU time over
    the wall time and the load average before each measurement.
    """
    vector = torch.rand(300_000)
    a, b = torch.rand(1024, 1024), torch.rand(1024, 1024)
    workloads = {'elementwise_500_ops': lambda: [vector.add(1.0)
                                                 for _ in range(500)],
                 'matmul_10_ops': lambda: [a @ b for _ in range(10)]}
    rows = []
    for _ in range(args.repeats):
        for threads in args.threads:
            torch.set_num_threads(threads)
            for name, fn in workloads.items():
                fn()  # warm-up with this thread count
                load = os.getloadavg()[0]
                wall, cpu = time.perf_counter(), time.process_time()
                fn()
                wall = time.perf_counter() - wall
                rows.append(dict(workload=name, torch_threads=threads,
                                 load_average_1min=load, seconds=wall,
                                 cpu_over_wall=(time.process_time() - cpu)
                                 / wall))
    torch.set_num_threads(1)
    summary = []
    for name in workloads:
        for threads in args.threads:
            mine = [r for r in rows if r['workload'] == name
                    and r['torch_threads'] == threads]
            summary.append(dict(
                workload=name, torch_threads=threads,
                seconds=float(np.median([r['seconds'] for r in mine])),
                cpu_over_wall=float(np.median([r['cpu_over_wall']
                                               for r in mine])),
                load_average_1min=[r['load_average_1min'] for r in mine]))
            print(summary[-1], flush=True)
    return summary


def cuda_timing(args, params: DenseCRFParams,
                have_pydensecrf: bool) -> Optional[List[Dict[str, object]]]:
    """Batched lattice images/s on CUDA against pydensecrf's on the CPU."""
    if not torch.cuda.is_available():
        return None
    rows = []
    for size in args.timing_sizes:
        count = max(2, 16 * 224 * 224 // (size * size))
        cases = make_cases(args.seed + 2, count, size, classes=5)
        probs, images = (t.cuda() for t in to_batch(cases))
        fns = {'torch_cuda': lambda: dense_crf_torch(probs, images, params)}
        if have_pydensecrf:
            fns['pydensecrf'] = lambda: [
                dense_crf_pydensecrf(p, im, params) for p, im in cases[:2]]
        seconds = alternate(fns, args.repeats, torch.cuda.synchronize)
        row = dict(size=size, images=count,
                   torch_cuda_images_per_s=count / seconds['torch_cuda'])
        if have_pydensecrf:
            row['pydensecrf_images_per_s'] = 2 / seconds['pydensecrf']
            row['cuda_over_pydensecrf_images_per_s'] = (
                row['torch_cuda_images_per_s'] /
                row['pydensecrf_images_per_s'])
        rows.append(row)
        print(row, flush=True)
    return rows


def region_memory(size: int, params: DenseCRFParams,
                  seed: int) -> Dict[str, object]:
    """Refine one ``size`` x ``size`` 5-class map through ``build_crf``."""
    probs, image = make_case(torch.Generator().manual_seed(seed), 5, size)
    image_t = torch.from_numpy(image).permute(2, 0, 1).float()
    features = pixel_features(size, size, params.bilateral_sxy,
                              image_t[None], params.bilateral_srgb)
    vertices = (
        PermutohedralLattice(pixel_features(size, size,
                                            params.gaussian_sxy)).num_vertices,
        PermutohedralLattice(features).num_vertices)
    del features
    crf = build_crf(dict(backend='torch'))
    scores = torch.from_numpy(probs).log()
    before = common.current_rss_mb()
    common.reset_peak_rss()
    start = time.perf_counter()
    crf(scores, image_t)
    seconds = time.perf_counter() - start
    gib = 2**30
    return dict(
        size=size, classes=5, seconds=seconds,
        spatial_vertices=vertices[0], bilateral_vertices=vertices[1],
        estimate_gib=dense_crf_torch_bytes(size, size, 5, params,
                                           vertices=vertices) / gib,
        worst_case_estimate_gib=dense_crf_torch_bytes(size, size, 5,
                                                      params) / gib,
        max_memory_gb=DEFAULT_MAX_MEMORY_GB,
        peak_rss_increase_gib=(common.peak_rss_mb() - before) / 1024,
        within_default_guard=True)


def render(report: Dict[str, object]) -> str:
    """Markdown tables of a report (written next to the JSON)."""
    lines = [f"Command: `{report['command']}`; {report['environment']['date']}"
             f", {report['environment']['cpu_count']} CPUs, load average "
             f"{report['load_average_1min_at_start']:.1f} at the start.", '']
    lines += ['| torch solver | argmax agreement with pydensecrf, mean (min) '
              '| mean abs prob diff |', '|---|---|---|']
    for key, name in (('agreement', 'lattice (default)'),
                      ('agreement_exact_spatial',
                       'lattice + exact position-only kernel')):
        row = report.get(key)
        if row:
            lines.append(
                f"| {name} | {100 * row['argmax_agreement_mean']:.2f} % "
                f"({100 * row['argmax_agreement_min']:.2f} %) "
                f"| {row['mean_abs_prob_diff_mean']:.2g} |")
    lines += ['', '| side | torch threads | load average | lattice s/image '
              '| exact position-only s/image | pydensecrf s/image | speed '
              'ratio lattice / pydensecrf |', '|---|---|---|---|---|---|---|']

    def cell(row, key, fmt='{:.3f}'):
        return fmt.format(row[key]) if key in row else '-'

    for row in report['timing']:
        lines.append(
            f"| {row['size']} | {row['torch_threads']} "
            f"| {cell(row, 'load_average_1min', '{:.1f}')} "
            f"| {cell(row, 'torch_s_per_image')} "
            f"| {cell(row, 'torch_exact_spatial_s_per_image')} "
            f"| {cell(row, 'pydensecrf_s_per_image')} "
            f"| {cell(row, 'torch_over_pydensecrf_speed', '{:.2f}')} |")
    profile = report.get('profile')
    if profile:
        sec = profile['seconds']
        lines += ['', f"Where the time goes ({profile['size']} px, "
                  f"{profile['classes']} classes, one thread, load average "
                  f"{profile['load_average_1min']:.1f}), milliseconds: "
                  + ', '.join(f"{name.replace('_', ' ')} "
                              f"{1000 * sec[name]:.1f}"
                              for name in ('features',
                                           'bilateral_lattice_build',
                                           'normalisation', 'iterations',
                                           'whole_call')) + '.']
    checks = report.get('thread_check')
    if checks:
        lines += ['', '| plain torch workload | torch threads | seconds '
                  '(median) | CPU time / wall time | load averages |',
                  '|---|---|---|---|---|']
        for row in checks:
            loads = ', '.join(f'{v:.1f}' for v in row['load_average_1min'])
            lines.append(f"| {row['workload']} | {row['torch_threads']} "
                         f"| {row['seconds']:.3f} "
                         f"| {row['cpu_over_wall']:.2f} | {loads} |")
    region = report.get('region')
    if region:
        lines += ['', f"{region['size']} px region, {region['classes']} "
                  f"channels: {region['bilateral_vertices']} bilateral and "
                  f"{region['spatial_vertices']} position-only vertices; "
                  f"estimate {region['estimate_gib']:.2f} GiB (worst case "
                  f"{region['worst_case_estimate_gib']:.2f} GiB) against "
                  f"the default max_memory_gb={region['max_memory_gb']}; "
                  'measured peak resident memory increase '
                  f"{region['peak_rss_increase_gib']:.2f} GiB; "
                  f"{region['seconds']:.1f} s."]
    return '\n'.join(lines) + '\n'


def main(argv: Optional[List[str]] = None) -> Dict[str, object]:
    """Run the measurements and write the JSON report (and Markdown)."""
    args = parse_args(argv)
    if args.render:
        with open(args.render) as f:
            report = json.load(f)
        print(render(report), end='')
        return report
    params = DenseCRFParams()
    try:
        import_pydensecrf()
        have_pydensecrf = True
    except ImportError:
        have_pydensecrf = False
        print('pydensecrf is not installed (`make crf`): agreement and '
              'ratios skipped, torch timing only', file=sys.stderr)
    report = dict(command=common.command_line(),
                  environment=common.environment(),
                  load_average_1min_at_start=os.getloadavg()[0],
                  pydensecrf_available=have_pydensecrf,
                  params=dataclasses.asdict(params),
                  settings={k: v for k, v in vars(args).items()
                            if k != 'out'})
    torch.set_num_threads(1)
    cases = make_cases(args.seed, args.num_images, args.size)
    report['agreement'] = agreement(cases, params) if have_pydensecrf \
        else None
    report['agreement_exact_spatial'] = agreement(
        cases, params, dense_crf_exact_spatial) if have_pydensecrf else None
    for key in ('agreement', 'agreement_exact_spatial'):
        print(f'{key}:', {k: v for k, v in (report[key] or {}).items()
                          if not k.startswith('per_image')}, flush=True)
    report['profile'] = phase_profile(args, params)
    print('profile:', report['profile'], flush=True)
    report['timing'] = timing(args, params, have_pydensecrf)
    report['thread_check'] = thread_check(args)
    report['cuda_timing'] = cuda_timing(args, params, have_pydensecrf)
    if args.region:
        torch.set_num_threads(max(args.threads))
        report['region'] = region_memory(args.region, params, args.seed + 3)
        print('region:', report['region'], flush=True)
    report['load_average_1min_at_end'] = os.getloadavg()[0]
    common.write_json(args.out, report)
    markdown = os.path.splitext(args.out)[0] + '.md'
    with open(markdown, 'w') as f:
        f.write(render(report))
    print(f'wrote {args.out} and {markdown}')
    return report


if __name__ == '__main__':
    main()
