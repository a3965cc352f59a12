"""Tests of the dense CRF post-processing (lpd_mmseg.models.crf)."""
import dataclasses
import importlib.util
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lpd_mmseg.models.crf import (DenseCRFParams, crf_refine, dense_crf_pydensecrf,
                                  dense_crf_torch)

HAS_PYDENSECRF = importlib.util.find_spec('pydensecrf') is not None
PINK, PURPLE = (205, 90, 160), (105, 60, 175)

# Lowest argmax agreement between the two backends accepted per image by
# test_backends_agree.  Measured on these 96x96 cases with the default
# settings: 0.983 to 0.995 (see benchmarks/crf_agreement.py for more).
MIN_AGREEMENT = 0.96


# ---------------------------------------------------------------------------
# synthetic data
# ---------------------------------------------------------------------------
def two_region_image(size: int, noise: float, seed: int) -> np.ndarray:
    """(size, size, 3) uint8 image: pink left half, purple right half."""
    rng = np.random.default_rng(seed)
    img = np.empty((size, size, 3), np.float64)
    img[:, :size // 2] = PINK
    img[:, size // 2:] = PURPLE
    img += rng.normal(0.0, noise, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def two_region_truth(size: int) -> np.ndarray:
    """(size, size) labels: 0 on the left half, 1 on the right half."""
    truth = np.zeros((size, size), np.int64)
    truth[:, size // 2:] = 1
    return truth


def noisy_probs(truth: np.ndarray, num_classes: int, noise: float, seed: int) -> np.ndarray:
    """(C, H, W) float32 softmax of one-hot truth logits plus pixel noise."""
    rng = np.random.default_rng(seed)
    logits = 2.0 * np.eye(num_classes)[truth].transpose(2, 0, 1)
    logits = logits + rng.normal(0.0, noise, logits.shape)
    return torch.softmax(torch.from_numpy(logits), 0).numpy().astype(np.float32)


def smooth_field(gen: torch.Generator, channels: int, size: int, cell: int) -> torch.Tensor:
    """(channels, size, size) random field, smooth at the scale ``cell``."""
    coarse = torch.randn(1, channels, size // cell, size // cell, generator=gen)
    return F.interpolate(coarse, size=(size, size), mode='bicubic', align_corners=False)[0]


def realistic_case(num_classes: int, size: int, seed: int):
    """A smooth tissue-like label map, its noisy image and imperfect probabilities.

    Returns:
        tuple: (C, H, W) float32 probabilities, (H, W, 3) uint8 image.
    """
    gen = torch.Generator().manual_seed(seed)
    palette = torch.tensor([PINK, PURPLE, (235, 210, 225), (150, 30, 90)], dtype=torch.float32)
    field = smooth_field(gen, num_classes, size, 16)
    image = palette[field.argmax(0)] + 12.0 * torch.randn(size, size, 3, generator=gen)
    logits = 2.0 * (field + 0.8 * smooth_field(gen, num_classes, size, 8)
                    + smooth_field(gen, num_classes, size, 2))
    probs = torch.softmax(logits, 0)
    return probs.numpy().astype(np.float32), image.clamp(0, 255).to(torch.uint8).numpy()


def to_batch(probs: np.ndarray, image: np.ndarray):
    """numpy (C, H, W) + (H, W, 3) -> tensors (1, C, H, W) + (1, 3, H, W)."""
    return torch.from_numpy(probs)[None], torch.from_numpy(image).permute(2, 0, 1)[None]


@pytest.fixture(scope='module')
def noisy_batch():
    """Three 48x48 noisy two-region cases as (3, 3, 48, 48) probs + images."""
    size, truth = 48, two_region_truth(48)
    probs = np.stack([noisy_probs(truth, 3, 1.5, seed) for seed in range(3)])
    images = np.stack([two_region_image(size, 8.0, seed) for seed in range(3)])
    return torch.from_numpy(probs), torch.from_numpy(images).permute(0, 3, 1, 2)


BACKENDS = ['torch', pytest.param('pydensecrf', marks=pytest.mark.skipif(
    not HAS_PYDENSECRF, reason='pydensecrf not installed'))]


# ---------------------------------------------------------------------------
# parameters
# ---------------------------------------------------------------------------
def test_params_defaults_are_the_papers():
    p = DenseCRFParams()
    assert (p.gaussian_sxy, p.gaussian_compat) == (15, 30)
    assert (p.bilateral_sxy, p.bilateral_srgb, p.bilateral_compat) == (10, 20, 50)
    assert p.iterations == 5
    assert p.validate() is p


@pytest.mark.parametrize('field,value', [
    ('gaussian_sxy', 0), ('gaussian_sxy', -1.0), ('bilateral_sxy', float('nan')),
    ('bilateral_srgb', 0), ('gaussian_compat', -1), ('bilateral_compat', float('inf')),
    ('iterations', -1), ('iterations', 2.5), ('iterations', True), ('bilateral_srgb', '20'),
])
def test_params_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        DenseCRFParams(**{field: value})


def test_params_are_frozen_and_replaceable():
    p = DenseCRFParams()
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.iterations = 3
    assert dataclasses.replace(p, iterations=3).iterations == 3
    with pytest.raises(ValueError, match='iterations'):
        dataclasses.replace(p, iterations=-2)


# ---------------------------------------------------------------------------
# torch backend: contract
# ---------------------------------------------------------------------------
def test_torch_output_shape_dtype_and_simplex(noisy_batch):
    probs, images = noisy_batch
    out = dense_crf_torch(probs, images)
    assert out.shape == probs.shape and out.dtype == torch.float32
    assert out.min() >= 0
    torch.testing.assert_close(out.sum(1), torch.ones(3, 48, 48), atol=1e-5, rtol=0)


def test_torch_batched_equals_per_image(noisy_batch):
    probs, images = noisy_batch
    batched = dense_crf_torch(probs, images, chunk_size=2)
    for i in range(len(probs)):
        single = dense_crf_torch(probs[i:i + 1], images[i:i + 1])
        torch.testing.assert_close(batched[i:i + 1], single, atol=1e-5, rtol=1e-5)


def test_torch_zero_iterations_returns_input(noisy_batch):
    probs, images = noisy_batch
    probs = probs.clamp_min(1e-4)
    probs = probs / probs.sum(1, keepdim=True)
    out = dense_crf_torch(probs, images, DenseCRFParams(iterations=0))
    torch.testing.assert_close(out, probs, atol=1e-6, rtol=1e-5)


def test_torch_half_precision_input(noisy_batch):
    probs, images = noisy_batch
    ref = dense_crf_torch(probs, images)
    out = dense_crf_torch(probs.half(), images.half())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, atol=2e-2, rtol=0)
    assert (out.argmax(1) == ref.argmax(1)).float().mean() > 0.99


def test_torch_uint8_and_float_images_agree(noisy_batch):
    probs, images = noisy_batch
    torch.testing.assert_close(dense_crf_torch(probs, images),
                               dense_crf_torch(probs, images.float()))


def test_torch_exact_window_close_to_default(noisy_batch):
    probs, images = noisy_batch
    exact = dense_crf_torch(probs, images, downsample=1)
    default = dense_crf_torch(probs, images)
    assert (exact.argmax(1) == default.argmax(1)).float().mean() > 0.98


def test_torch_warns_on_unit_range_images(noisy_batch):
    probs, images = noisy_batch
    with pytest.warns(UserWarning, match='0..255'):
        dense_crf_torch(probs, images.float() / 255.0)


@pytest.mark.parametrize('probs_shape,images_shape,match', [
    ((3, 48, 48), (1, 3, 48, 48), r'\(B, C, H, W\)'),
    ((1, 1, 48, 48), (1, 3, 48, 48), 'at least 2 classes'),
    ((1, 3, 48, 48), (1, 4, 48, 48), r'\(B, 3, H, W\)'),
    ((1, 3, 48, 48), (2, 3, 48, 48), 'batch sizes differ'),
    ((1, 3, 48, 48), (1, 3, 48, 40), 'differs'),
])
def test_torch_shape_errors(probs_shape, images_shape, match):
    probs = torch.full(probs_shape, 1.0 / probs_shape[-3])
    images = torch.zeros(images_shape, dtype=torch.uint8)
    with pytest.raises(ValueError, match=match):
        dense_crf_torch(probs, images)


def test_torch_dtype_errors():
    images = torch.zeros(1, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(TypeError, match='floating point'):
        dense_crf_torch(torch.ones(1, 2, 8, 8, dtype=torch.int64), images)
    with pytest.raises(TypeError, match='uint8 or floating'):
        dense_crf_torch(torch.full((1, 2, 8, 8), 0.5), images.to(torch.int32))


@pytest.mark.parametrize('knob,value', [('truncate', 0.0), ('downsample', 0),
                                        ('chunk_size', 0), ('downsample', 1.5)])
def test_torch_knob_errors(knob, value):
    probs, images = torch.full((1, 2, 8, 8), 0.5), torch.zeros(1, 3, 8, 8)
    with pytest.raises(ValueError, match=knob):
        dense_crf_torch(probs, images, **{knob: value})


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_torch_cuda_matches_cpu(noisy_batch):
    probs, images = noisy_batch
    cpu = dense_crf_torch(probs, images)
    gpu = dense_crf_torch(probs.cuda(), images)
    assert gpu.device.type == 'cuda'
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------------------
# behaviour, both backends
# ---------------------------------------------------------------------------
@pytest.mark.parametrize('backend', BACKENDS)
def test_crf_cleans_noisy_two_region_map(backend):
    size, truth = 48, two_region_truth(48)
    probs = noisy_probs(truth, 2, 2.5, seed=7)
    image = two_region_image(size, 8.0, seed=7)
    before = (probs.argmax(0) == truth).mean()
    out = crf_refine(probs, image, backend=backend)
    after = (out.argmax(0).numpy() == truth).mean()
    assert before < 0.85
    assert after > 0.98 and after > before + 0.1


def edge_case(size: int = 48):
    """Confident class 0 on the left, weak class 1 (0.62) on the right."""
    truth = two_region_truth(size)
    probs = np.where(truth == 0, 0.9, 0.38).astype(np.float32)[None]
    return np.concatenate([probs, 1.0 - probs]), two_region_image(size, 4.0, seed=3), truth


@pytest.mark.parametrize('backend', BACKENDS)
def test_crf_labels_stop_at_colour_edge(backend):
    probs, image, truth = edge_case()
    out = crf_refine(probs, image, backend=backend).argmax(0).numpy()
    np.testing.assert_array_equal(out, truth)


@pytest.mark.parametrize('backend', BACKENDS)
def test_without_bilateral_term_labels_bleed(backend):
    # Control for the test above: the colour-blind Gaussian alone pulls the
    # confident left label across the edge, so that test can fail.
    probs, image, truth = edge_case()
    params = DenseCRFParams(bilateral_compat=0)
    out = crf_refine(probs, image, params, backend=backend).argmax(0).numpy()
    bled = (out[:, 24:] == 0).mean()
    assert bled > 0.05


# ---------------------------------------------------------------------------
# dispatcher and the pydensecrf wrapper's contract
# ---------------------------------------------------------------------------
def test_crf_refine_accepts_tensors_and_arrays():
    probs, image, _ = edge_case(16)
    from_arrays = crf_refine(probs, image)
    from_tensors = crf_refine(torch.from_numpy(probs), torch.from_numpy(image))
    assert from_arrays.shape == (2, 16, 16) and isinstance(from_arrays, torch.Tensor)
    assert from_arrays.dtype == torch.float32 and from_arrays.device.type == 'cpu'
    torch.testing.assert_close(from_arrays, from_tensors)


def test_crf_refine_errors():
    probs, image, _ = edge_case(16)
    with pytest.raises(ValueError, match='backend'):
        crf_refine(probs, image, backend='lattice')
    with pytest.raises(TypeError, match='uint8'):
        crf_refine(probs, image.astype(np.float32))
    with pytest.raises(ValueError, match=r'\(H, W, 3\)'):
        crf_refine(probs, image[..., :2])
    with pytest.raises(ValueError, match=r'\(C, H, W\)'):
        crf_refine(probs[None], image)


def test_pydensecrf_missing_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, 'pydensecrf', None)
    monkeypatch.setitem(sys.modules, 'pydensecrf.densecrf', None)
    probs, image, _ = edge_case(8)
    with pytest.raises(ImportError, match='make crf') as info:
        dense_crf_pydensecrf(probs, image)
    assert 'pip install --no-build-isolation pydensecrf2==1.1' in str(info.value)


@pytest.mark.parametrize('mutate,error,match', [
    (lambda p, im: (p, im.astype(np.float32)), TypeError, 'uint8'),
    (lambda p, im: (p, im[..., 0]), ValueError, r'\(H, W, 3\)'),
    (lambda p, im: (p[:, :8], im), ValueError, 'differs'),
    (lambda p, im: (p[:1], im), ValueError, 'at least 2 classes'),
    (lambda p, im: (p[0], im), ValueError, r'\(C, H, W\)'),
    (lambda p, im: (p.astype(np.int64), im), TypeError, 'floating'),
    (lambda p, im: (np.where(p > 0.5, np.nan, p), im), ValueError, 'NaN'),
])
def test_pydensecrf_input_errors(mutate, error, match):
    # Inputs are checked before pydensecrf is imported: no install needed.
    probs, image, _ = edge_case(16)
    with pytest.raises(error, match=match):
        dense_crf_pydensecrf(*mutate(probs, image))


# ---------------------------------------------------------------------------
# agreement with the reference (only where pydensecrf is installed)
# ---------------------------------------------------------------------------
def pydensecrf_impulse_response(size: int, sxy: float, y: int, x: int) -> np.ndarray:
    """Normalised Gaussian-kernel column of pydensecrf at pixel (y, x).

    With two labels, Q = 1/2 everywhere except at (y, x), one iteration and
    compat 1, the change of the logit difference is ``Kn (2 Q0 - 1)``, i.e.
    the kernel's column at (y, x) scaled by ``2 Q0(y, x) - 1``.
    """
    dcrf = pytest.importorskip('pydensecrf.densecrf')
    q0 = np.full((2, size, size), 0.5, np.float32)
    q0[0, y, x], q0[1, y, x] = 1 - 1e-4, 1e-4
    unary = -np.log(q0)
    crf = dcrf.DenseCRF2D(size, size, 2)
    crf.setUnaryEnergy(np.ascontiguousarray(unary.reshape(2, -1)))
    crf.addPairwiseGaussian(sxy=sxy, compat=1.0)
    q1 = np.array(crf.inference(1)).reshape(2, size, size)
    change = np.log(q1[0] / q1[1]) + (unary[0] - unary[1])
    return change / (q0[0, y, x] - q0[1, y, x])


def test_pydensecrf_kernel_is_symmetrically_normalised():
    pytest.importorskip('pydensecrf')
    from lpd_mmseg.models.crf import _SpatialKernel
    size, sxy = 81, 8.0
    for y, x in [(40, 40), (0, 0)]:
        ref = pydensecrf_impulse_response(size, sxy, y, x)
        impulse = torch.zeros(1, 1, size, size)
        impulse[0, 0, y, x] = 1.0
        ours = _SpatialKernel(size, size, sxy, torch.device('cpu'))(impulse)[0, 0].numpy()
        # Interior columns sum to ~1, corner columns to less: same in both.
        assert ref.sum() == pytest.approx(ours.sum(), abs=0.08)
    assert ref.sum() < 0.85
    ys, xs = np.mgrid[:size, :size]
    centre = pydensecrf_impulse_response(size, sxy, 40, 40)
    rms = np.sqrt((centre * ((ys - 40) ** 2 + (xs - 40) ** 2)).sum() / centre.sum() / 2)
    assert rms == pytest.approx(sxy, rel=0.05)


def test_backends_agree():
    pytest.importorskip('pydensecrf')
    agreements = []
    for seed, num_classes in enumerate((2, 3, 4)):
        probs, image = realistic_case(num_classes, 96, seed)
        ref = dense_crf_pydensecrf(probs, image)
        ours = dense_crf_torch(*to_batch(probs, image))[0].numpy()
        assert (ref.argmax(0) != probs.argmax(0)).mean() > 0.05  # the CRF did work
        agreements.append((ref.argmax(0) == ours.argmax(0)).mean())
        assert np.abs(ref - ours).mean() < 0.03
    assert min(agreements) > MIN_AGREEMENT, agreements
