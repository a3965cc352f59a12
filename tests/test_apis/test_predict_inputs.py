"""predict(): input rules (defect 5) and mixed sizes (defect 4)."""
import numpy as np
import pytest
import torch
from PIL import Image

from lpd_mmseg.apis import init_segmentor, predict
from lpd_mmseg.apis.inference import MIN_IMAGE_SIDE

from conftest import TINY_CONFIG


@pytest.fixture(scope='module')
def model():
    torch.manual_seed(0)
    return init_segmentor(TINY_CONFIG)


def _rgb(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3),
                                                dtype=np.uint8)


@pytest.mark.parametrize('array, error, pattern', [
    (np.random.default_rng(0).random((64, 64, 3)), TypeError,
     r'dtype float64; expected uint8.*\(img \* 255\)'),
    (np.full((64, 64, 3), 40000, np.uint16), TypeError,
     r'dtype uint16.*img // 257'),
    (np.full((64, 64, 3), np.nan, np.float32), ValueError, 'NaN'),
    (np.zeros((64, 64, 3), bool), TypeError, 'dtype bool'),
])
def test_wrong_dtypes_and_nan_are_refused(model, array, error, pattern):
    with pytest.raises(error, match=pattern):
        predict(model, [_rgb(64, 64), array])
    with pytest.raises(error, match=r'^image 1 \(array\)'):
        predict(model, [_rgb(64, 64), array])


def test_too_small_images_are_refused_with_the_minimum(model, tmp_path):
    small = tmp_path / 'small.png'
    Image.fromarray(_rgb(20, 40)).save(small)
    with pytest.raises(ValueError, match=rf'image 0 \({small}\) is 40x20 '
                       rf'px; every side must be at least {MIN_IMAGE_SIDE}'):
        predict(model, [str(small)])
    out = predict(model, [_rgb(MIN_IMAGE_SIDE, MIN_IMAGE_SIDE)])
    assert out[0].pred_sem_seg.shape == (MIN_IMAGE_SIDE, MIN_IMAGE_SIDE)


def test_mixed_paths_arrays_and_sizes_match_one_by_one(model, tmp_path):
    """Mixed path/array lists raised KeyError; mixed sizes an assertion."""
    arrays = [_rgb(64, 64, 1), _rgb(48, 80, 2), _rgb(64, 64, 3)]
    path = tmp_path / 'patch.png'
    # files are read as BGR: write the array's channels reversed
    Image.fromarray(arrays[1][..., ::-1]).save(path)
    images = [arrays[0], str(path), arrays[2], arrays[1]]
    together = predict(model, images)
    assert [tuple(s.pred_sem_seg.shape) for s in together] == [
        (64, 64), (48, 80), (64, 64), (48, 80)]
    for image, sample in zip(images, together):
        alone = predict(model, image)[0]
        assert torch.allclose(alone.seg_logits.data, sample.seg_logits.data,
                              atol=1e-5)
    assert torch.equal(together[1].pred_sem_seg.data,
                       together[3].pred_sem_seg.data)


def test_rgb_arrays_are_reordered_and_grey_expanded(model):
    rgb = _rgb(64, 64, 4)
    as_rgb = predict(model, [rgb], channel_order='rgb')[0]
    as_bgr = predict(model, [np.ascontiguousarray(rgb[..., ::-1])])[0]
    assert torch.equal(as_rgb.seg_logits.data, as_bgr.seg_logits.data)
    grey = rgb[..., 0]
    a = predict(model, [grey])[0]
    b = predict(model, [grey[..., None]])[0]
    assert torch.equal(a.seg_logits.data, b.seg_logits.data)
    with pytest.raises(ValueError, match='channel_order'):
        predict(model, [rgb], channel_order='hsv')


def test_unreadable_path_names_the_file(model, tmp_path):
    empty = tmp_path / 'empty.png'
    empty.write_bytes(b'')
    with pytest.raises(ValueError, match=rf'image 0 \({empty}\) could not '
                       'be loaded'):
        predict(model, [str(empty)])
