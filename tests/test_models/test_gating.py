"""The gate vocabulary and its pure functions, against hand-computed
values."""
import pytest
import torch

from lpd_mmseg.models.gating import (
    GATE_SOURCES,
    allowed_mask,
    check_gate_source,
    check_threshold,
    gated_argmax,
    predicted_class_gate,
    present_classes,
    resolve_gate,
)


def test_one_vocabulary():
    assert GATE_SOURCES == ('predicted', 'oracle', 'labels', 'none')
    assert check_gate_source('test_cfg.gate', 'labels') == 'labels'
    with pytest.raises(ValueError, match=r"test_cfg.gate must be one of "
                       r"\('predicted', 'oracle', 'labels', 'none'\), got "
                       r"'orcale'"):
        check_gate_source('test_cfg.gate', 'orcale')
    with pytest.raises(ValueError, match=r"gate must be one of \('labels', "
                       r"'predicted'\), got 'oracle'"):
        check_gate_source('gate', 'oracle', ('labels', 'predicted'))


@pytest.mark.parametrize('value', [-0.1, 1.5, True, '0.5', None])
def test_threshold_must_be_a_probability(value):
    with pytest.raises(ValueError, match=r'thr must be a probability'):
        check_threshold('thr', value)
    assert check_threshold('thr', 1) == 1.0


def test_predicted_gate_hand_computed():
    probs = torch.tensor([[0.9, 0.2, 0.6, 0.1],
                          [0.3, 0.4, 0.1, 0.2]])
    # image 0: 0.9 and 0.6 reach 0.5; image 1: none does, the top (0.4)
    # is kept
    assert predicted_class_gate(probs, 0.5).tolist() == [[1, 0, 1, 0],
                                                         [0, 1, 0, 0]]
    # per pixel: (1, 2, 1, 2), pixel 0 favours class 0, pixel 1 class 1
    pixel = torch.tensor([[[[0.7, 0.1]], [[0.2, 0.3]]]])
    assert predicted_class_gate(pixel, 0.5).tolist() == [[[[1, 0]],
                                                          [[0, 1]]]]


def test_present_classes_ignores_background_and_ignore_values():
    mask = torch.tensor([[0, 4, 255], [2, 2, 4]])
    assert present_classes(mask, 4).tolist() == [1, 0, 1, 0]


def test_resolve_gate_each_source():
    probs = torch.tensor([[0.9, 0.2, 0.6, 0.1]])
    assert resolve_gate('none', probs) is None
    assert resolve_gate('predicted', probs, 0.7).tolist() == [[1, 0, 0, 0]]
    mask = torch.tensor([[1, 3], [3, 4]])
    assert resolve_gate('oracle', probs, gt_masks=[mask]).tolist() == \
        [[0, 1, 0, 1]]
    label = torch.tensor([0, 0, 1, 0])
    out = resolve_gate('labels', probs, labels=[label])
    assert out.tolist() == [[0, 0, 1, 0]] and out.dtype == probs.dtype


def test_resolve_gate_errors_name_the_sample():
    probs = torch.rand(1, 4)
    with pytest.raises(ValueError, match=r"test_cfg.gate='oracle'.*a.png "
                       r"has none"):
        resolve_gate('oracle', probs, gt_masks=[None], names=['a.png'],
                     key='test_cfg.gate')
    with pytest.raises(ValueError, match=r"gate='labels'.*gt_image_label.*"
                       r"b.png has none"):
        resolve_gate('labels', probs, names=['b.png'])
    with pytest.raises(ValueError, match='label has 3 classes, the model 4'):
        resolve_gate('labels', probs, labels=[torch.ones(3)])
    with pytest.raises(ValueError, match='2 entries for a batch of 1'):
        resolve_gate('labels', probs, labels=[torch.ones(4)] * 2)


def test_allowed_mask_keeps_background():
    gate = torch.tensor([[1., 0, 0.3]])
    allowed = allowed_mask(gate, (1, 4, 1, 2))
    assert allowed[0, :, 0, 0].tolist() == [True, False, True, True]
    assert allowed_mask(None, (1, 4, 1, 2)) is None
    with pytest.raises(ValueError, match='gate has 3 entries'):
        allowed_mask(gate, (1, 3, 1, 1))


def test_gated_argmax_hand_computed():
    # 2 classes + background, 3 pixels
    scores = torch.tensor([[[[0.9, 0.1, 0.2]],
                            [[0.5, 0.8, 0.1]],
                            [[0.0, 0.3, 0.4]]]])
    assert gated_argmax(scores, None).tolist() == [[[0, 1, 2]]]
    assert gated_argmax(scores, torch.tensor([[0., 1]])).tolist() == \
        [[[1, 1, 2]]]
    assert gated_argmax(scores, torch.tensor([[0., 0]])).tolist() == \
        [[[2, 2, 2]]]
    per_pixel = torch.tensor([[[[1., 0, 0]], [[0., 0, 1]]]])
    assert gated_argmax(scores, per_pixel).tolist() == [[[0, 2, 2]]]


def test_weigh_gate_rules_hand_computed():
    from lpd_mmseg.models.gating import weigh_gate
    probs = torch.tensor([[0.8, 0.4, 0.6]])
    peaks = torch.tensor([[1.0, 0.5, 0.25]])
    hard = torch.tensor([[1., 0, 1]])
    assert weigh_gate('hard', hard, probs).tolist() == [[1, 0, 1]]
    assert weigh_gate('hard', None, probs) is None
    assert torch.allclose(weigh_gate('prob', hard, probs),
                          torch.tensor([[1., 0, 0.75]]))
    assert torch.allclose(weigh_gate('prob', None, probs),
                          torch.tensor([[1., 0.5, 0.75]]))
    assert torch.allclose(weigh_gate('peak', hard, probs, peaks),
                          torch.tensor([[1., 0, 0.25]]))
    # per-pixel gate (1, 3, 1, 2) with (B, C) peaks
    pixel = torch.tensor([[[[1., 0]], [[1., 1]], [[0., 1]]]])
    out = weigh_gate('peak', pixel, probs, peaks)
    assert torch.allclose(out[0, :, 0], torch.tensor([[1., 0], [0.5, 0.5],
                                                      [0, 0.25]]))
    with pytest.raises(ValueError, match=r"gate_rule='peak' needs"):
        weigh_gate('peak', hard, probs)
    with pytest.raises(ValueError, match=r"test_cfg.gate_rule must be one "
                       r"of \('hard', 'prob', 'peak'\), got 'soft'"):
        weigh_gate('soft', hard, probs, key='test_cfg.gate_rule')


def test_a_weak_false_positive_no_longer_claims_pixels():
    # the cause in issue 10: class 1 passes the gate with a weak response
    # (relative peak 0.3), yet min-max makes its CAM peak at 1 on pixel 1
    from lpd_mmseg.models.postprocess import LPDPostProcessor
    cams = torch.tensor([[[[1.0, 0.7]], [[0.0, 1.0]]]])
    probs = torch.tensor([[0.9, 0.6]])
    peaks = torch.tensor([[1.0, 0.3]])
    hard = LPDPostProcessor(gate_rule='hard', background_alpha=10.0)
    assert hard(cams, probs, peaks=peaks)[1].tolist() == [[[0, 1]]]
    peak = hard.replace(gate_rule='peak')
    # pixel 1: class 0 0.7 vs class 1 1.0 * 0.3
    assert peak(cams, probs, peaks=peaks)[1].tolist() == [[[0, 0]]]
    # the oracle protocol stays 0/1, whatever the rule
    _, mask = peak(cams, probs, 'oracle', gt_masks=[torch.tensor([[0, 1]])],
                   peaks=peaks)
    assert mask.tolist() == [[[0, 1]]]
