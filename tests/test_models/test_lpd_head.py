import pytest
import torch
from mmengine.logging import MessageHub
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from model_cfgs import tiny_head, tiny_segmentor


def _samples(labels, size=64):
    samples = []
    for label in labels:
        s = SegDataSample(metainfo=dict(ori_shape=(size, size),
                                        img_shape=(size, size),
                                        pad_shape=(size, size)))
        s.gt_image_label = torch.tensor(label, dtype=torch.float32)
        samples.append(s)
    return samples


def _set_iter(value):
    MessageHub.get_current_instance().update_info('iter', value)


@pytest.fixture
def images():
    torch.manual_seed(0)
    return torch.rand(2, 3, 64, 64) * 255


def test_prototype_layout_and_parameters():
    head = MODELS.build(tiny_head(num_prototypes=3, prototype_dim=16))
    assert head.prototypes.shape == (4 * 3, 16)
    assert len(head.projections) == 3
    assert head.stage_prototypes(2).shape == (12, 32)
    assert torch.allclose(head.logit_scales(), torch.full((3, ), 1 / 0.07))
    assert not hasattr(head, 'conv_seg')
    assert head.out_channels == 5


def test_training_step_losses_and_gradients(images):
    model = MODELS.build(tiny_segmentor())
    _set_iter(0)
    losses = model.loss(images, _samples([[1, 0, 1, 0], [0, 1, 0, 0]]))
    assert set(losses) == {'decode.loss_cls_s2', 'decode.loss_cls_s3',
                           'decode.loss_cls_s4', 'decode.acc_cls',
                           'decode.loss_div', 'decode.div_pairs'}
    # (image, labelled class) pairs owning pseudo-mask pixels: at most 3
    assert 0 <= losses['decode.div_pairs'].item() <= 3
    total = sum(v for k, v in losses.items() if 'loss' in k)
    total.backward()
    head = model.decode_head
    assert head.prototypes.grad.abs().sum() > 0
    assert head.log_logit_scale.grad is not None
    for p in model.parameters():
        assert p.grad is None or torch.isfinite(p.grad).all()


def test_warmup_read_from_training_loop(images):
    model = MODELS.build(tiny_segmentor(head=tiny_head(warmup_iters=100)))
    samples = _samples([[1, 1, 0, 0], [0, 0, 1, 1]])
    _set_iter(99)
    assert 'decode.loss_div' not in model.loss(images, samples)
    _set_iter(100)
    assert 'decode.loss_div' in model.loss(images, samples)
    MessageHub.get_current_instance().pop_info('iter')
    assert 'decode.loss_div' not in model.loss(images, samples)


def test_no_mask_needed_in_training(images):
    model = MODELS.build(tiny_segmentor())
    samples = _samples([[1, 0, 0, 0], [0, 0, 0, 1]])
    assert all('gt_sem_seg' not in s for s in samples)
    model.loss(images, samples)
    bad = SegDataSample()
    with pytest.raises(KeyError, match='gt_image_label'):
        model.loss(images[:1], [bad])


def test_classification_loss_decreases(images):
    torch.manual_seed(0)
    model = MODELS.build(tiny_segmentor())
    samples = _samples([[1, 0, 1, 0], [0, 1, 0, 1]])
    optim = torch.optim.AdamW(model.parameters(), lr=1e-3)
    _set_iter(0)
    history = []
    for _ in range(40):
        losses = model.loss(images, samples)
        cls = sum(v for k, v in losses.items() if 'loss_cls' in k)
        optim.zero_grad()
        (cls + losses['decode.loss_div']).backward()
        optim.step()
        history.append(cls.item())
    assert sum(history[-5:]) / 5 < 0.5 * history[0], history


@pytest.mark.parametrize('merge', ['mean', 'softmax', 'max'])
def test_merge_modes_selectable(images, merge):
    model = MODELS.build(tiny_segmentor(
        head=tiny_head(train_merge=merge, test_merge=merge)))
    model.loss(images, _samples([[1, 0, 0, 0], [0, 1, 0, 0]]))
    model.eval()
    out = model.predict(images)
    assert out[0].seg_logits.data.shape == (5, 64, 64)


@torch.no_grad()
def test_prob_merge_sets_the_gating_probabilities(images):
    """Class probabilities are sigmoid(merged last-stage scores) with the
    merge named by prob_merge (None: the training merge)."""
    torch.manual_seed(0)
    head = MODELS.build(tiny_head(num_prototypes=3))
    head.eval()
    feats = [torch.randn(2, c, s, s)
             for c, s in zip((8, 8, 16, 32), (16, 8, 4, 4))]
    scores = head.stage_logit_maps(head.forward(feats))[-1].mean(dim=(2, 3))
    scores = scores.reshape(2, 4, 3)
    expected = dict(
        mean=scores.mean(dim=2),
        softmax=(scores.softmax(dim=2) * scores).sum(dim=2),
        max=scores.amax(dim=2))
    for merge, want in expected.items():
        head.prob_merge = merge
        _, probs = head.predict_cams(feats, (8, 8))
        assert torch.allclose(probs, torch.sigmoid(want), atol=1e-6), merge
    assert MODELS.build(tiny_head(prob_merge=None,
                                  train_merge='max')).prob_merge == 'max'
    with pytest.raises(ValueError, match='prob_merge'):
        MODELS.build(tiny_head(prob_merge='median'))


def test_correlation_variant_and_no_diversity(images):
    corr = MODELS.build(tiny_segmentor(head=tiny_head(
        loss_diversity=dict(type='CorrelationDiversityLoss',
                            loss_weight=0.5))))
    _set_iter(0)
    assert 'decode.loss_div' in corr.loss(
        images, _samples([[1, 1, 0, 0], [1, 0, 0, 0]]))
    plain = MODELS.build(tiny_segmentor(head=tiny_head(loss_diversity=None)))
    assert 'decode.loss_div' not in plain.loss(
        images, _samples([[1, 1, 0, 0], [1, 0, 0, 0]]))


def test_k1_cam_baseline(images):
    model = MODELS.build(tiny_segmentor(head=tiny_head(num_prototypes=1)))
    losses = model.loss(images, _samples([[1, 0, 0, 0], [0, 1, 1, 0]]))
    assert losses['decode.loss_div'].item() == 0.0
    sum(v for k, v in losses.items() if 'loss' in k).backward()


@pytest.mark.parametrize('kw, error, pattern', [
    (dict(num_protoypes=3), TypeError, "num_protoypes.*num_prototypes"),
    (dict(num_prototypes=0), ValueError, 'num_prototypes'),
    (dict(stage_loss_weights=[1.0, 1.0]), ValueError,
     'stage_loss_weights has 2 entries but the head uses 3'),
    (dict(stage_fusion_weights=[0.5, 0.5, 0, 0]), ValueError,
     'stage_fusion_weights has 4'),
    (dict(in_channels=[8, 16]), ValueError, 'in_channels has 2'),
    (dict(stage_loss_weights=[0, 1, 1], stage_fusion_weights=[0, 0.5, 0.5]),
     ValueError, 'would do nothing'),
    (dict(train_merge='median'), ValueError, 'train_merge'),
    (dict(prototype_mode='kmeans'), ValueError, 'prototype_mode'),
    (dict(loss_diversity=dict(type='JeffreysDiversityLoss', wieght=1)),
     TypeError, 'wieght'),
])
def test_config_mistakes_fail_at_build(kw, error, pattern):
    with pytest.raises(error, match=pattern):
        MODELS.build(tiny_head(**kw))


def test_wrong_in_channels_named_at_first_forward(images):
    model = MODELS.build(tiny_segmentor(head=tiny_head(
        in_channels=[8, 16, 64])))
    with pytest.raises(ValueError, match=r'in_channels\[2\] is 64'):
        model.loss(images, _samples([[1, 0, 0, 0], [0, 1, 0, 0]]))


def test_label_count_mismatch(images):
    model = MODELS.build(tiny_segmentor())
    with pytest.raises(ValueError, match='num_classes=4'):
        model.loss(images, _samples([[1, 0, 0], [0, 1, 0]]))


def test_stock_encoder_decoder_with_lpd_head(images):
    from mmengine.config import ConfigDict
    cfg = ConfigDict(tiny_segmentor())
    cfg.type = 'EncoderDecoder'
    model = MODELS.build(cfg)
    model.loss(images, _samples([[1, 0, 0, 0], [0, 1, 0, 0]]))
    model.eval()
    out = model.predict(images)
    assert out[0].seg_logits.data.shape == (5, 64, 64)
    assert out[0].pred_sem_seg.data.max() <= 4


def test_frozen_bank_mode(images):
    model = MODELS.build(tiny_segmentor(head=tiny_head(
        prototype_mode='frozen_bank', loss_diversity=None)))
    head = model.decode_head
    assert not hasattr(head, 'prototypes')
    with pytest.raises(RuntimeError, match='PrototypeBankHook'):
        model.loss(images, _samples([[1, 0, 0, 0], [0, 1, 0, 0]]))
    banks = [torch.randn(12, c) for c in (8, 16, 32)]
    head.set_prototype_bank(banks)
    losses = model.loss(images, _samples([[1, 0, 0, 0], [0, 1, 0, 0]]))
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    # frozen: buffers, no gradient, not in the parameter list
    names = {n for n, _ in head.named_parameters()}
    assert not any(n.startswith('bank_') for n in names)
    assert torch.equal(head.bank_2, banks[2])
    with pytest.raises(ValueError, match='shape'):
        head.set_prototype_bank([torch.randn(12, 9)] * 3)


def test_mask_refiner_ema_is_frozen_and_trains(images):
    from mmengine.optim import build_optim_wrapper

    from lpd_mmseg.models.refiners import MaskRefiner
    cfg = tiny_segmentor()
    cfg['mask_refiner'] = dict(type='MaskRefiner', encoder='ema',
                               max_pairs=4)
    model = MODELS.build(cfg)
    refiner = model.mask_refiner
    assert isinstance(refiner, MaskRefiner)
    assert all(not p.requires_grad for p in refiner.encoder.parameters())
    # as the runner builds it: over the whole model, frozen encoder included
    optim_wrapper = build_optim_wrapper(
        model, dict(optimizer=dict(type='AdamW', lr=1e-3)))
    encoder_ids = {id(p) for p in refiner.encoder.parameters()}
    assert any(id(p) in encoder_ids
               for group in optim_wrapper.optimizer.param_groups
               for p in group['params'])
    _set_iter(5)
    samples = _samples([[1, 1, 0, 0], [0, 0, 1, 1]])
    losses = model.loss(images, samples)
    assert 'refine.loss_refine' in losses and 'refine.loss_cam_size' in losses
    assert bool(refiner.ema_ready)
    # first use copies the backbone exactly
    for a, b in zip(refiner.encoder.parameters(),
                    model.backbone.parameters()):
        assert torch.equal(a, b)
    before = [p.detach().clone() for p in refiner.encoder.parameters()]
    optim_wrapper.update_params(
        sum(v for k, v in losses.items() if 'loss' in k))
    assert all(p.grad is None for p in refiner.encoder.parameters())
    state = optim_wrapper.optimizer.state
    assert id(model.decode_head.prototypes) in {id(p) for p in state}
    assert not any(id(p) in encoder_ids for p in state)
    for a, b in zip(refiner.encoder.parameters(), before):
        assert torch.equal(a, b)
    model.train()
    assert not refiner.encoder.training


def _external_refiner(head=None, init_cfg=None):
    cfg = tiny_segmentor(head=head)
    cfg['mask_refiner'] = dict(
        type='MaskRefiner', embed_channels=64,
        encoder=dict(type='ResNetV1c', depth=18, num_stages=4,
                     out_indices=(3, ), base_channels=8, stem_channels=8,
                     init_cfg=init_cfg),
        max_pairs=2)
    return MODELS.build(cfg)


def test_mask_refiner_external_encoder(images):
    model = _external_refiner()
    assert model.mask_refiner.adapter is not None
    _set_iter(5)
    losses = model.loss(images, _samples([[1, 0, 0, 0], [0, 1, 0, 0]]))
    total = sum(v for k, v in losses.items() if 'loss' in k)
    total.backward()
    assert torch.isfinite(total)


def test_mask_refiner_external_encoder_init_weights():
    model = _external_refiner(
        init_cfg=dict(type='Constant', val=0.123, layer='Conv2d'))
    encoder = model.mask_refiner.encoder
    convs = [m for m in encoder.modules()
             if isinstance(m, torch.nn.Conv2d)]
    assert convs and not any(
        torch.allclose(m.weight, torch.tensor(0.123)) for m in convs)
    model.init_weights()
    for m in convs:
        assert torch.allclose(m.weight, torch.full_like(m.weight, 0.123))
    assert all(not p.requires_grad for p in encoder.parameters())
    assert not encoder.training
    model.train()
    assert not encoder.training


@pytest.mark.parametrize('case', ['warmup', 'no_pair'])
def test_mask_refiner_adapter_always_gets_gradient(images, case):
    # DDP without find_unused_parameters needs a gradient for every
    # learnable parameter on every step.
    model = _external_refiner(head=tiny_head(warmup_iters=100))
    if case == 'warmup':
        _set_iter(0)
        labels = [[1, 0, 0, 0], [0, 1, 0, 0]]
    else:
        _set_iter(100)
        labels = [[0, 0, 0, 0], [0, 0, 0, 0]]  # no prototype can qualify
    losses = model.loss(images, _samples(labels))
    if case == 'warmup':
        assert not any(k.startswith('refine.') for k in losses)
    else:
        assert losses['refine.loss_refine'].item() == 0.0
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    adapter = list(model.mask_refiner.adapter.parameters())
    assert adapter
    for p in adapter:
        assert p.grad is not None and torch.equal(p.grad,
                                                  torch.zeros_like(p))


def test_refiner_selection_and_contrastive_math():
    from lpd_mmseg.models.refiners import (
        contrastive_terms,
        select_firing_prototypes,
    )
    # C=2, k=2.  Image 0 labelled class 0: prototype 1 beats the class mean.
    scores = torch.tensor([[1.0, 3.0, 5.0, 9.0]])
    class_scores = torch.tensor([[2.0, 7.0]])
    labels = torch.tensor([[1.0, 0.0]])
    pairs = select_firing_prototypes(scores, class_scores, labels, 2)
    assert pairs.tolist() == [[0, 1]]
    # fg embedding equal to prototype 0, orthogonal to prototype 1
    protos = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    fg = torch.tensor([[1.0, 0.0]])
    bg = torch.tensor([[0.0, 1.0]])
    fg_loss, bg_loss = contrastive_terms(fg, bg, protos,
                                         torch.tensor([0]), temperature=1.0)
    import math
    expected = -math.log(math.e / (math.e + 1))
    assert fg_loss.item() == pytest.approx(expected, rel=1e-6)
    # bg aligned with the other prototype: -log(1 - p0) with p0 = 1/(1+e)
    assert bg_loss.item() == pytest.approx(
        -math.log(math.e / (1 + math.e)), rel=1e-6)


def test_raw_diversity_input_compares_raw_prototypes(images):
    # last stage width 32 = prototype_dim: the reference code's input
    model = MODELS.build(tiny_segmentor(head=tiny_head(
        prototype_dim=32, diversity_input='raw')))
    _set_iter(0)
    losses = model.loss(images, _samples([[1, 1, 0, 0], [0, 0, 1, 0]]))
    losses['decode.loss_div'].backward()
    head = model.decode_head
    assert head.prototypes.grad is not None
    # the raw input does not pass through the projections' last layers
    # for the diversity term alone
    projected = MODELS.build(tiny_segmentor(head=tiny_head(
        prototype_dim=32)))
    projected.load_state_dict(model.state_dict())
    other = projected.loss(images, _samples([[1, 1, 0, 0], [0, 0, 1, 0]]))
    assert not torch.isclose(other['decode.loss_div'],
                             losses['decode.loss_div'].detach())
    with pytest.raises(ValueError, match=r"diversity_input='raw'.*"
                       r'prototype_dim \(16\).*\(32\)'):
        MODELS.build(tiny_head(diversity_input='raw'))
    with pytest.raises(ValueError, match='region_rule'):
        MODELS.build(tiny_head(region_rule='soft'))


def test_minmax_region_rule_reaches_negative_labelled_classes(images):
    torch.manual_seed(0)
    relu = MODELS.build(tiny_segmentor())
    minmax = MODELS.build(tiny_segmentor(head=tiny_head(
        region_rule='minmax')))
    minmax.load_state_dict(relu.state_dict())
    labels = [[1, 1, 1, 0], [0, 1, 1, 1]]
    _set_iter(0)
    a = relu.loss(images, _samples(labels))['decode.div_pairs'].item()
    b = minmax.loss(images, _samples(labels))['decode.div_pairs'].item()
    # at initialisation the merged maps are negative: the ReLU rule empties
    # every region, min-max without ReLU gives labelled classes pixels
    assert a == 0 and b > a
