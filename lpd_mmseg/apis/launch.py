"""Argument parsing and runner set-up behind ``tools/train.py`` and
``tools/test.py``.  The flags are MMSegmentation's, so commands written for
``mmseg/tools/*.py`` work unchanged; a few LPD conveniences are added to
testing (``--gate``, ``--crf``, ``--background``)."""
import argparse
import os
import os.path as osp
from typing import List, Optional

from mmengine.config import Config, DictAction
from mmengine.logging import print_log

LAUNCHERS = ['none', 'pytorch', 'slurm', 'mpi']


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--work-dir', help='folder for logs, checkpoints '
                        'and outputs (default: ./work_dirs/<config name>)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config entries, e.g. '
        'model.decode_head.num_prototypes=5 train_cfg.max_iters=1000')
    parser.add_argument('--launcher', choices=LAUNCHERS, default='none',
                        help="job launcher for distributed runs; 'pytorch' "
                        '(torchrun, tools/dist_*.sh) also runs on CPU-only '
                        'machines, with the gloo backend')
    # torchrun passes --local-rank (older launchers --local_rank).
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def build_train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description='Train a segmentor (LPD or any MMSeg model) from a '
        'config. Checkpoints and logs go to --work-dir.')
    parser.add_argument('config', help='train config file')
    start = parser.add_mutually_exclusive_group()
    start.add_argument(
        '--resume', nargs='?', const='auto', default=None,
        help='resume training: with no value, from the checkpoint named by '
        'last_checkpoint in the work dir, or the newest intact one when '
        'that record is missing or names a damaged file; or from the '
        'checkpoint path given')
    start.add_argument(
        '--restart', action='store_true',
        help='train from iteration 0 even though the work dir holds '
        "checkpoints of an earlier run (moved to 'superseded_<time>/' "
        'first, never deleted); without it such a run is refused')
    parser.add_argument('--amp', action='store_true',
                        help='mixed-precision training (needs a GPU)')
    _common(parser)
    return parser


def build_test_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description='Evaluate a checkpoint on the test split of a config and '
        'print the metric table.  Results are also written to the work '
        'dir.')
    parser.add_argument('config', help='test config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out', help='write prediction masks (palette PNG) '
                        'to this folder')
    parser.add_argument('--show', action='store_true',
                        help='show prediction overlays in a window')
    parser.add_argument('--show-dir', help='write an overlay of every '
                        'prediction to this folder (inside the work dir if '
                        'relative), under vis_data/vis_image/')
    parser.add_argument('--wait-time', type=float, default=2,
                        help='seconds per image with --show')
    parser.add_argument('--tta', action='store_true',
                        help="test-time augmentation (the config's "
                        'tta_pipeline: flip x brightness for LPD)')
    from ..models.gating import GATE_SOURCES
    parser.add_argument(
        '--gate', choices=GATE_SOURCES,
        help="class gating: 'predicted' (the model's own class "
        "probabilities, honest), 'oracle' (classes of the ground-truth mask, "
        "as in published tables), 'labels' (the image-level labels, e.g. "
        "of training patches) or 'none'")
    parser.add_argument('--crf', choices=['torch', 'pydensecrf'],
                        help='dense CRF post-processing backend')
    parser.add_argument(
        '--background', choices=['count', 'ignore'],
        help="metric protocol for ground-truth background: 'count' (TPRO/"
        "PBIP/LPD) or 'ignore' (WSSS-Tissue)")
    _common(parser)
    return parser


def _set_local_rank(args) -> None:
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)


def _work_dir(cfg: Config, args, config_path: str) -> None:
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(config_path))[0])


def load_train_config(args) -> Config:
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    _work_dir(cfg, args, args.config)
    if args.amp:
        wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if wrapper == 'AmpOptimWrapper':
            print_log('AMP is already enabled in the config',
                      logger='current')
        else:
            if wrapper != 'OptimWrapper':
                raise ValueError(f'--amp needs optim_wrapper.type '
                                 f'OptimWrapper, the config has {wrapper}')
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'
    if args.restart:
        checkpoint = cfg.get('default_hooks', {}).get('checkpoint')
        if not checkpoint or checkpoint.get('type') != 'SafeCheckpointHook':
            raise ValueError(
                '--restart needs default_hooks.checkpoint.type='
                "'SafeCheckpointHook' (the stock CheckpointHook never "
                'refuses, so there is nothing to override)')
        checkpoint['restart'] = True
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        if not osp.isfile(args.resume):
            raise FileNotFoundError(f'--resume {args.resume}: no such file')
        cfg.resume = True
        cfg.load_from = args.resume
    return cfg


def _set_test_option(cfg: Config, key: str, value) -> None:
    cfg.model.setdefault('test_cfg', {})
    cfg.model.test_cfg[key] = value


def load_test_config(args) -> Config:
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    _work_dir(cfg, args, args.config)
    if not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'checkpoint {args.checkpoint}: no such '
                                'file')
    cfg.load_from = args.checkpoint
    # Testing never reads the training split.  mmengine builds the train
    # loop (and scans its data set) lazily whenever a hook asks for
    # runner.iter, as SegVisualizationHook does; that fails where the
    # training masks live elsewhere (second-stage pseudo-masks).
    for key in ('train_dataloader', 'train_cfg', 'optim_wrapper',
                'param_scheduler'):
        cfg[key] = None
    if args.gate:
        _set_test_option(cfg, 'gate', args.gate)
    if args.crf:
        crf = dict(cfg.model.test_cfg.get('crf') or {})
        crf['backend'] = args.crf
        _set_test_option(cfg, 'crf', crf)
    if args.background:
        for key in ('test_evaluator', 'val_evaluator'):
            evaluator = cfg.get(key)
            if isinstance(evaluator, dict):
                evaluator['background'] = args.background
    if args.show or args.show_dir:
        hooks = cfg.default_hooks
        if 'visualization' not in hooks:
            raise KeyError('--show/--show-dir need '
                           'default_hooks.visualization (SegVisualizationHook)'
                           ' in the config')
        hooks.visualization.draw = True
        # readable overlays (lpd_mmseg/visualization/overlay.py)
        cfg.visualizer.type = 'TissueSegVisualizer'
        # mmseg draws every 50th batch by default; a user asking for
        # overlays wants one per image.
        hooks.visualization.interval = 1
        if args.show:
            hooks.visualization.show = True
            hooks.visualization.wait_time = args.wait_time
        if args.show_dir:
            show_dir = args.show_dir
            if not osp.isabs(show_dir):
                show_dir = osp.join(cfg.work_dir, show_dir)
            cfg.visualizer.save_dir = show_dir
    if args.tta:
        if 'tta_pipeline' not in cfg or 'tta_model' not in cfg:
            raise KeyError('--tta needs tta_pipeline and tta_model in the '
                           'config')
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
        cfg.tta_model.module = cfg.model
        cfg.model = cfg.tta_model
    if args.out is not None:
        cfg.test_evaluator['output_dir'] = args.out
        cfg.test_evaluator['keep_results'] = True
    return cfg


def _precheck_checkpoint(cfg: Config) -> None:
    """Refuse an unsafe, empty or truncated ``load_from`` / resume
    checkpoint with our message before the runner starts (the runner's own
    load is weights-only too)."""
    path = cfg.get('load_from')
    if path and osp.isfile(path):
        from .checkpoint import check_checkpoint_file
        check_checkpoint_file(path)


def build_runner(cfg: Config):
    _precheck_checkpoint(cfg)
    from mmengine.runner import Runner
    if 'runner_type' in cfg:
        from mmengine.registry import RUNNERS
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


def _close_distributed() -> None:
    """Shut the process group down before the interpreter exits.

    mmengine never destroys it; a gloo group still alive at exit could
    abort a rank with "terminate called without an active exception"
    (seen once in a 2-process CPU test run) after the work was done."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def train(argv: Optional[List[str]] = None):
    args = build_train_parser().parse_args(argv)
    _set_local_rank(args)
    cfg = load_train_config(args)
    runner = build_runner(cfg)
    runner.train()
    _close_distributed()
    print_log(f'training finished; checkpoints and logs are in '
              f'{osp.abspath(cfg.work_dir)}', logger='current')
    return runner


def test(argv: Optional[List[str]] = None):
    args = build_test_parser().parse_args(argv)
    _set_local_rank(args)
    cfg = load_test_config(args)
    runner = build_runner(cfg)
    metrics = runner.test()
    _close_distributed()
    print_log(f'test results and logs are in {osp.abspath(cfg.work_dir)}',
              logger='current')
    return metrics
