#!/usr/bin/env python
"""Cost benchmark: what does LPD's head cost, and what does the clustering
baseline's extra stage cost?

In one run, on one input, alternating A/B so that drift on a noisy machine
hits both sides:

1. training step time (and peak memory) of LPD (MiT-B1, k=10, D=512) vs the
   same backbone with MMSeg's SegformerHead, at 224 px;
2. inference throughput: one pass, TTA x6 (flip x brightness), and the two
   dense CRF backends;
3. the clustering-bank baseline's extra stage (feature extraction + k-means
   over single-label training patches) against LPD, which has none.

Ratios are the figures to read on a shared machine.

    python benchmarks/speed.py                       # CPU, a few minutes
    python benchmarks/speed.py --device cuda --batch-size 10 --amp
"""
import argparse
import copy
import os
import os.path as osp
import statistics
import subprocess
import sys
import tempfile
import time

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from benchmarks.common import (  # noqa: E402
    REPO,
    RESULTS,
    command_line,
    environment,
    peak_rss_mb,
    reset_peak_rss,
    write_json,
)

LPD_CONFIG = 'configs/lpd/lpd_mit-b1_1xb10-18.7k_bcss-wsss-224x224.py'
SEGFORMER_CONFIG = \
    'configs/second_stage/segformer_mit-b1_1xb10-18.7k_bcss-wsss-pseudo-224x224.py'


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--quick', action='store_true',
                        help='smoke run: 64 px, 1 round, small bank')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--batch-size', type=int, default=2)
    parser.add_argument('--size', type=int, default=224)
    parser.add_argument('--rounds', type=int, default=5,
                        help='A/B alternations')
    parser.add_argument('--steps', type=int, default=3,
                        help='timed steps per model per round')
    parser.add_argument('--amp', action='store_true',
                        help='autocast (bf16 on CUDA) in the training step')
    parser.add_argument('--infer-images', type=int, default=8)
    parser.add_argument('--bank-images', type=int, default=400,
                        help='generated 224 px training patches for the bank')
    parser.add_argument('--skip', nargs='*', default=[],
                        choices=['train', 'memory', 'infer', 'crf', 'bank'])
    parser.add_argument('--out', default=None,
                        help='JSON path (default benchmarks/results/'
                        'speed_<device>.json)')
    parser.add_argument('--measure-memory', choices=['lpd', 'segformer'],
                        help=argparse.SUPPRESS)
    return parser


# ---------------------------------------------------------------- models
def build(name, device):
    from mmengine.config import Config
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    cfg = Config.fromfile(LPD_CONFIG if name == 'lpd' else SEGFORMER_CONFIG)
    cfg.model.backbone.init_cfg = None  # timing needs no pre-trained weights
    model = revert_sync_batchnorm(MODELS.build(cfg.model)).to(device)
    return model, cfg


def make_batch(args, with_masks):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(args.batch_size, 3, args.size, args.size,
                        generator=gen) * 255
    samples = []
    for i in range(args.batch_size):
        s = SegDataSample(metainfo=dict(
            ori_shape=(args.size, args.size),
            img_shape=(args.size, args.size),
            pad_shape=(args.size, args.size), padding_size=[0, 0, 0, 0]))
        label = torch.zeros(4)
        label[i % 4] = label[(i + 2) % 4] = 1
        s.gt_image_label = label
        if with_masks:
            s.gt_sem_seg = PixelData(data=torch.randint(
                0, 5, (1, args.size, args.size), generator=gen))
        samples.append(s)
    return images, samples


def _sync(device):
    if str(device).startswith('cuda'):
        torch.cuda.synchronize()


def train_step(model, optim, images, samples, args):
    from mmengine.logging import MessageHub
    MessageHub.get_current_instance().update_info('iter', 10**6)
    data = model.data_preprocessor(
        dict(inputs=[i for i in images],
             data_samples=copy.deepcopy(samples)), True)
    with torch.autocast(device_type=str(args.device).split(':')[0],
                        dtype=torch.bfloat16, enabled=args.amp):
        losses = model.loss(data['inputs'], data['data_samples'])
    total = sum(v for k, v in losses.items() if 'loss' in k)
    optim.zero_grad(set_to_none=True)
    total.backward()
    optim.step()


def bench_training(args):
    models = {}
    for name in ('lpd', 'segformer'):
        model, _ = build(name, args.device)
        model.train()
        optim = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad], lr=5e-5)
        images, samples = make_batch(args, with_masks=name == 'segformer')
        models[name] = (model, optim, images.to(args.device), samples)
        for _ in range(2):  # warm-up
            train_step(model, optim, images.to(args.device), samples, args)
    times = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, (model, optim, images, samples) in models.items():
            _sync(args.device)
            start = time.perf_counter()
            for _ in range(args.steps):
                train_step(model, optim, images, samples, args)
            _sync(args.device)
            times[name].append((time.perf_counter() - start) / args.steps)
    result = {name: dict(median_step_s=round(statistics.median(t), 4),
                         images_per_s=round(args.batch_size /
                                            statistics.median(t), 2),
                         step_s=[round(x, 4) for x in t])
              for name, t in times.items()}
    result['ratio_lpd_over_segformer'] = round(
        result['lpd']['median_step_s'] /
        result['segformer']['median_step_s'], 3)
    if str(args.device).startswith('cuda'):
        for name, (model, optim, images, samples) in models.items():
            torch.cuda.reset_peak_memory_stats()
            train_step(model, optim, images, samples, args)
            result[name]['peak_gpu_mem_mb'] = round(
                torch.cuda.max_memory_allocated() / 2**20, 1)
        result['memory_ratio'] = round(
            result['lpd']['peak_gpu_mem_mb'] /
            result['segformer']['peak_gpu_mem_mb'], 3)
    return result


def measure_memory_child(args):
    """Runs in a fresh process: peak RSS of building + 3 training steps."""
    reset_peak_rss()
    model, _ = build(args.measure_memory, 'cpu')
    model.train()
    optim = torch.optim.AdamW(model.parameters(), lr=5e-5)
    images, samples = make_batch(args, args.measure_memory == 'segformer')
    for _ in range(3):
        train_step(model, optim, images, samples, args)
    print(peak_rss_mb())


def bench_cpu_memory(args):
    peaks = {}
    for name in ('lpd', 'segformer', 'lpd', 'segformer'):
        out = subprocess.run(
            [sys.executable, __file__, '--measure-memory', name,
             '--batch-size', str(args.batch_size), '--size', str(args.size)],
            cwd=REPO, capture_output=True, text=True, check=True,
            env=dict(os.environ, PYTHONPATH=REPO))
        peaks.setdefault(name, []).append(
            float(out.stdout.strip().splitlines()[-1]))
    result = {name: dict(peak_rss_mb=round(min(v), 1))
              for name, v in peaks.items()}
    result['ratio_lpd_over_segformer'] = round(
        result['lpd']['peak_rss_mb'] / result['segformer']['peak_rss_mb'], 3)
    return result


# ------------------------------------------------------------- inference
def _tta_data(images, samples):
    """The six passes of the paper's TTA as mmseg's TestTimeAug packs
    them: horizontal flip x brightness {0.9, 1.0, 1.1}."""
    inputs, metas = [], []
    for flip in (False, True):
        for factor in (0.9, 1.0, 1.1):
            batch = (images * factor).clamp(0, 255)
            if flip:
                batch = batch.flip(3)
            passes = []
            for s in samples:
                s = copy.deepcopy(s)
                s.set_metainfo(dict(flip=flip, flip_direction='horizontal',
                                    brightness_factor=factor))
                passes.append(s)
            inputs.append([b for b in batch])
            metas.append(passes)
    return dict(inputs=inputs, data_samples=metas)


@torch.no_grad()
def bench_inference(args):
    from lpd_mmseg.models.segmentors import LPDTTAModel
    model, _ = build('lpd', args.device)
    model.eval()
    args_i = copy.copy(args)
    args_i.batch_size = args.infer_images
    images, samples = make_batch(args_i, with_masks=False)
    images = images.to(args.device)
    tta = LPDTTAModel(module=model)
    tta_data = _tta_data(images, samples)

    def single():
        data = model.data_preprocessor(
            dict(inputs=[i for i in images],
                 data_samples=copy.deepcopy(samples)), False)
        model.predict(data['inputs'], data['data_samples'])

    def with_tta():
        tta.test_step(copy.deepcopy(tta_data))

    single()
    with_tta()
    times = {'single': [], 'tta6': []}
    for _ in range(max(2, args.rounds // 2)):
        for name, fn in (('single', single), ('tta6', with_tta)):
            _sync(args.device)
            start = time.perf_counter()
            fn()
            _sync(args.device)
            times[name].append(time.perf_counter() - start)
    result = {name: dict(images_per_s=round(
        args.infer_images / statistics.median(t), 2))
        for name, t in times.items()}
    result['tta_slowdown'] = round(
        result['single']['images_per_s'] / result['tta6']['images_per_s'],
        2)
    return result


def bench_crf(args):
    from lpd_mmseg.models.crf import (
        DenseCRFParams,
        dense_crf_pydensecrf,
        dense_crf_torch,
        import_pydensecrf,
    )
    gen = torch.Generator().manual_seed(0)
    n, size = 4, args.size
    probs = torch.softmax(torch.randn(n, 5, size // 8, size // 8,
                                      generator=gen) * 3, 1)
    probs = torch.nn.functional.interpolate(probs, size=(size, size),
                                            mode='bilinear')
    images = (torch.rand(n, 3, size, size, generator=gen) * 255).round()
    params = DenseCRFParams()

    def run_torch(i):
        dense_crf_torch(probs[i:i + 1].to(args.device),
                        images[i:i + 1].to(args.device), params)
        _sync(args.device)

    def run_reference(i):
        dense_crf_pydensecrf(
            probs[i].numpy(),
            images[i].permute(1, 2, 0).byte().numpy().copy(), params)

    try:
        import_pydensecrf()
        runs = {'torch': run_torch, 'pydensecrf': run_reference}
    except ImportError:
        runs = {'torch': run_torch}
    # warm-up: builds the cached position-only kernel of this size, as the
    # first of many same-size tiles does; then the backends alternate
    for run in runs.values():
        run(0)
    times = {name: [] for name in runs}
    for i in range(n):
        for name, run in runs.items():
            start = time.perf_counter()
            run(i)
            times[name].append(time.perf_counter() - start)
    result = {'torch': dict(
        images_per_s=round(1 / statistics.median(times['torch']), 3),
        device=str(args.device), solver='permutohedral lattice',
        torch_threads=torch.get_num_threads(),
        load_average_1min=os.getloadavg()[0])}
    if 'pydensecrf' not in runs:
        result['pydensecrf'] = 'not installed (make crf)'
        return result
    result['pydensecrf'] = dict(
        images_per_s=round(1 / statistics.median(times['pydensecrf']), 3),
        device='cpu')
    result['ratio_torch_over_pydensecrf'] = round(
        result['torch']['images_per_s'] /
        result['pydensecrf']['images_per_s'], 3)
    return result


def bench_bank(args, train_result):
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS

    from lpd_mmseg.models.prototype_bank import build_prototype_bank
    from lpd_mmseg.testing.synthetic import generate_synthetic_bcss
    init_default_scope('mmseg')
    root = osp.join(tempfile.gettempdir(), f'lpd_speed_bank_{args.size}_'
                    f'{args.bank_images}')
    generate_synthetic_bcss(root, seed=0, num_train=args.bank_images,
                            num_val=1, num_test=1, size=args.size,
                            progress=False)
    model, cfg = build('lpd', args.device)
    cfg.model.decode_head.prototype_mode = 'frozen_bank'
    from mmseg.registry import MODELS
    bank_model = MODELS.build(cfg.model).to(args.device)
    bank_model.backbone.load_state_dict(model.backbone.state_dict())
    dataset = DATASETS.build(dict(
        type='BCSSWSSSDataset', data_root=root, split='train',
        pipeline=[dict(type='LoadImageFromFile'),
                  dict(type='PackWeakSegInputs')]))
    start = time.perf_counter()
    banks = build_prototype_bank(bank_model, dataset, progress=False,
                                 batch_size=16)
    seconds = time.perf_counter() - start
    singles = sum(int(dataset.get_data_info(i)['gt_image_label'].sum() == 1)
                  for i in range(len(dataset)))
    result = dict(seconds=round(seconds, 2), training_patches=len(dataset),
                  single_label_patches=singles,
                  bank_shapes=[list(b.shape) for b in banks])
    if train_result:
        step = train_result['lpd']['median_step_s']
        result['equivalent_lpd_train_steps'] = round(seconds / step, 1)
        # the real training split has 23,422 patches; the extra stage
        # scales with the number of single-label patches
        result['seconds_per_single_label_patch'] = round(seconds / singles,
                                                         4)
    return result


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.quick:
        args.size, args.batch_size, args.rounds, args.steps = 64, 1, 1, 1
        args.infer_images, args.bank_images = 2, 400
    os.chdir(REPO)
    import lpd_mmseg  # noqa: F401
    if args.measure_memory:
        measure_memory_child(args)
        return
    torch.manual_seed(0)
    device_tag = 'cuda' if str(args.device).startswith('cuda') else 'cpu'
    out = args.out or osp.join(RESULTS, f'speed_{device_tag}.json')
    payload = dict(command=command_line(), environment=environment(),
                   settings=dict(batch_size=args.batch_size, size=args.size,
                                 rounds=args.rounds, steps=args.steps,
                                 amp=args.amp, device=str(args.device)))
    if 'train' not in args.skip:
        print('[speed] training step, LPD vs SegformerHead ...', flush=True)
        payload['train'] = bench_training(args)
        print(payload['train'], flush=True)
    if 'memory' not in args.skip and device_tag == 'cpu':
        print('[speed] peak memory (fresh process per model) ...',
              flush=True)
        payload['memory'] = bench_cpu_memory(args)
        print(payload['memory'], flush=True)
    if 'infer' not in args.skip:
        print('[speed] inference, single pass vs TTA x6 ...', flush=True)
        payload['inference'] = bench_inference(args)
        print(payload['inference'], flush=True)
    if 'crf' not in args.skip:
        print('[speed] dense CRF backends ...', flush=True)
        payload['crf'] = bench_crf(args)
        print(payload['crf'], flush=True)
    if 'bank' not in args.skip:
        print('[speed] clustering-bank extra stage ...', flush=True)
        payload['bank'] = bench_bank(args, payload.get('train'))
        print(payload['bank'], flush=True)
    write_json(out, payload)
    print(f'[speed] written to {out}')
    return payload


if __name__ == '__main__':
    main()
