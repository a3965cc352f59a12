import numpy as np
import pytest
import torch
from mmseg.registry import TRANSFORMS

from lpd_mmseg.datasets.transforms import hed_jitter, hed_to_rgb, rgb_to_hed


def _results(size=8, with_mask=True):
    rng = np.random.default_rng(0)
    results = dict(img=rng.integers(0, 255, (size, size + 2, 3),
                                    dtype=np.uint8),
                   img_shape=(size, size + 2), seg_fields=[])
    if with_mask:
        results['gt_seg_map'] = rng.integers(0, 5, (size, size + 2),
                                             dtype=np.uint8)
        results['seg_fields'] = ['gt_seg_map']
    return results


def test_hed_round_trip_and_known_values():
    rgb = np.array([[[1.0, 1.0, 1.0], [0.5, 0.3, 0.6]]])
    back = hed_to_rgb(rgb_to_hed(rgb))
    assert np.allclose(back, rgb, atol=1e-6)
    # white carries no stain
    assert np.allclose(rgb_to_hed(np.ones((1, 1, 3))), 0)


def test_hed_jitter_identity_and_effect():
    img = _results()['img']
    same = hed_jitter(img, [1, 1, 1], [0, 0, 0])
    assert np.abs(same.astype(int) - img.astype(int)).max() <= 1
    more_h = hed_jitter(img, [1.3, 1, 1], [0, 0, 0], channel_order='rgb')
    # more haematoxylin darkens red and green most (blue-purple stain)
    assert more_h[..., 0].mean() < img[..., 0].mean()
    assert more_h.dtype == np.uint8 and more_h.shape == img.shape


def test_hed_transform_prob_and_masks_untouched():
    t = TRANSFORMS.build(dict(type='HEDJitter', sigma=0.2, bias=0.05,
                              prob=1.0))
    results = _results()
    mask = results['gt_seg_map'].copy()
    out = t(dict(results, img=results['img'].copy()))
    assert not np.array_equal(out['img'], results['img'])
    assert np.array_equal(out['gt_seg_map'], mask)
    never = TRANSFORMS.build(dict(type='HEDJitter', prob=0.0))
    assert np.array_equal(never(_results())['img'], _results()['img'])
    with pytest.raises(ValueError, match='prob'):
        TRANSFORMS.build(dict(type='HEDJitter', prob=2))


def test_rotate90_rotates_image_and_mask_together():
    np.random.seed(3)
    t = TRANSFORMS.build(dict(type='RandomRotate90', prob=1.0))
    seen = set()
    for _ in range(30):
        results = _results()
        img, mask = results['img'].copy(), results['gt_seg_map'].copy()
        out = t(results)
        k = out['rot90_k']
        seen.add(k)
        assert np.array_equal(out['img'], np.rot90(img, k))
        assert np.array_equal(out['gt_seg_map'], np.rot90(mask, k))
        assert out['img_shape'] == out['img'].shape[:2]
        assert out['img'].flags['C_CONTIGUOUS']
    assert seen == {1, 2, 3}
    none = TRANSFORMS.build(dict(type='RandomRotate90', prob=0.0))
    assert none(_results(with_mask=False))['rot90_k'] == 0


def test_fixed_brightness():
    t = TRANSFORMS.build(dict(type='FixedBrightness', factor=1.1))
    img = np.array([[[100, 240, 0]]], dtype=np.uint8)
    out = t(dict(img=img))
    assert out['img'].tolist() == [[[110, 255, 0]]]
    assert out['brightness_factor'] == 1.1
    with pytest.raises(ValueError, match='factor'):
        TRANSFORMS.build(dict(type='FixedBrightness', factor=0))


def test_pack_with_and_without_mask():
    pack = TRANSFORMS.build(dict(type='PackWeakSegInputs'))
    results = _results(with_mask=False)
    results.update(gt_image_label=np.array([0, 1, 1, 0]), img_path='x.png',
                   ori_shape=(8, 10))
    packed = pack(results)
    sample = packed['data_samples']
    assert 'gt_sem_seg' not in sample
    assert torch.equal(sample.gt_image_label, torch.tensor([0., 1., 1., 0.]))
    # a data field: moves with the sample
    assert 'gt_image_label' in sample.keys()
    with_mask = _results()
    with_mask['gt_image_label'] = np.array([1, 0, 0, 0])
    sample = pack(with_mask)['data_samples']
    assert sample.gt_sem_seg.data.shape == (1, 8, 10)
    assert sample.gt_image_label.tolist() == [1, 0, 0, 0]


def test_pack_without_any_label_for_inference():
    pack = TRANSFORMS.build(dict(type='PackWeakSegInputs'))
    sample = pack(_results(with_mask=False))['data_samples']
    assert 'gt_image_label' not in sample


def test_load_annotations_passes_through_without_mask():
    load = TRANSFORMS.build(dict(type='LoadHistoAnnotations'))
    results = _results(with_mask=False)
    assert load(dict(results)) is not None
    assert 'gt_seg_map' not in load(dict(results, seg_map_path=None))


def test_annotations_extra_values(tmp_path):
    from helpers import write_mask
    mask = np.zeros((4, 4), np.uint8)
    mask[0, 0] = 255
    write_mask(tmp_path / 'm.png', mask)
    strict = TRANSFORMS.build(dict(type='LoadHistoAnnotations'))
    results = dict(seg_map_path=str(tmp_path / 'm.png'), seg_fields=[],
                   reduce_zero_label=False)
    with pytest.raises(ValueError, match='255'):
        strict(dict(results))
    lenient = TRANSFORMS.build(dict(type='LoadHistoAnnotations',
                                    extra_values=(255, )))
    out = lenient(dict(results))
    assert out['gt_image_label'].tolist() == [1, 0, 0, 0]
