import math

import pytest
import torch
from mmseg.registry import MODELS

from lpd_mmseg.models.losses import (
    correlation_diversity,
    jeffreys_diversity,
    multilabel_bce,
)
from lpd_mmseg.models.utils import cosine_similarity_maps

# Two prototypes, region of two pixels, logits [1, 0] and [0, 1]:
# v1 = (s(1), s(-1)), v2 = (s(-1), s(1)) with s the logistic function, so
# KL(v1||v2) = KL(v2||v1) = (s(1) - s(-1)) * 1 = tanh(1/2), and the pair
# similarity is exp(-2 tanh(1/2)).
OPPOSITE = math.exp(-2 * math.tanh(0.5))


def _two_pixel_case():
    sim = torch.tensor([[1., 0.], [0., 1.]]).reshape(1, 2, 1, 2)
    mask = torch.zeros(1, 1, 2, dtype=torch.long)
    return sim, mask


def test_jeffreys_hand_value():
    sim, mask = _two_pixel_case()
    out = jeffreys_diversity(sim, mask, num_classes=1)
    assert out.dim() == 0
    assert out.item() == pytest.approx(OPPOSITE, rel=1e-6)


def test_jeffreys_temperature():
    sim, mask = _two_pixel_case()
    # logits doubled: KL = (s(2) - s(-2)) * 2 = 2 tanh(1) each way
    out = jeffreys_diversity(sim, mask, 1, temperature=0.5)
    assert out.item() == pytest.approx(math.exp(-4 * math.tanh(1.)),
                                       rel=1e-6)


def test_single_softmax_not_double():
    sim, mask = _two_pixel_case()
    once = jeffreys_diversity(sim, mask, 1).item()
    # what the reference code's second softmax would give
    v1 = torch.softmax(torch.softmax(torch.tensor([1., 0.]), 0), 0)
    v2 = v1.flip(0)
    kl = (v1 * (v1.log() - v2.log())).sum()
    twice = math.exp(-2 * kl.item())
    assert once == pytest.approx(OPPOSITE, rel=1e-6)
    assert abs(once - twice) > 0.3


def test_identical_prototypes_score_one_and_different_lower():
    sim = torch.tensor([[1., 0., 0.5], [1., 0., 0.5]]).reshape(1, 2, 1, 3)
    mask = torch.zeros(1, 1, 3, dtype=torch.long)
    assert jeffreys_diversity(sim, mask, 1).item() == pytest.approx(1.0)
    different = torch.tensor([[1., 0., 0.], [0., 0., 1.]]).reshape(1, 2, 1, 3)
    assert jeffreys_diversity(different, mask, 1).item() < 0.99


def test_empty_region_and_image_without_class():
    # B=2, C=2, k=2.  Image 0: class 0 region = pixels 0,1 (opposite
    # prototypes), class 1 region = pixel 2 only (one pixel: both
    # distributions are the same point mass -> 1).  Image 1: no region.
    sim = torch.zeros(2, 4, 1, 3)
    sim[0, 0, 0, :2] = torch.tensor([1., 0.])
    sim[0, 1, 0, :2] = torch.tensor([0., 1.])
    mask = torch.tensor([[[0, 0, 1]], [[2, 2, 255]]])
    out = jeffreys_diversity(sim, mask, num_classes=2)
    assert out.item() == pytest.approx((OPPOSITE + 1.0) / 2, rel=1e-6)
    # class 1 absent from image 0 as well: only class 0 counts
    mask[0, 0, 2] = 2
    out = jeffreys_diversity(sim, mask, num_classes=2)
    assert out.item() == pytest.approx(OPPOSITE, rel=1e-6)


def test_class_c_is_scored_on_region_c():
    # Region of class 1 only.  Changing class 0's prototypes must not
    # change the result (the reference scored class c on region c+1 / c-1).
    sim = torch.zeros(1, 4, 1, 2)
    sim[0, 2, 0] = torch.tensor([1., 0.])
    sim[0, 3, 0] = torch.tensor([0., 1.])
    mask = torch.ones(1, 1, 2, dtype=torch.long)
    base = jeffreys_diversity(sim, mask, 2).item()
    assert base == pytest.approx(OPPOSITE, rel=1e-6)
    sim[0, 0, 0] = torch.tensor([5., -5.])
    assert jeffreys_diversity(sim, mask, 2).item() == pytest.approx(base)


def test_last_and_first_class_scored_on_their_own_regions():
    # C=3, k=2, with a distinct value per class: class 0 identical
    # prototypes (1), class 1 logits doubled (exp(-4 tanh 1)), class 2
    # opposite.  The reference never scored the last class and was off by
    # one; either slip would return another class's value.
    sim = torch.zeros(1, 6, 1, 2)
    sim[0, 0, 0] = sim[0, 1, 0] = torch.tensor([1., 0.])
    sim[0, 2, 0] = torch.tensor([2., 0.])
    sim[0, 3, 0] = torch.tensor([0., 2.])
    sim[0, 4, 0] = torch.tensor([1., 0.])
    sim[0, 5, 0] = torch.tensor([0., 1.])
    values = [1.0, math.exp(-4 * math.tanh(1.)), OPPOSITE]
    for c, expected in enumerate(values):
        mask = torch.full((1, 1, 2), c, dtype=torch.long)
        assert jeffreys_diversity(sim, mask, 3).item() == pytest.approx(
            expected, rel=1e-6), c


def test_symmetric_in_prototype_order():
    torch.manual_seed(0)
    sim = torch.randn(2, 2 * 4, 5, 5)
    mask = torch.randint(0, 3, (2, 5, 5))
    out = jeffreys_diversity(sim, mask, 2)
    perm = torch.tensor([2, 0, 3, 1, 7, 4, 6, 5])
    assert jeffreys_diversity(sim[:, perm], mask, 2).item() == \
        pytest.approx(out.item(), rel=1e-5)


def test_three_prototypes_mean_over_pairs():
    sim = torch.tensor([[1., 0.], [1., 0.], [0., 1.]]).reshape(1, 3, 1, 2)
    mask = torch.zeros(1, 1, 2, dtype=torch.long)
    # pairs (0,1) identical -> 1, (0,2) and (1,2) opposite
    expected = (1 + 2 * OPPOSITE) / 3
    assert jeffreys_diversity(sim, mask, 1).item() == pytest.approx(
        expected, rel=1e-6)


def test_nothing_valid_gives_zero_with_gradient():
    sim = torch.randn(2, 4, 3, 3, requires_grad=True)
    mask = torch.full((2, 3, 3), 2)
    out = jeffreys_diversity(sim, mask, 2)
    assert out.item() == 0.0
    out.backward()
    assert torch.isfinite(sim.grad).all() and sim.grad.abs().sum() == 0


def test_k1_has_no_pairs():
    sim = torch.randn(1, 3, 2, 2, requires_grad=True)
    out = jeffreys_diversity(sim, torch.zeros(1, 2, 2, dtype=torch.long), 3)
    assert out.item() == 0.0
    out.backward()


def test_gradient_reaches_prototypes_and_is_finite():
    torch.manual_seed(0)
    feats = torch.randn(2, 8, 6, 6)
    protos = torch.randn(2 * 3, 8, requires_grad=True)
    sim = cosine_similarity_maps(feats, protos)
    mask = torch.randint(0, 3, (2, 6, 6))
    out = jeffreys_diversity(sim, mask, 2)
    out.backward()
    assert torch.isfinite(protos.grad).all()
    assert protos.grad.abs().sum() > 0


def test_half_precision_is_finite():
    sim = torch.randn(2, 6, 4, 4).half().requires_grad_()
    mask = torch.randint(0, 3, (2, 4, 4))
    out = jeffreys_diversity(sim, mask, 2)
    assert out.dtype == torch.float16 and torch.isfinite(out)
    out.float().backward()
    assert torch.isfinite(sim.grad).all()


def test_bad_shapes():
    with pytest.raises(ValueError, match='num_classes \\* k'):
        jeffreys_diversity(torch.zeros(1, 5, 2, 2),
                           torch.zeros(1, 2, 2, dtype=torch.long), 2)
    with pytest.raises(ValueError, match='class_mask'):
        jeffreys_diversity(torch.zeros(1, 4, 2, 2),
                           torch.zeros(1, 3, 2, dtype=torch.long), 2)
    with pytest.raises(ValueError, match='temperature'):
        jeffreys_diversity(torch.zeros(1, 4, 2, 2),
                           torch.zeros(1, 2, 2, dtype=torch.long), 2, 0)


def test_correlation_hand_values():
    mask = torch.zeros(1, 1, 3, dtype=torch.long)
    anti = torch.tensor([[1., 2., 3.], [3., 2., 1.]]).reshape(1, 2, 1, 3)
    assert correlation_diversity(anti, mask, 1, window=1).item() == \
        pytest.approx(1.0, rel=1e-5)
    # centred (-1, 0, 1) and (-1, 1, 0): correlation 1/2, squared 1/4
    half = torch.tensor([[1., 2., 3.], [1., 3., 2.]]).reshape(1, 2, 1, 3)
    assert correlation_diversity(half, mask, 1, window=1).item() == \
        pytest.approx(0.25, rel=1e-5)
    empty = torch.full((1, 1, 3), 5)
    assert correlation_diversity(half, empty, 1, window=1).item() == 0.0
    with pytest.raises(ValueError, match='odd'):
        correlation_diversity(half, mask, 1, window=2)


def test_loss_modules_build_and_weight():
    sim, mask = _two_pixel_case()
    loss = MODELS.build(dict(type='JeffreysDiversityLoss', loss_weight=0.5))
    assert loss.loss_name == 'loss_div'
    assert loss(sim, mask, 1).item() == pytest.approx(0.5 * OPPOSITE)
    corr = MODELS.build(dict(type='CorrelationDiversityLoss', window=1))
    assert corr(sim, mask, 1).item() >= 0
    with pytest.raises(TypeError, match='temprature'):
        MODELS.build(dict(type='JeffreysDiversityLoss', temprature=1.0))
    with pytest.raises(ValueError, match="start with 'loss_'"):
        MODELS.build(dict(type='JeffreysDiversityLoss', loss_name='div'))


def test_multilabel_bce_hand_value():
    logits = torch.tensor([[0., math.log(3.)]])
    labels = torch.tensor([[1., 0.]])
    # -(log 1/2 + log 1/4) / 2
    assert multilabel_bce(logits, labels).item() == pytest.approx(
        (math.log(2) + math.log(4)) / 2, rel=1e-6)
    bce = MODELS.build(dict(type='MultiLabelBCELoss', loss_weight=2.0))
    assert bce(logits, labels).item() == pytest.approx(
        math.log(2) + math.log(4), rel=1e-6)
