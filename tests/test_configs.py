import glob
import importlib.util
import os.path as osp
import re

import pytest
import torch
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = sorted(
    p for p in glob.glob(osp.join(REPO, 'configs', '**', '*.py'),
                         recursive=True) if '_base_' not in p)


def _name(path):
    return osp.relpath(path, osp.join(REPO, 'configs'))


def _has_mmpretrain():
    if importlib.util.find_spec('mmpretrain') is None:
        return False
    try:
        import mmpretrain.models  # noqa: F401
    except Exception:
        return False
    return True


def _load(path):
    cfg = Config.fromfile(path, import_custom_modules=False)
    if 'mmpretrain.models' in cfg.custom_imports['imports'] and \
            not _has_mmpretrain():
        pytest.skip('mmpretrain (with torchvision) is not installed')
    return Config.fromfile(path)


def test_configs_found():
    names = {_name(p) for p in CONFIGS}
    for expected in ('lpd/lpd_mit-b1_1xb10-18.7k_bcss-wsss-224x224.py',
                     'lpd/lpd_mit-b1_1xb10-18.7k_luad-histoseg-224x224.py',
                     'baselines/cam_mit-b1_1xb10-18.7k_bcss-wsss-224x224.py',
                     'baselines/bank_mit-b1_1xb10-18.7k_bcss-wsss-224x224.py',
                     'lpd/lpd_mit-tiny_1xb8-600_synthetic-bcss-128x128.py'):
        assert expected in names


@pytest.mark.parametrize('path', CONFIGS, ids=_name)
def test_config_is_self_contained(path):
    # Every config must parse, optional imports or not.
    cfg = Config.fromfile(path, import_custom_modules=False)
    text = open(path).read()
    assert 'custom_imports' in text, 'custom_imports must be in the file'
    assert 'lpd_mmseg' in cfg.custom_imports['imports']
    assert cfg.custom_imports['allow_failed_imports'] is False
    assert cfg.default_scope == 'mmseg'
    assert cfg.get('load_from') is None


def _shrink_for_cpu(cfg):
    model = cfg.model
    model.pretrained = None
    model.backbone.init_cfg = None
    if model.backbone.type == 'SwinTransformer':
        model.backbone.pretrain_img_size = 64
    return model


def _samples(n, size, with_label=True):
    out = []
    for i in range(n):
        s = SegDataSample(metainfo=dict(ori_shape=(size, size),
                                        img_shape=(size, size),
                                        pad_shape=(size, size)))
        label = torch.zeros(4)
        label[i % 4] = 1
        label[(i + 1) % 4] = 1
        s.gt_image_label = label
        out.append(s)
    return out


@pytest.mark.parametrize('path', [
    p for p in CONFIGS if '/lpd/' in p or '/baselines/' in p
], ids=_name)
def test_one_training_step(path):
    cfg = _load(path)
    model = revert_sync_batchnorm(MODELS.build(_shrink_for_cpu(cfg)))
    model.train()
    head = model.decode_head
    if head.prototype_mode == 'frozen_bank':
        head.set_prototype_bank([
            torch.randn(head.num_classes * head.num_prototypes, c)
            for c in head.in_channels
        ])
    from mmengine.logging import MessageHub
    MessageHub.get_current_instance().update_info('iter', 10**6)
    torch.manual_seed(0)
    images = torch.rand(2, 3, 64, 64) * 255
    losses = model.loss(images, _samples(2, 64))
    total = sum(v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total)
    total.backward()
    grads = [p.grad for p in head.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all()
                         for g in grads)
    model.eval()
    with torch.no_grad():
        out = model.predict(images)
    assert out[0].pred_sem_seg.data.shape == (1, 64, 64)


def test_second_stage_configs_parse():
    for path in CONFIGS:
        if '/second_stage/' in path:
            cfg = Config.fromfile(path, import_custom_modules=False)
            assert cfg.model.decode_head.num_classes == 5


def _config(name):
    return Config.fromfile(osp.join(REPO, 'configs', name),
                           import_custom_modules=False)


def test_paper_setting_values():
    cfg = _config('lpd/lpd_mit-b1_1xb10-18.7k_bcss-wsss-224x224.py')
    assert cfg.train_dataloader.batch_size == 10
    # 224 px patches enter as they are: no resize or crop, and 224 needs no
    # padding to the backbone's stride.
    pipeline = [t.type for t in cfg.train_dataloader.dataset.pipeline]
    assert not any('Resize' in t or 'Crop' in t for t in pipeline)
    assert 224 % cfg.model.data_preprocessor.size_divisor == 0
    flips = {t.direction for t in cfg.train_dataloader.dataset.pipeline
             if t.type == 'RandomFlip'}
    assert flips == {'horizontal', 'vertical'}
    assert 'RandomRotate90' in pipeline
    optimizer = cfg.optim_wrapper.optimizer
    assert optimizer.type == 'AdamW'
    assert optimizer.lr == 5e-5 and optimizer.weight_decay == 1e-3
    [poly] = cfg.param_scheduler
    assert poly.type == 'PolyLR' and poly.power == 1.0
    assert poly.end == cfg.train_cfg.max_iters == 18744
    head = cfg.model.decode_head
    assert head.num_prototypes == 10 and head.prototype_dim == 512
    assert head.stage_loss_weights == [0.1, 1.0, 1.0]
    assert head.stage_fusion_weights == [0.3, 0.3, 0.4]
    assert head.loss_diversity.loss_weight == 0.5
    assert head.warmup_iters == 3000
    pre = cfg.model.data_preprocessor
    assert pre.mean == pytest.approx(
        [v * 255 for v in (0.6679, 0.4779, 0.7062)])
    assert pre.std == pytest.approx(
        [v * 255 for v in (0.1737, 0.2256, 0.1982)])
    assert pre.bgr_to_rgb is False


def test_r50_weights_through_init_cfg():
    cfg = _config('lpd/lpd_r50-v1c_1xb10-18.7k_bcss-wsss-224x224.py')
    assert cfg.model.get('pretrained') is None
    assert cfg.model.backbone.init_cfg == dict(
        type='Pretrained', checkpoint='open-mmlab://resnet50_v1c')


# {method}_{backbone}_{gpus}xb{batch}-{iters}_{dataset}-{crop}.py
NAME_PATTERN = re.compile(
    r'^[a-z0-9-]+_[a-z0-9.-]+_\d+xb\d+-[\d.]+k?_[a-z0-9-]+-\d+x\d+\.py$')


@pytest.mark.parametrize('path', CONFIGS, ids=_name)
def test_config_names_follow_mmseg(path):
    assert NAME_PATTERN.match(osp.basename(path)), osp.basename(path)


def test_demo_config_inherits_its_schedule():
    name = 'lpd/lpd_mit-tiny_1xb8-600_synthetic-bcss-128x128.py'
    text = open(osp.join(REPO, 'configs', name)).read()
    for key in ('optim_wrapper', 'param_scheduler', 'train_cfg',
                'default_hooks'):
        assert f'\n{key} = ' not in text, f'{key} re-spelt in {name}'
    cfg = _config(name)
    assert cfg.train_cfg.max_iters == 600 and cfg.train_cfg.val_interval == 200
    assert cfg.optim_wrapper.optimizer.lr == 1e-3
    assert [s.type for s in cfg.param_scheduler] == ['LinearLR', 'PolyLR']
    assert cfg.param_scheduler[1].end == 600


def test_cpu_second_stage_schedule():
    """The CPU second stage: the demo's optimiser and warm-up, 1200
    iterations, the decay ending with training."""
    cfg = _config('second_stage/'
                  'segformer_mit-tiny_1xb8-1200_synthetic-bcss-pseudo-'
                  '128x128.py')
    demo = _config('lpd/lpd_mit-tiny_1xb8-600_synthetic-bcss-128x128.py')
    assert cfg.train_cfg.max_iters == 1200
    assert cfg.train_cfg.val_interval == 200
    assert cfg.optim_wrapper == demo.optim_wrapper
    warm, poly = cfg.param_scheduler
    assert warm == demo.param_scheduler[0]
    assert (poly.type, poly.begin, poly.end) == ('PolyLR', 50, 1200)


def test_second_stage_states_its_backbone_strides():
    name = ('second_stage/'
            'segformer_mit-b1_1xb10-18.7k_bcss-wsss-pseudo-224x224.py')
    assert 'strides=[4, 2, 2, 1]' in open(osp.join(REPO, 'configs',
                                                   name)).read()
    lpd = _config('lpd/lpd_mit-b1_1xb10-18.7k_bcss-wsss-224x224.py')
    assert _config(name).model.backbone == lpd.model.backbone


@pytest.mark.parametrize('name', [
    'lpd/lpd_mit-tiny_1xb8-600_synthetic-bcss-128x128.py',
    'second_stage/segformer_mit-tiny_1xb8-1200_synthetic-bcss-pseudo-128x128.py'
])
def test_cpu_configs_start_from_the_shipped_backbone(name):
    """The CPU demo configs load the shipped backbone: the file is the one
    its record names (sha256), every backbone key is in it with the right
    shape, and after init_weights the backbone holds exactly its values."""
    import json

    from lpd_mmseg.apis.checkpoint import safe_load_checkpoint, sha256_of
    weights = osp.join(REPO, 'lpd_mmseg', 'testing', 'weights',
                       'mit-tiny_gen100-cls_backbone.pth')
    with open(weights[:-len('.pth')] + '.json') as f:
        record = json.load(f)
    assert record['sha256'] == sha256_of(weights)
    cfg = _config(name)
    init = cfg.model.backbone.init_cfg
    assert init.type == 'Pretrained'
    assert osp.samefile(init.checkpoint, weights)
    stored = safe_load_checkpoint(weights)['state_dict']
    assert len(stored) == record['tensors']
    model = MODELS.build(cfg.model)
    model.init_weights()
    own = model.backbone.state_dict()
    assert sorted(own) == sorted(stored)
    for key, value in own.items():
        assert value.shape == stored[key].shape, key
        assert torch.equal(value, stored[key].to(value.dtype)), key
