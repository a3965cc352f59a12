"""The one post-processing path (LPDPostProcessor) against hand-computed
scores."""
import pytest
import torch

from lpd_mmseg.models.crf import build_crf
from lpd_mmseg.models.postprocess import LPDPostProcessor, lpd_scores


def _maps():
    # 2 classes, 1x2 pixels
    cams = torch.tensor([[[[0.8, 0.2]], [[0.4, 0.6]]]])
    probs = torch.tensor([[0.9, 0.3]])
    return cams, probs


def test_lpd_scores_hand_computed():
    cams, _ = _maps()
    out = lpd_scores(cams, torch.tensor([[1., 0]]), alpha=2.0)
    # class 1 gated out; background (1 - max)^2 = (0.2^2, 0.8^2)
    expected = torch.tensor([[[[0.8, 0.2]], [[0., 0.]], [[0.04, 0.64]]]])
    assert torch.allclose(out, expected)
    free = lpd_scores(cams, None, alpha=1.0)
    assert torch.allclose(free[0, 2, 0], torch.tensor([0.2, 0.4]))


def test_post_processor_gate_sources():
    cams, probs = _maps()
    post = LPDPostProcessor(gate_threshold=0.5, background_alpha=2.0)
    scores, mask = post(cams, probs)
    # predicted: only class 0 (0.9 >= 0.5); pixel 1: 0.2 vs bg 0.64
    assert mask.tolist() == [[[0, 2]]]
    assert torch.allclose(scores[0, :, 0, 1], torch.tensor([0.2, 0., 0.64]))
    _, mask = post(cams, probs, 'none')
    # bg = (1 - 0.8)^2 = 0.04, (1 - 0.6)^2 = 0.16
    assert mask.tolist() == [[[0, 1]]]
    _, mask = post(cams, probs, 'oracle',
                   gt_masks=[torch.tensor([[1, 2]])])
    # class 1 only: pixel 0: 0.4 vs bg 0.36 -> 1; pixel 1: 0.6 vs 0.16
    assert mask.tolist() == [[[1, 1]]]
    _, mask = post(cams, probs, 'labels', labels=[torch.tensor([1., 1])])
    assert mask.tolist() == [[[0, 1]]]


def test_post_processor_settings_are_checked_and_copied():
    with pytest.raises(ValueError, match=r'test_cfg.gate must be one of'):
        LPDPostProcessor(gate='orcale')
    with pytest.raises(ValueError, match=r'test_cfg.gate_threshold must be'):
        LPDPostProcessor(gate_threshold=2)
    post = LPDPostProcessor.from_test_cfg(dict(gate='none'), 3.0)
    other = post.replace(gate='predicted')
    assert post.gate == 'none' and other.gate == 'predicted'
    assert other.background_alpha == 3.0 and post.crf is None
    with pytest.raises(ValueError, match=r"test_cfg.gate must be one of "
                       r"\('predicted', 'none'\)"):
        LPDPostProcessor.from_test_cfg(dict(gate='oracle'), 1.0,
                                       gate_sources=('predicted', 'none'))


def test_crf_is_called_once_per_image_with_its_gate():
    calls = []

    def fake_crf(scores, image, gate):
        calls.append((scores.shape, image.shape, gate.tolist()))
        return scores.log_softmax(0)

    cams = torch.rand(2, 2, 3, 3)
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.7]])
    post = LPDPostProcessor(crf=fake_crf)
    with pytest.raises(ValueError, match='test_cfg.crf needs the image'):
        post(cams, probs)
    scores, mask = post(cams, probs, images=torch.rand(2, 3, 3, 3) * 255)
    assert calls == [((3, 3, 3), (3, 3, 3), [1., 0.]),
                     ((3, 3, 3), (3, 3, 3), [0., 1.])]
    assert set(mask[0].unique().tolist()) <= {0, 2}
    assert set(mask[1].unique().tolist()) <= {1, 2}


def test_build_crf_parses_the_config_once():
    assert build_crf(None) is None
    assert build_crf(dict(backend=None)) is None
    with pytest.raises(ValueError):
        build_crf(dict(backend='dense'))
    crf = build_crf(dict(backend='torch'))
    scores = torch.rand(3, 8, 8)
    out = crf(scores, torch.rand(3, 8, 8) * 255, torch.tensor([1., 0]))
    assert out.shape == (3, 8, 8)
    # a gated-out class keeps (log) probability ~0
    assert out[1].exp().max() < 1e-6
