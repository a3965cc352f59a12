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


# Ruifrok & Johnston stain vectors in RGB optical density, written out here
# (not imported) so that a transposed or otherwise changed matrix in
# histology.py is caught.
HAEMATOXYLIN_OD = np.array([0.65, 0.70, 0.29])
EOSIN_OD = np.array([0.07, 0.99, 0.11])


@pytest.mark.parametrize('stain, od', [(0, HAEMATOXYLIN_OD),
                                       (1, EOSIN_OD)])
@pytest.mark.parametrize('k', [0.02, 0.1])
def test_hed_of_a_pure_stain(stain, od, k):
    # histology.py scales optical density by -log(1e-6): concentration k of
    # a stain with optical density vector od gives rgb = 1e-6 ** (k * od).
    rgb = np.exp(k * np.log(1e-6) * od)
    expected = np.zeros(3)
    expected[stain] = k
    assert np.allclose(rgb_to_hed(rgb), expected, atol=1e-9)
    assert np.allclose(hed_to_rgb(expected), rgb, atol=1e-9)
    if stain == 0:
        # haematoxylin is blue-purple: blue passes most, green least
        assert rgb[2] > rgb[0] > rgb[1]


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


def _load_mask(path, **kwargs):
    load = TRANSFORMS.build(dict(type='LoadHistoAnnotations', **kwargs))
    return load(dict(seg_map_path=str(path), seg_fields=[],
                     reduce_zero_label=False))


@pytest.mark.parametrize('backend', ['pillow', 'cv2'])
def test_16bit_mask_values_are_checked_before_the_uint8_cast(
        tmp_path, backend):
    import cv2
    from PIL import Image
    mask = np.zeros((6, 6), np.uint16)
    mask[0, 0] = 260  # would read as 4 (background) after a uint8 cast
    mask[1, 1] = 257  # would read as 1
    path = tmp_path / 'mask16.png'
    assert cv2.imwrite(str(path), mask)
    assert Image.open(path).mode == 'I;16'  # really a 16-bit PNG
    with pytest.raises(ValueError) as info:
        _load_mask(path, imdecode_backend=backend)
    message = str(info.value)
    assert message.startswith(f'{path} (decoded as uint16): ')
    assert 'values [257, 260]' in message
    assert 'expected only [0, 1, 2, 3, 4]' in message
    # extra_values cannot reach beyond uint8 either
    with pytest.raises(ValueError,
                       match=r'\[260\].*expected values in 0\.\.255'):
        TRANSFORMS.build(dict(type='LoadHistoAnnotations',
                              extra_values=(260, )))


def test_16bit_mask_with_valid_values_loads_as_uint8(tmp_path):
    import cv2
    mask = np.array([[0, 1, 2], [3, 4, 4]], np.uint16)
    path = tmp_path / 'mask16.png'
    assert cv2.imwrite(str(path), mask)
    out = _load_mask(path)
    assert out['gt_seg_map'].dtype == np.uint8
    assert out['gt_seg_map'].tolist() == mask.tolist()
    assert out['seg_fields'] == ['gt_seg_map']
    assert out['gt_image_label'].tolist() == [1, 1, 1, 1]


def test_mask_values_are_checked_before_label_map(tmp_path):
    from helpers import write_mask
    write_mask(tmp_path / 'm.png', np.array([[0, 1], [4, 3]]))
    load = TRANSFORMS.build(dict(type='LoadHistoAnnotations'))
    # as mmseg: label_map applies after loading (here 1 -> 255, ignored)
    out = load(dict(seg_map_path=str(tmp_path / 'm.png'), seg_fields=[],
                    reduce_zero_label=False, label_map={1: 255}))
    assert out['gt_seg_map'].tolist() == [[0, 255], [4, 3]]
    assert out['gt_image_label'].tolist() == [1, 0, 0, 1]


@pytest.mark.parametrize('reduce_zero_label,label_map', [
    (True, None), (False, {0: 2, 2: 0}), (True, {1: 255, 3: 0})])
def test_remapping_matches_mmseg(tmp_path, reduce_zero_label, label_map):
    """reduce_zero_label / label_map give what mmseg's loader gives."""
    from mmseg.datasets.transforms import LoadAnnotations

    from helpers import write_mask
    mask = np.array([[0, 1, 2], [3, 4, 255]], np.uint8)
    write_mask(tmp_path / 'm.png', mask)

    def run(transform):
        return transform(
            dict(seg_map_path=str(tmp_path / 'm.png'), seg_fields=[],
                 reduce_zero_label=reduce_zero_label,
                 label_map=label_map))['gt_seg_map']

    ours = run(TRANSFORMS.build(dict(type='LoadHistoAnnotations',
                                     extra_values=(255, ))))
    stock = run(LoadAnnotations(imdecode_backend='pillow'))
    assert ours.dtype == stock.dtype == np.uint8
    assert ours.tolist() == stock.tolist()
