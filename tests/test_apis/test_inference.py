import re

import pytest
import torch
import torch.nn.functional as F
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
        assert pred.shape == (1, 64, 64)
        assert pred.min() >= 0 and pred.max() <= 4
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
    model = _model(gate='predicted', gate_threshold=1.0)
    x = model.extract_feat(images)
    _, probs = model.decode_head.predict_cams(x, (64, 64))
    assert probs.max() < 1
    out = model.predict(images, _samples(2, 64))
    # no probability reaches 1: only the most probable class survives
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
    logits, mask = model.post_processor(
        cams[None], probs[None], 'labels',
        labels=[torch.tensor([0., 1, 0, 0])])
    assert set(logits[0].argmax(0).unique().tolist()) <= {1, 4}
    assert set(mask.unique().tolist()) <= {1, 4}


@torch.no_grad()
def test_encode_decode_refuses_oracle_gate(images):
    # encode_decode gets no masks: it must not return ungated scores
    model = _model(gate='oracle')
    metas = [s.metainfo for s in _samples(2, 64)]
    with pytest.raises(ValueError, match="oracle.*encode_decode.*gt_sem_seg"):
        model.encode_decode(images, metas)
    scores = _model().encode_decode(images, metas)
    assert scores.shape == (2, 5, 64, 64)


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


@pytest.mark.parametrize('rotate_first', [False, True])
@pytest.mark.parametrize('turns', [0, 1, 2, 3])
@pytest.mark.parametrize('direction', [None, 'horizontal', 'vertical'])
def test_restore_geometry_inverts_the_pipelines_flip_and_rotation(
        monkeypatch, turns, direction, rotate_first):
    import numpy as np
    from mmseg.registry import TRANSFORMS
    model = _model()
    height, width = 5, 8  # not square: odd turns swap the sides
    img = np.arange(height * width * 3, dtype=np.float32).reshape(
        height, width, 3)
    # the shipped pipelines flip, then rotate; a user's may do the reverse
    steps = [dict(type='RandomRotate90', prob=1.0),
             dict(type='PackWeakSegInputs')]
    if direction is not None:
        steps.insert(1 if rotate_first else 0,
                     dict(type='RandomFlip', prob=1.0, direction=direction))
    monkeypatch.setattr(np.random, 'randint', lambda low, high: turns)
    results = dict(img=img, ori_shape=(height, width),
                   img_shape=(height, width))
    for step in steps:
        results = TRANSFORMS.build(step)(results)
    sample = results['data_samples']
    assert sample.rot90_k == turns
    assert sample.metainfo.get('flip', False) == (direction is not None)
    assert sample.rot90_after_flip == (direction is not None
                                       and not rotate_first)
    shape = (width, height) if turns % 2 else (height, width)
    assert tuple(results['inputs'].shape[1:]) == shape
    # the data preprocessor pads right and bottom
    maps = F.pad(results['inputs'][None].float(), (0, 2, 0, 1))
    meta = dict(sample.metainfo, padding_size=[0, 2, 0, 1])
    out = model.restore_geometry(maps, meta, 'bilinear')
    assert torch.equal(out, torch.from_numpy(img).permute(2, 0, 1))
    with pytest.raises(ValueError, match="rot90_k must be an int.*'1'"):
        model.restore_geometry(maps, dict(meta, rot90_k='1'), 'bilinear')


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


@torch.no_grad()
def test_slide_settings_cover_every_pixel():
    # stride > crop_size left pixels without a tile: 0 / 0 = NaN there
    with pytest.raises(ValueError, match=r'test_cfg.stride=\(48, 80\) is '
                       r'larger than test_cfg.crop_size=\(64, 64\)'):
        _model(mode='slide', crop_size=(64, 64), stride=(48, 80))
    with pytest.raises(ValueError, match=r'stride=\(65, 65\).*'
                       r'crop_size=\(64, 64\)'):
        _model(mode='slide', crop_size=64, stride=65)
    for key, value in (('stride', 0), ('stride', (48, -1)),
                       ('crop_size', (64, )), ('crop_size', 64.0)):
        cfg = dict(mode='slide', crop_size=(64, 64), stride=(48, 48))
        cfg[key] = value
        with pytest.raises(ValueError, match=f'test_cfg.{key} must be a '
                           'positive int or an \\(h, w\\) pair.*got '
                           f'{re.escape(repr(value))}'):
            _model(**cfg)
    # an int means a square; stride == crop_size tiles without overlap
    model = _model(mode='slide', crop_size=32, stride=32)
    assert model.test_cfg.crop_size == (32, 32)
    assert model.test_cfg.stride == (32, 32)
    raw = model.inference(torch.rand(1, 3, 70, 90) * 255, None)
    # fused CAMs, class probabilities and relative peaks: 3 x 4 classes
    assert raw.shape == (1, 12, 70, 90) and torch.isfinite(raw).all()


@pytest.mark.parametrize('bad, error', [
    (dict(gate='orcale'), ValueError),
    (dict(mode='tiled'), ValueError),
    (dict(crf=dict(backend='dense')), ValueError),
    (dict(crf=dict(backend='torch', gaussian_sxyz=3)), TypeError),
    (dict(crf=dict(backend='torch', downsample=0)), ValueError),
    (dict(crf=dict(backend='torch', max_memory_gb=0)), ValueError),
    (dict(crf=dict(backend='pydensecrf', max_memory_gb=8)), ValueError),
    (dict(gate_treshold=0.3), TypeError),
])
def test_test_cfg_mistakes(bad, error):
    with pytest.raises(error):
        _model(**bad)


@pytest.mark.parametrize('threshold', [-0.1, 1.1, True, '0.5'])
def test_gate_threshold_must_be_a_probability(threshold):
    with pytest.raises(ValueError, match=r'test_cfg.gate_threshold must be a '
                       r'probability in \[0, 1\], got ' +
                       re.escape(repr(threshold))):
        _model(gate_threshold=threshold)
    assert _model(gate_threshold=0).test_cfg.gate_threshold == 0


@torch.no_grad()
def test_torch_crf_refuses_an_image_over_its_memory_limit(images):
    model = _model(crf=dict(backend='torch', max_memory_gb=0.001))
    with pytest.raises(ValueError, match=r'torch CRF on a 64x64 image needs '
                       r'about .* GiB .*max_memory_gb=0.001.*pydensecrf.*'
                       r'smaller regions.*no CRF'):
        model.predict(images[:1], _samples(1, 64))


@torch.no_grad()
def test_crf_runs_on_the_image_and_changes_little(images):
    base = _model()
    crf = _model(crf=dict(backend='torch'))
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
    passes = []
    for factor, flip in ((0.9, False), (1.0, True)):
        samples = _samples(1, 64, flip=flip)
        samples[0].set_metainfo(dict(brightness_factor=factor))
        x = (images[:1] * factor).flip(3) if flip else images[:1] * factor
        passes.append(model.predict_raw(x, samples)[0])
    merged = tta.merge_preds([passes])[0]
    cams = (passes[0].lpd_cams.data + passes[1].lpd_cams.data) / 2
    probs = (passes[0].lpd_class_probs.data +
             passes[1].lpd_class_probs.data) / 2
    expected = model.post_processor(cams[None], probs[None])[0][0]
    assert torch.allclose(merged.seg_logits.data, expected)
    assert torch.equal(merged.pred_sem_seg.data,
                       expected.argmax(0, keepdim=True))


@torch.no_grad()
def test_tta_passes_agree_after_flip_and_rotation_are_undone(monkeypatch):
    # With maps computed pixel by pixel (a 1x1 convolution), the maps of a
    # flipped or rotated view are the flipped or rotated maps: once
    # restore_geometry undoes the view, every pass must equal the plain one.
    # (The test above cannot tell: its expectation averages the same
    # per-pass maps as the merge.)
    from lpd_mmseg.models.segmentors import LPDTTAModel
    model = _model()
    num_classes = model.num_classes_tissue
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(num_classes, 3, 1, 1, generator=gen)
    probs = torch.tensor([0.9, 0.2, 0.7, 0.1])

    def pixelwise(inputs, metas):
        cams = torch.sigmoid(F.conv2d(inputs / 255 - 0.5, weight))
        return torch.cat([cams, probs.view(1, -1, 1, 1).expand_as(cams),
                          probs.view(1, -1, 1, 1).expand_as(cams)], 1)

    monkeypatch.setattr(model, 'inference', pixelwise)
    torch.manual_seed(2)
    x = torch.rand(1, 3, 48, 64) * 255  # not square
    flip_h = dict(flip=True, flip_direction='horizontal')
    flip_v = dict(flip=True, flip_direction='vertical')
    # views as the pipelines make them: flip first, then rotate
    views = [
        (x, {}),
        (x.flip(3), flip_h),
        (x.flip(2), flip_v),
        (x.rot90(1, dims=(2, 3)), dict(rot90_k=1)),
        (x.flip(3).rot90(3, dims=(2, 3)), dict(flip_h, rot90_k=3)),
        (x.flip(2).rot90(2, dims=(2, 3)), dict(flip_v, rot90_k=2)),
    ]
    passes = []
    for view, geometry in views:
        shape = tuple(view.shape[2:])
        meta = dict(ori_shape=(48, 64), img_shape=shape, pad_shape=shape,
                    padding_size=[0, 0, 0, 0], flip=False,
                    flip_direction=None, img_path='patch.png')
        meta.update(geometry)
        passes.append(model.predict_raw(view,
                                        [SegDataSample(metainfo=meta)])[0])
    plain = passes[0].lpd_cams.data
    assert plain.shape == (num_classes, 48, 64)
    for view_pass, (_, geometry) in zip(passes[1:], views[1:]):
        assert torch.allclose(view_pass.lpd_cams.data, plain, atol=1e-6), \
            geometry
    merged = LPDTTAModel(module=model).merge_preds([passes])[0]
    expected = model.post_processor(
        plain[None], passes[0].lpd_class_probs.data[None])[0][0]
    assert torch.allclose(merged.seg_logits.data, expected, atol=1e-6)


def test_api_handles_grey_and_odd_sized_images(tiny_trained):
    import numpy as np

    from lpd_mmseg.apis import init_segmentor, predict

    from conftest import TINY_CONFIG
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
    from lpd_mmseg.models.crf import allowed_channels, build_crf
    crf = build_crf(dict(backend='torch'))
    torch.manual_seed(0)
    # class 1 scores 0 (gated out); a softmax alone would still give it a
    # share comparable to the others because all scores lie in [0, 1]
    scores = torch.rand(5, 32, 32) * 0.3
    scores[1] = 0.0
    image = torch.rand(3, 32, 32) * 255
    gate = torch.tensor([1., 0., 1., 1.])
    out = crf(scores, image, gate)
    probs = out.exp()
    assert torch.allclose(probs.sum(0), torch.ones(32, 32), atol=1e-4)
    assert probs[1].max() < 1e-6
    assert 1 not in out.argmax(0).unique().tolist()
    allowed = allowed_channels(gate, scores.shape)
    assert allowed[:, 0, 0].tolist() == [1, 0, 1, 1, 1]
    # per-pixel gates (predicted gating maps) work the same way
    pixel_gate = gate[:, None, None].expand(4, 32, 32).clone()
    pixel_gate[3, :16] = 0
    out = crf(scores, image, pixel_gate)
    assert 3 not in out[:, :16].argmax(0).unique().tolist()


@torch.no_grad()
def test_tta_test_step_uses_raw_passes_and_one_post_processing(images):
    # two identical passes: the merged result must be the plain prediction
    # (test_step runs the preprocessor and the segmentor's 'raw' mode)
    from lpd_mmseg.models.segmentors import LPDTTAModel
    model = _model()
    image = images[0].round()
    data = dict(inputs=[[image], [image.clone()]],
                data_samples=[_samples(1, 64), _samples(1, 64)])
    merged = LPDTTAModel(module=model).test_step(data)
    plain = model.test_step(dict(inputs=[image],
                                 data_samples=_samples(1, 64)))
    assert len(merged) == 1
    assert torch.allclose(merged[0].seg_logits.data,
                          plain[0].seg_logits.data, atol=1e-6)
    assert torch.equal(merged[0].pred_sem_seg.data,
                       plain[0].pred_sem_seg.data)
    assert model.test_cfg.gate == 'predicted'  # nothing was changed
    with pytest.raises(TypeError, match='dict of per-pass lists'):
        LPDTTAModel(module=model).test_step([image])


@torch.no_grad()
def test_predict_gate_argument_overrides_test_cfg_for_one_call(images):
    model = _model(gate='oracle')
    out = model.predict(images, _samples(2, 64), gate='none')
    assert out[0].seg_logits.data.shape == (5, 64, 64)
    assert model.test_cfg.gate == 'oracle'
    assert model.post_processor.gate == 'oracle'
    with pytest.raises(ValueError, match="oracle.*patch.png.*none"):
        model.predict(images, _samples(2, 64))
