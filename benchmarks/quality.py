#!/usr/bin/env python
"""Quality benchmark: does LPD beat its baselines on weakly labelled data?

One generated data set in the BCSS-WSSS layout (fixed seed), one backbone
and one schedule for every method:

- supervised: SegformerHead trained on the pixel masks (upper bound);
- cam: one prototype per class, no diversity (plain CAM);
- bank: frozen k-means prototypes from single-label images (PBIP idea);
- lpd-nodiv: k learnable prototypes, no diversity;
- lpd: k learnable prototypes with the Jeffreys diversity loss;
- lpd-refiner: lpd plus the mask refiner (frozen encoder = EMA copy of the
  backbone), as the reference code always trains it;
- stage2-lpd / stage2-cam: the two-stage route, honest by construction:
  the lpd (or cam) run of the same seed writes pseudo-masks of the
  training patches gated by their own file-name labels, and the
  second-stage SegFormer (same backbone) trained on them predicts every
  class with no gate at test time;
- stage2-lpd-bal / stage2-cam-bal: the same on the same masks, with the
  cross-entropy classes weighted by 1 / sqrt(pixel share in the masks);
- stage3-lpd-bal / stage3-cam-bal: a second round of self-training: the
  stage2-*-bal run of the same seed labels the training patches again,
  gated by their file-name labels, and a fresh balanced second stage is
  trained on those masks (honest by construction, like stage 2).

Each is trained for several seeds and evaluated on the test split under
four protocols (honest = gating by the model's own class probabilities,
oracle = gating by the classes of the test mask; each with and without the
dense CRF) and, for the prototype models, the post-processing rows of
POSTPROC_ROWS (each gate rule, with and without the tissue prior; only the
'oracle' rows read the test masks), under both background protocols
('count' as in the LPD paper, and 'ignore').  Results: JSON in
benchmarks/results/ and a Markdown table.

    python benchmarks/quality.py                 # full run, about an hour
    python benchmarks/quality.py --quick --out /tmp/q.json   # smoke test
    python benchmarks/quality.py --eval-only --crf none   # finished runs only

Every method starts from a randomly initialised backbone unless
``--backbone-init CKPT`` names a backbone checkpoint (e.g. the one that
benchmarks/pretrain_backbone.py writes); then every method, second stages
included, starts from it.
"""
import argparse
import os
import os.path as osp
import sys
import time

import numpy as np
import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from benchmarks.common import (  # noqa: E402
    REPO,
    RESULTS,
    command_line,
    environment,
    run_python,
    write_json,
)

METHODS = ('supervised', 'cam', 'bank', 'lpd-nodiv', 'lpd', 'lpd-refiner',
           'stage2-lpd', 'stage2-cam', 'stage2-lpd-bal', 'stage2-cam-bal',
           'stage3-lpd-bal', 'stage3-cam-bal')
#: Second-stage methods -> the method whose pseudo-masks they are trained
#: on (a first stage, or for a second round the first round).
STAGE2_SOURCES = {'stage2-lpd': 'lpd', 'stage2-cam': 'cam',
                  'stage2-lpd-bal': 'lpd', 'stage2-cam-bal': 'cam',
                  'stage3-lpd-bal': 'stage2-lpd-bal',
                  'stage3-cam-bal': 'stage2-cam-bal'}
#: Second stages whose cross-entropy weights the classes by the inverse
#: square root of their pseudo-mask pixel shares (balanced_class_weights).
BALANCED_STAGE2 = ('stage2-lpd-bal', 'stage2-cam-bal', 'stage3-lpd-bal',
                   'stage3-cam-bal')
#: Models with a SegformerHead predicting every class (no prototypes).
SEGFORMER_METHODS = ('supervised', ) + tuple(STAGE2_SOURCES)
PROTOCOLS = ('honest', 'honest+crf', 'oracle', 'oracle+crf')
#: Post-processing rows of the prototype models, no CRF:
#: name -> (gate source, gate rule, tissue prior).  Only 'oracle*' rows read
#: the test masks.
POSTPROC_ROWS = {
    'honest': ('predicted', 'hard', False),
    'honest-prob': ('predicted', 'prob', False),
    'honest-peak': ('predicted', 'peak', False),
    'none-peak': ('none', 'peak', False),
    'honest+prior': ('predicted', 'hard', True),
    'honest-peak+prior': ('predicted', 'peak', True),
    'none-peak+prior': ('none', 'peak', True),
    'oracle': ('oracle', 'hard', False),
    'oracle+prior': ('oracle', 'hard', True),
}
#: CRF rows: name -> gate source (gate rule 'hard', no prior: as before).
CRF_ROWS = {'honest+crf': 'predicted', 'oracle+crf': 'oracle'}
BACKGROUNDS = ('count', 'ignore')
SUMMARY_KEYS = ('mIoU', 'mDice', 'FwIoU')
CLASS_NAMES = ('TUM', 'STR', 'LYM', 'NEC')


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--quick', action='store_true',
                        help='smoke run: tiny data, 1 seed, a few iterations')
    parser.add_argument('--methods', nargs='+', default=list(METHODS),
                        choices=METHODS)
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    parser.add_argument('--stage2-iters', type=int, metavar='N',
                        help='training iterations of the second stages '
                        '(default: --iters); their runs go to work dirs '
                        'named NAME-Nit_seedS when N differs from --iters')
    parser.add_argument('--iters', type=int, default=600,
                        help='training iterations per run (batch 8)')
    parser.add_argument('--data-seed', type=int, default=0)
    parser.add_argument('--class-mix', default='bcss',
                        choices=['bcss', 'multi'],
                        help='class mix of the generated data (multi: the '
                        'second data configuration)')
    parser.add_argument('--num-train', type=int, default=600)
    parser.add_argument('--num-val', type=int, default=50)
    parser.add_argument('--num-test', type=int, default=200)
    parser.add_argument('--size', type=int, default=128)
    parser.add_argument('--data-root', default='data/bench-quality')
    parser.add_argument('--work-dir', default='work_dirs/bench_quality')
    parser.add_argument('--crf', default='auto',
                        choices=['auto', 'pydensecrf', 'torch', 'none'],
                        help='CRF backend (auto: pydensecrf when installed; '
                        'none: skip the +crf rows)')
    parser.add_argument('--extra', nargs='*', default=[],
                        help='extra variants to train as well, '
                        'NAME[@METHOD]:OPTION,OPTION,... (cfg-options of a '
                        'first-stage METHOD, default lpd), e.g. '
                        'lpd-t0.07:model.decode_head.loss_diversity.'
                        'temperature=0.07 or cam-blr@cam:optim_wrapper.'
                        'paramwise_cfg.custom_keys.backbone.lr_mult=0.1')
    parser.add_argument('--backbone-init', metavar='CKPT',
                        help='start the backbone of every method (second '
                        'stages included) from this backbone-only '
                        'checkpoint (benchmarks/pretrain_backbone.py) '
                        'instead of random weights; use its own '
                        '--work-dir')
    parser.add_argument('--eval-only', action='store_true',
                        help='evaluate only the runs whose checkpoints are '
                        'already in --work-dir; train nothing')
    parser.add_argument('--retrain', action='store_true',
                        help='train again even where a checkpoint of an '
                        'earlier run exists in --work-dir')
    parser.add_argument('--out', default=osp.join(RESULTS, 'quality.json'))
    return parser


def quick_settings(args):
    args.seeds = args.seeds[:1]
    args.iters = 4
    args.num_train, args.num_val, args.num_test, args.size = 60, 4, 6, 64
    args.data_root = osp.join(args.work_dir, 'data')
    return args


# ------------------------------------------------------------ training
def train_options(args, method, seed):
    opts = [f'{s}_dataloader.dataset.data_root={args.data_root}'
            for s in ('train', 'val', 'test')]
    from lpd_mmseg.apis.schedule import schedule_options
    opts += [f'randomness.seed={seed}'] + schedule_options(
        iters_for(args, method))
    if method not in SEGFORMER_METHODS:
        opts.append(f'model.decode_head.warmup_iters={args.iters // 3}')
    if getattr(args, 'backbone_init', None):
        opts += backbone_init_options(args.backbone_init)
    if args.quick:
        opts += ['train_dataloader.batch_size=4',
                 'train_dataloader.num_workers=0',
                 'train_dataloader.persistent_workers=False',
                 'val_dataloader.num_workers=0',
                 'val_dataloader.persistent_workers=False',
                 'test_dataloader.num_workers=0',
                 'test_dataloader.persistent_workers=False',
                 'model.backbone.embed_dims=8',
                 'model.backbone.num_layers=[1,1,1,1]']
        if method in SEGFORMER_METHODS:
            opts.append('model.decode_head.in_channels=[8,16,40,64]')
        else:
            opts.append('model.decode_head.in_channels=[16,40,64]')
        if method not in SEGFORMER_METHODS + ('cam', ):
            # the generator guarantees 2 single-label patches per class in
            # 60 patches, enough for a 2-prototype bank
            opts.append('model.decode_head.num_prototypes=2')
    return opts


def iters_for(args, method):
    """Training iterations of ``method``: ``--stage2-iters`` for the
    second stages when given, else ``--iters``."""
    if method in STAGE2_SOURCES and getattr(args, 'stage2_iters', None):
        return args.stage2_iters
    return args.iters


def run_dir(args, name, method, seed):
    """Work dir of one run: ``NAME_seedS``, or ``NAME-Nit_seedS`` for a
    second stage trained for N != ``--iters`` iterations (so that runs of
    two lengths never share a folder)."""
    iters = iters_for(args, method)
    tag = name if iters == args.iters else f'{name}-{iters}it'
    return osp.join(args.work_dir, f'{tag}_seed{seed}')


def backbone_init_options(checkpoint):
    """cfg-options that start ``model.backbone`` from a backbone-only
    checkpoint (keys without a ``backbone.`` prefix), replacing whatever
    ``init_cfg`` the config has."""
    return ['model.backbone.init_cfg._delete_=True',
            'model.backbone.init_cfg.type=Pretrained',
            f'model.backbone.init_cfg.checkpoint={osp.abspath(checkpoint)}']


def parse_variant(spec):
    """``NAME[@METHOD]:OPT,OPT,...`` -> ``(NAME, METHOD, (OPT, ...))``.

    METHOD defaults to ``lpd``; it must be a first-stage method (a second
    stage's options are its pseudo-mask source's, set by the benchmark).

    Raises:
        ValueError: no ``:``, an empty name, an unknown or second-stage
            METHOD, or a NAME that is already a method.
    """
    head, colon, options = spec.partition(':')
    name, _, method = head.partition('@')
    method = method or 'lpd'
    if not colon or not name:
        raise ValueError(f'--extra {spec!r}: expected '
                         'NAME[@METHOD]:OPTION,OPTION,...')
    if method not in METHODS or method in STAGE2_SOURCES:
        first = [m for m in METHODS if m not in STAGE2_SOURCES]
        raise ValueError(f'--extra {spec!r}: METHOD {method!r} is not one '
                         f'of the first-stage methods {first}')
    if name in METHODS:
        raise ValueError(f'--extra {spec!r}: NAME {name!r} is a method; '
                         'give the variant a name of its own')
    return name, method, tuple(o for o in options.split(',') if o)


def config_for(method):
    name = 'stage2' if method in STAGE2_SOURCES else method
    return osp.join('benchmarks', 'configs', f'quality_{name}.py')


def backbone_init_record(checkpoint):
    """What the JSON says of ``--backbone-init``: None (random init) or
    the file and its SHA-256."""
    if not checkpoint:
        return None
    from lpd_mmseg.apis.checkpoint import sha256_of
    if not osp.isfile(checkpoint):
        raise FileNotFoundError(
            f'--backbone-init {checkpoint}: no such file (make it with '
            'benchmarks/pretrain_backbone.py)')
    return dict(checkpoint=osp.relpath(osp.abspath(checkpoint), REPO),
                sha256=sha256_of(checkpoint))


def trained(args, method, seed, name=None, extra=()):
    """Train (or reuse) the run ``name`` (default: ``method``) of
    ``method`` for ``seed`` with the cfg-options ``extra``; a second stage
    writes (or reuses) its pseudo-masks first and takes its options from
    them.

    Returns:
        tuple: (checkpoint, seconds, config as trained, pseudo-mask record
        or None, the cfg-options used).
    """
    pseudo = None
    if method in STAGE2_SOURCES:
        pseudo_dir, extra, quality = pseudo_masks_for(args, method, seed)
        pseudo = dict(dir=pseudo_dir, metrics=quality)
    checkpoint, seconds, config = train(args, name or method, method, seed,
                                        tuple(extra))
    return checkpoint, seconds, config, pseudo, tuple(extra)


def pseudo_masks_for(args, method, seed):
    """Train (or reuse) the source run of a second-stage method (a first
    stage, or the first round of a second round) and write (or reuse) its
    pseudo-masks of the training patches, gated by the patches' file-name
    labels, with the source's post-processing (first stages: tissue prior
    on, no CRF).  Balanced methods also get class weights from the masks'
    pixel shares.

    Returns:
        tuple: (mask folder, cfg-options pointing the second stage at it,
        pseudo-mask quality against the generated training masks).
    """
    from lpd_mmseg.apis.pseudo_masks import META_FILE, make_pseudo_masks
    source = STAGE2_SOURCES[method]
    checkpoint, _, config, _, _ = trained(args, source, seed)
    out_dir = osp.abspath(osp.join(
        args.work_dir,
        'pseudo_' + osp.basename(run_dir(args, source, source, seed))))
    if not osp.isfile(osp.join(out_dir, META_FILE)) or args.retrain:
        print(f'[quality] {method} seed {seed}: pseudo-masks from '
              f'{checkpoint}', flush=True)
        make_pseudo_masks(config, checkpoint, out_dir,
                          data_root=args.data_root, gate='labels',
                          num_workers=0, overwrite=args.retrain,
                          progress=False)
    options = [
        f'train_dataloader.dataset.data_prefix.seg_map_path={out_dir}']
    if method in BALANCED_STAGE2:
        from lpd_mmseg.apis.pseudo_mask_io import (
            class_weight_option,
            stage2_class_weight,
        )
        options.append(class_weight_option(stage2_class_weight(out_dir)))
    quality = metrics_of(pseudo_mask_confusion(
        out_dir, osp.join(args.data_root, 'training_masks')))
    return out_dir, options, quality


def pseudo_mask_confusion(mask_dir, true_dir):
    """(5, 5) confusion matrix of the pseudo-masks in ``mask_dir``
    against the true masks of the same file names in ``true_dir``."""
    from PIL import Image

    from lpd_mmseg.evaluation import confusion_matrix
    names = sorted(n for n in os.listdir(true_dir) if n.endswith('.png'))
    if not names:
        raise FileNotFoundError(f'{true_dir}: no true training masks')
    conf = np.zeros((5, 5), np.int64)
    for name in names:
        pseudo = osp.join(mask_dir, name)
        if not osp.isfile(pseudo):
            raise FileNotFoundError(f'{pseudo}: pseudo-mask missing for '
                                    f'training mask {name}')
        conf += confusion_matrix(np.array(Image.open(pseudo)),
                                 np.array(Image.open(osp.join(true_dir,
                                                              name))), 5)
    return conf


def train(args, name, method, seed, extra_opts=(), config=None):
    """Train one run; returns (checkpoint, seconds, config as trained).

    ``config`` replaces the method's benchmark config (``config_for``).
    A run whose checkpoint exists (from an interrupted or earlier benchmark
    with the same work dir) is reused unless ``--retrain``."""
    import json
    config = config or config_for(method)
    work_dir = run_dir(args, name, method, seed)
    checkpoint = osp.join(work_dir, f'iter_{iters_for(args, method)}.pth')
    # mmengine dumps the merged config (with all overrides) to the work dir
    trained_config = osp.join(work_dir, osp.basename(config))
    timing = osp.join(work_dir, 'train_seconds.json')
    if osp.isfile(checkpoint) and not args.retrain:
        check_reused_init(args, trained_config)
        check_backbone_init(args, osp.join(work_dir, 'train_stdout.log'))
        if osp.isfile(timing):
            with open(timing) as f:
                seconds = json.load(f)['seconds']
        else:  # from a run without the timing file: config dump -> ckpt
            seconds = osp.getmtime(checkpoint) - osp.getmtime(trained_config)
        return checkpoint, seconds, trained_config
    start = time.perf_counter()
    run_python(['tools/train.py', config, '--work-dir', work_dir,
                '--cfg-options'] + train_options(args, method, seed) +
               list(extra_opts), osp.join(work_dir, 'train_stdout.log'))
    seconds = time.perf_counter() - start
    check_backbone_init(args, osp.join(work_dir, 'train_stdout.log'))
    with open(timing, 'w') as f:
        json.dump(dict(seconds=seconds), f)
    return checkpoint, seconds, trained_config


def check_reused_init(args, trained_config):
    """A finished run is reused only if it started from the same backbone
    (``--backbone-init`` or none): its dumped config says which."""
    from mmengine.config import Config
    init = Config.fromfile(trained_config).model.backbone.get('init_cfg')
    started = init.get('checkpoint') if isinstance(init, dict) and \
        init.get('type') == 'Pretrained' and not init.get('prefix') else None
    wanted = getattr(args, 'backbone_init', None)
    if started != wanted:
        raise RuntimeError(
            f'{trained_config}: this finished run started from backbone '
            f'{started or "random init"}, not from --backbone-init '
            f'{wanted or "(none)"}; give another --work-dir or --retrain')


def check_backbone_init(args, log_path):
    """mmengine's ``Pretrained`` init only warns when the checkpoint's
    keys do not match the backbone; a benchmark started from a half-loaded
    backbone would be wrong, so raise with mmengine's list of keys."""
    if not getattr(args, 'backbone_init', None):
        return
    with open(log_path) as f:
        log = f.read()
    marker = 'do not match exactly'
    if marker in log:
        detail = log[log.index(marker):].split('\n', 3)
        raise RuntimeError(
            f'--backbone-init {args.backbone_init} does not fit the '
            f'backbone of this run ({log_path}): '
            + ' '.join(detail[1:3])[:2000])


# ---------------------------------------------------------- evaluation
def add_confusion(confs, row, pred, gt):
    """Add the ``(5, 5)`` confusion of ``pred`` against ``gt`` (both
    ``(H, W)``, values 0..3 tissue, 4 background) to ``confs[row]``."""
    from lpd_mmseg.evaluation import confusion_matrix
    confs.setdefault(row, np.zeros((5, 5), np.int64))
    confs[row] += confusion_matrix(pred, gt, 5)


@torch.no_grad()
def evaluate(config, checkpoint, args, crf_cfg):
    """Confusion matrices of every row and prototype coverage.

    Prototype models go through their one post-processing path
    (``model.post_processor``), with each row's gate source, gate rule and
    tissue prior set explicitly (the rows do not depend on the config's
    ``test_cfg``); the supervised model's own scores are gated the same
    way (honest/oracle, with and without the CRF)."""
    from mmengine.dataset import pseudo_collate
    from mmseg.registry import DATASETS
    from torch.utils.data import DataLoader

    from lpd_mmseg.apis import init_segmentor
    from lpd_mmseg.evaluation.prototype_coverage import prototype_coverage
    from lpd_mmseg.models.crf import build_crf
    from lpd_mmseg.models.gating import gated_argmax, present_classes
    from lpd_mmseg.models.tissue_prior import TissuePrior
    from lpd_mmseg.models.utils.geometry import denormalize, restore_geometry

    model = init_segmentor(config, checkpoint, cfg_options={
        'test_dataloader.dataset.data_root': args.data_root})
    ds_cfg = model.cfg.test_dataloader.dataset.copy()
    dataset = DATASETS.build(ds_cfg)
    loader = DataLoader(dataset, batch_size=8, collate_fn=pseudo_collate,
                        num_workers=0)
    is_lpd = hasattr(model, 'post_processor')
    crf = build_crf(crf_cfg)
    num_classes = 4
    confs = {}
    coverage = None
    if is_lpd:
        k = model.decode_head.num_prototypes
        coverage = torch.zeros(num_classes, k, dtype=torch.long)
        base = model.post_processor.replace(crf=None, tissue_prior=None)
        posts = {name: (gate, base.replace(
            gate_rule=rule, tissue_prior=TissuePrior() if prior else None))
            for name, (gate, rule, prior) in POSTPROC_ROWS.items()}
        if crf is not None:
            posts.update({name: (gate, base.replace(gate_rule='hard',
                                                    crf=crf))
                          for name, gate in CRF_ROWS.items()})

    def add(name, mask, gt):
        add_confusion(confs, name, mask, gt)

    for batch in loader:
        data = model.data_preprocessor(batch, False)
        inputs, samples = data['inputs'], data['data_samples']
        metas = [s.metainfo for s in samples]
        if is_lpd:
            restored = model.restore_result(model.inference(inputs, metas),
                                            samples, inputs)
            sims = model.decode_head.forward(model.extract_feat(inputs))[-1]
        else:
            logits = model.inference(inputs, metas)
            images = denormalize(inputs, model.data_preprocessor)
        for i, sample in enumerate(samples):
            gt = sample.gt_sem_seg.data[0]
            if is_lpd:
                maps = restored[i]
                for name, (gate, post) in posts.items():
                    _, mask = post(maps.cams[None], maps.class_probs[None],
                                   gate, maps.image[None], [gt],
                                   peaks=maps.peaks[None])
                    add(name, mask[0], gt)
                sim_i = torch.nn.functional.interpolate(
                    sims[i:i + 1], size=gt.shape, mode='bilinear',
                    align_corners=False)[0]
                coverage += prototype_coverage(sim_i, gt, num_classes, k)
                continue
            # the supervised model predicts every class; 'honest' is its
            # own output, 'oracle' restricts it to the mask's classes
            full = restore_geometry(logits[i:i + 1], metas[i], 'bilinear')
            image = restore_geometry(images[i:i + 1], metas[i], 'bilinear')
            for name in ('honest', 'oracle'):
                gate = present_classes(gt, num_classes) \
                    if name == 'oracle' else None
                batch_gate = None if gate is None else gate[None]
                add(name, gated_argmax(full[None], batch_gate)[0], gt)
                if crf is not None:
                    refined = crf(full, image, gate)
                    add(name + '+crf',
                        gated_argmax(refined[None], batch_gate)[0], gt)
    return confs, coverage


def diversity_pairs(checkpoint):
    """Mean of the logged ``decode.div_pairs`` (batch (image, labelled
    class) pairs that received the diversity loss, averaged over mmengine's
    logging windows) of a run, or None when the run did not log it."""
    import glob
    import json
    values = []
    pattern = osp.join(osp.dirname(checkpoint), '*', 'vis_data',
                       'scalars.json')
    for path in sorted(glob.glob(pattern)):
        with open(path) as f:
            for line in f:
                record = json.loads(line)
                if 'decode.div_pairs' in record:
                    values.append(record['decode.div_pairs'])
    return round(float(np.mean(values)), 2) if values else None


def coverage_summary(counts):
    if counts is None or counts.shape[1] < 2:
        return None
    from lpd_mmseg.evaluation.prototype_coverage import (
        coverage_entropy,
        coverage_shares,
    )
    shares = coverage_shares(counts)
    entropy = coverage_entropy(shares)
    k = counts.shape[1]
    return dict(
        shares=shares.tolist(),
        normalized_entropy=entropy.tolist(),
        effective_prototypes=(k**entropy).tolist(),
        mean_effective_prototypes=float((k**entropy).nanmean()))


def metrics_of(conf, background='count'):
    from lpd_mmseg.evaluation import tissue_metrics
    out = tissue_metrics(conf, 4, background=background)
    result = {k: round(100 * float(out[k]), 2) for k in
              ('mIoU', 'mDice', 'FwIoU', 'aAcc')}
    result.update({f'IoU.{n}': round(100 * float(v), 2)
                   for n, v in zip(CLASS_NAMES, out['IoU'])})
    if background == 'count':
        result['IoU.BACK'] = round(100 * float(out['background_IoU']), 2)
    return result


def _stats(values):
    values = np.array(values, dtype=float)
    return dict(mean=round(float(values.mean()), 2),
                std=round(float(values.std(ddof=1)), 2)
                if len(values) > 1 else 0.0,
                values=values.tolist())


def summarize(runs, methods):
    """Mean and std over seeds of every row each method has, under both
    background protocols (``entry[row]``: count, ``entry['ignore']
    [row]``: ignore)."""
    summary = {}
    for method in methods:
        mine = [r for r in runs if r['method'] == method]
        if not mine:
            continue
        entry = {}
        keys = SUMMARY_KEYS + tuple(f'IoU.{n}' for n in CLASS_NAMES)
        for row in mine[0]['metrics']:
            entry[row] = {key: _stats([r['metrics'][row][key]
                                       for r in mine])
                          for key in keys + ('IoU.BACK', )}
        entry['ignore'] = {
            row: {key: _stats([r['metrics_ignore'][row][key]
                               for r in mine]) for key in keys}
            for row in mine[0].get('metrics_ignore', {})}
        eff = [r['coverage']['mean_effective_prototypes'] for r in mine
               if r.get('coverage')]
        if eff:
            entry['effective_prototypes'] = round(float(np.mean(eff)), 2)
        entry['train_seconds'] = round(float(np.mean(
            [r['train_seconds'] for r in mine])), 1)
        entry['seeds'] = [r['seed'] for r in mine]
        pairs = [r['mean_div_pairs'] for r in mine
                 if r.get('mean_div_pairs') is not None]
        if pairs:
            entry['mean_div_pairs'] = round(float(np.mean(pairs)), 2)
        pseudo = [r['pseudo_masks']['metrics'] for r in mine
                  if r.get('pseudo_masks')]
        if pseudo:
            entry['pseudo_masks'] = {
                key: _stats([m[key] for m in pseudo])
                for key in ('mIoU', 'IoU.BACK')}
        summary[method] = entry
    return summary


def _cell(stats):
    return f"{stats['mean']:.2f} ± {stats['std']:.2f}"


def markdown(summary, payload):
    protocols = [p for p in PROTOCOLS
                 if all(p in e for e in summary.values())]
    lines = [
        '| method | ' + ' | '.join(f'mIoU {p}' for p in protocols) +
        ' | mDice honest | FwIoU honest | eff. prototypes | train s |',
        '|---' * (len(protocols) + 5) + '|'
    ]
    for method, entry in summary.items():
        cells = [_cell(entry[p]['mIoU']) for p in protocols]
        cells.append(_cell(entry['honest']['mDice']))
        cells.append(_cell(entry['honest']['FwIoU']))
        cells.append(str(entry.get('effective_prototypes', '-')))
        cells.append(str(entry['train_seconds']))
        lines.append(f'| {method} | ' + ' | '.join(cells) + ' |')
    per_class = ['', '| method (honest) | TUM | STR | LYM | NEC |',
                 '|---|---|---|---|---|']
    for method, entry in summary.items():
        per_class.append(f'| {method} | ' + ' | '.join(
            f"{entry['honest'][f'IoU.{n}']['mean']:.2f}"
            for n in CLASS_NAMES) + ' |')
    rows = ['', '| method | row (gate, rule, prior) | test masks read | '
            'mIoU count | mIoU ignore | BACK IoU | NEC IoU |',
            '|---|---|---|---|---|---|---|']
    for method, entry in summary.items():
        for row, spec in POSTPROC_ROWS.items():
            if row not in entry or method in SEGFORMER_METHODS:
                continue
            rows.append(
                f'| {method} | {row} ({", ".join(map(str, spec))}) | '
                f"{'yes' if spec[0] == 'oracle' else 'no'} | "
                f"{_cell(entry[row]['mIoU'])} | "
                f"{_cell(entry['ignore'][row]['mIoU'])} | "
                f"{_cell(entry[row]['IoU.BACK'])} | "
                f"{_cell(entry[row]['IoU.NEC'])} |")
    return '\n'.join(lines + per_class + rows + honest_pipelines(summary)) \
        + '\n'


def honest_pipelines(summary):
    """Table lines: each method's default ``tools/test.py`` pipeline
    (prototype models: predicted gate + tissue prior; SegFormer models:
    their own argmax, no gate) beside LPD's oracle-gated reference."""
    lines = ['', '| method | default test pipeline | test masks read | '
             'mIoU count | mIoU ignore | BACK IoU | pseudo-mask mIoU '
             '(train) |', '|---|---|---|---|---|---|---|']
    for method, entry in summary.items():
        row = 'honest' if method in SEGFORMER_METHODS else 'honest+prior'
        if row not in entry:
            continue
        pipeline = ('argmax of all 5 classes, no gate'
                    if method in SEGFORMER_METHODS else
                    'predicted gate (hard) + tissue prior')
        pseudo = entry.get('pseudo_masks')
        lines.append(
            f'| {method} | {pipeline} | no | {_cell(entry[row]["mIoU"])} | '
            f'{_cell(entry["ignore"][row]["mIoU"])} | '
            f'{_cell(entry[row]["IoU.BACK"])} | '
            f'{_cell(pseudo["mIoU"]) if pseudo else "-"} |')
    if 'oracle+prior' in summary.get('lpd', {}):
        entry = summary['lpd']
        lines.append(
            '| lpd | oracle gate + tissue prior (reference) | yes | '
            f'{_cell(entry["oracle+prior"]["mIoU"])} | '
            f'{_cell(entry["ignore"]["oracle+prior"]["mIoU"])} | '
            f'{_cell(entry["oracle+prior"]["IoU.BACK"])} | - |')
    return lines


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.quick:
        args = quick_settings(args)
    if args.backbone_init:  # relative to where the user ran it
        args.backbone_init = osp.abspath(args.backbone_init)
    os.chdir(REPO)
    from lpd_mmseg.models.crf import import_pydensecrf
    from lpd_mmseg.testing.synthetic import generate_synthetic_bcss
    backend = args.crf
    if backend == 'none':
        backend = None
    elif backend == 'auto':
        try:
            import_pydensecrf()
            backend = 'pydensecrf'
        except ImportError:
            backend = 'torch'
    crf_cfg = dict(backend=backend) if backend else None
    manifest = generate_synthetic_bcss(
        args.data_root, seed=args.data_seed, num_train=args.num_train,
        num_val=args.num_val, num_test=args.num_test, size=args.size,
        with_train_masks=True, class_mix=args.class_mix, progress=False)
    variants = [(m, m, ()) for m in args.methods]
    variants += [parse_variant(spec) for spec in args.extra]
    runs = []
    payload = dict(
        command=command_line(), environment=environment(),
        data=dict(root=args.data_root, seed=args.data_seed,
                  class_mix=args.class_mix,
                  counts=manifest['counts'], size=args.size),
        backbone_init=backbone_init_record(args.backbone_init),
        iters=args.iters, stage2_iters=iters_for(args, 'stage2-lpd'),
        batch_size=8 if not args.quick else 4,
        seeds=args.seeds, crf=crf_cfg, protocols=dict(
            honest='gate by predicted class probabilities (>= 0.5)',
            oracle='gate by classes present in the test mask',
            crf='dense CRF, paper parameters',
            background="'count' in metrics, 'ignore' in metrics_ignore",
            rows={name: dict(gate=g, gate_rule=r, tissue_prior=p,
                             reads_test_masks=g == 'oracle')
                  for name, (g, r, p) in POSTPROC_ROWS.items()}),
        runs=runs)
    for name, kind, extra in variants:
        for seed in args.seeds:
            if args.eval_only and not osp.isfile(osp.join(
                    run_dir(args, name, kind, seed),
                    f'iter_{iters_for(args, kind)}.pth')):
                print(f'[quality] {name} seed {seed}: no finished run in '
                      f'{args.work_dir}, skipped (--eval-only)', flush=True)
                continue
            print(f'[quality] {name} seed {seed}: training (or reusing '
                  'a finished run) ...', flush=True)
            checkpoint, seconds, config, pseudo, options = trained(
                args, kind, seed, name, extra)
            confs, coverage = evaluate(config, checkpoint, args, crf_cfg)
            metrics = {p: metrics_of(c) for p, c in confs.items()}
            runs.append(dict(method=name, seed=seed, checkpoint=checkpoint,
                             train_seconds=round(seconds, 1),
                             metrics=metrics,
                             metrics_ignore={
                                 p: metrics_of(c, 'ignore')
                                 for p, c in confs.items()},
                             coverage=coverage_summary(coverage),
                             mean_div_pairs=diversity_pairs(checkpoint),
                             pseudo_masks=pseudo,
                             extra_options=list(options)))
            print(f"[quality] {name} seed {seed}: mIoU honest "
                  f"{metrics['honest']['mIoU']}, oracle "
                  f"{metrics['oracle']['mIoU']}", flush=True)
            payload['summary'] = summarize(runs, [v[0] for v in variants])
            write_json(args.out, payload)
    table = markdown(payload['summary'], payload)
    with open(osp.splitext(args.out)[0] + '.md', 'w') as f:
        f.write(table)
    print(table)
    return payload


if __name__ == '__main__':
    main()
