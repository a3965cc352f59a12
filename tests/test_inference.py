import pytest
import torch
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from model_cfgs import tiny_segmentor


def _model(**test_cfg):
    torch.manual_seed(0)
    cfg = dict(mode='whole')
    cfg.update(test_cfg)
    model = MODELS.build(tiny_segmentor(test_cfg=cfg))
    return model.eval()


def _samples(n, size, mask=None, flip=False):
    out = []
    for _ in range(n):
        s = SegDataSample(metainfo=dict(
            ori_shape=(size, size), img_shape=(size, size),
            pad_shape=(size, size), padding_size=[0, 0, 0, 0], flip=flip,
            flip_direction='horizontal' if flip else None,
            img_path='patch.png'))
        if mask is not None:
            s.gt_sem_seg = PixelData(data=mask[None].clone())
        out.append(s)
    return out


@pytest.fixture
def images():
    torch.manual_seed(1)
    return torch.rand(2, 3, 64, 64) * 255


@torch.no_grad()
def test_prediction_fields_and_ranges(images):
    model = _model()
    out = model.predict(images, _samples(2, 64))
    for sample in out:
        assert sample.seg_logits.data.shape == (5, 64, 64)
        pred = sample.pred_sem_seg.data
        assert pred.shape == (1, 64, 64) and pred.min() >= 0 and pred.max() <= 4
        scores = sample.seg_logits.data
        assert scores.min() >= 0 and scores.max() <= 1 + 1e-6


@torch.no_grad()
def test_oracle_gating_uses_mask_classes(images):
    model = _model(gate='oracle')
    mask = torch.full((64, 64), 4, dtype=torch.long)
    mask[:20] = 2
    out = model.predict(images, _samples(2, 64, mask))
    for sample in out:
        assert set(sample.pred_sem_seg.data.unique().tolist()) <= {2, 4}
    with pytest.raises(ValueError, match="oracle.*patch.png.*none"):
        model.predict(images, _samples(2, 64))


@torch.no_grad()
def test_predicted_gating_and_none(images):
    model = _model(gate='predicted', gate_threshold=1.1)
    x = model.extract_feat(images)
    _, probs = model.decode_head.predict_cams(x, (64, 64))
    out = model.predict(images, _samples(2, 64))
    # threshold above 1: only the most probable class survives
    for sample, p in zip(out, probs):
        assert set(sample.pred_sem_seg.data.unique().tolist()) <= {
            int(p.argmax()), 4}
    free = _model(gate='none').predict(images, _samples(2, 64))
    assert free[0].seg_logits.data.shape == (5, 64, 64)


@torch.no_grad()
def test_labels_override_gate(images):
    model = _model()
    cams = torch.rand(4, 8, 8)
    probs = torch.full((4, 8, 8), 0.9)
    logits = model.finalize(cams, probs, labels=torch.tensor([0., 1, 0, 0]))
    assert set(logits.argmax(0).unique().tolist()) <= {1, 4}


def test_restore_geometry_undoes_padding_flip_and_resize():
    model = _model()
    maps = torch.arange(2 * 6 * 8, dtype=torch.float).reshape(1, 2, 6, 8)
    meta = dict(padding_size=[0, 2, 0, 1], flip=True,
                flip_direction='horizontal', ori_shape=(5, 6))
    out = model.restore_geometry(maps, meta, 'bilinear')
    assert torch.equal(out, maps[0, :, :5, :6].flip(2))
    meta = dict(padding_size=[0, 0, 0, 0], flip=True,
                flip_direction='vertical', ori_shape=(12, 16))
    out = model.restore_geometry(maps, meta, 'bilinear')
    assert out.shape == (2, 12, 16)
    assert out[0, -1, 0] < out[0, 0, 0]  # rows reversed before resizing


@torch.no_grad()
def test_slide_inference_on_larger_image():
    torch.manual_seed(0)
    model = _model(mode='slide', crop_size=(64, 64), stride=(48, 48))
    big = torch.rand(1, 3, 150, 170) * 255
    out = model.predict(big, _samples(1, 150))
    # ori_shape (150, 150) in the meta: output follows ori_shape
    assert out[0].pred_sem_seg.data.shape == (1, 150, 150)
    whole = _model().predict(big, None)[0]
    assert whole.pred_sem_seg.data.shape == (1, 150, 170)


def test_size_limits_are_clear():
    model = _model(max_pixels=64 * 64)
    with pytest.raises(ValueError, match="65x64 pixels.*max_pixels=4096.*"
                       "mode='slide'"):
        model.predict(torch.rand(1, 3, 64, 65), None)
    with pytest.raises(KeyError, match='crop_size'):
        _model(mode='slide')


@pytest.mark.parametrize('bad, error', [
    (dict(gate='orcale'), ValueError),
    (dict(mode='tiled'), ValueError),
    (dict(crf=dict(backend='dense')), ValueError),
    (dict(crf=dict(backend='torch', gaussian_sxyz=3)), TypeError),
    (dict(gate_treshold=0.3), TypeError),
])
def test_test_cfg_mistakes(bad, error):
    with pytest.raises(error):
        _model(**bad)


@torch.no_grad()
def test_crf_runs_on_the_image_and_changes_little(images):
    base = _model()
    crf = _model(crf=dict(backend='torch', downsample=4))
    a = base.predict(images[:1], _samples(1, 64))[0]
    b = crf.predict(images[:1], _samples(1, 64))[0]
    probs = b.seg_logits.data.exp()
    assert torch.allclose(probs.sum(0), torch.ones(64, 64), atol=1e-4)
    agree = (a.pred_sem_seg.data == b.pred_sem_seg.data).float().mean()
    assert agree > 0.5


@torch.no_grad()
def test_tta_averages_cams_before_finalizing(images):
    from lpd_mmseg.models.segmentors import LPDTTAModel
    model = _model()
    tta = LPDTTAModel(module=model)
    model.defer_finalize = True
    passes = []
    for factor, flip in ((0.9, False), (1.0, True)):
        samples = _samples(1, 64, flip=flip)
        samples[0].set_metainfo(dict(brightness_factor=factor))
        x = (images[:1] * factor).flip(3) if flip else images[:1] * factor
        passes.append(model.predict(x, samples)[0])
    model.defer_finalize = False
    merged = tta.merge_preds([passes])[0]
    cams = (passes[0].lpd_cams.data + passes[1].lpd_cams.data) / 2
    probs = (passes[0].lpd_class_probs.data +
             passes[1].lpd_class_probs.data) / 2
    expected = model.finalize(cams, probs)
    assert torch.allclose(merged.seg_logits.data, expected)
    assert torch.equal(merged.pred_sem_seg.data,
                       expected.argmax(0, keepdim=True))


def test_api_handles_grey_and_odd_sized_images(tiny_trained):
    import numpy as np

    from conftest import TINY_CONFIG
    from lpd_mmseg.apis import init_segmentor, predict
    _, checkpoint = tiny_trained
    model = init_segmentor(TINY_CONFIG, checkpoint)
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 255, (77, 100), dtype=np.uint8)
    odd = rng.integers(0, 255, (45, 131, 3), dtype=np.uint8)
    out = predict(model, [grey])[0]
    assert out.pred_sem_seg.data.shape == (1, 77, 100)
    out = predict(model, [odd])[0]
    assert out.pred_sem_seg.data.shape == (1, 45, 131)
    with pytest.raises(ValueError, match='must be \\(H, W, 3\\)'):
        predict(model, [rng.integers(0, 255, (8, 8, 4), dtype=np.uint8)])


def test_gated_out_classes_stay_out_through_the_crf():
    from lpd_mmseg.models.utils.crf_config import (allowed_channels,
                                                   crf_scores)
    torch.manual_seed(0)
    # class 1 scores 0 (gated out); a softmax alone would still give it a
    # share comparable to the others because all scores lie in [0, 1]
    scores = torch.rand(5, 32, 32) * 0.3
    scores[1] = 0.0
    image = torch.rand(3, 32, 32) * 255
    gate = torch.tensor([1., 0., 1., 1.])
    out = crf_scores(scores, image, dict(backend='torch', downsample=4),
                     gate)
    probs = out.exp()
    assert torch.allclose(probs.sum(0), torch.ones(32, 32), atol=1e-4)
    assert probs[1].max() < 1e-6
    assert 1 not in out.argmax(0).unique().tolist()
    allowed = allowed_channels(gate, scores.shape)
    assert allowed[:, 0, 0].tolist() == [1, 0, 1, 1, 1]
    # per-pixel gates (predicted gating maps) work the same way
    pixel_gate = gate[:, None, None].expand(4, 32, 32).clone()
    pixel_gate[3, :16] = 0
    out = crf_scores(scores, image, dict(backend='torch', downsample=4),
                     pixel_gate)
    assert 3 not in out[:, :16].argmax(0).unique().tolist()
