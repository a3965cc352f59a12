"""Tests of the permutohedral lattice (lpd_mmseg.models.crf.lattice)."""
import math

import pytest
import torch

from lpd_mmseg.models.crf.lattice import (
    PermutohedralLattice,
    elevate,
    simplex,
)
from lpd_mmseg.models.crf.torch_backend import NormalizedKernel, pixel_features


@pytest.fixture(autouse=True)
def one_cpu_thread():
    """One torch thread per test (the machine is shared), then restore."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def grid(size: int):
    """(size, size) row and column index tensors."""
    return torch.meshgrid(torch.arange(size), torch.arange(size),
                          indexing='ij')


def impulse_response(size: int, sxy: float, features=None) -> torch.Tensor:
    """(size, size) raw lattice filter of an impulse at the centre."""
    if features is None:
        features = pixel_features(size, size, sxy)
    lattice = PermutohedralLattice(features)
    impulse = torch.zeros(size * size, 1)
    impulse[(size // 2) * size + size // 2] = 1.0
    return lattice.filter(impulse).view(size, size)


def rms_radius(response: torch.Tensor) -> float:
    """Per-axis RMS distance of a centred (S, S) response from the centre."""
    size = response.shape[0]
    ys, xs = grid(size)
    r2 = ((ys - size // 2)**2 + (xs - size // 2)**2).float()
    return math.sqrt(float((response * r2).sum() / response.sum()) / 2)


# ---------------------------------------------------------------------------
# hand-computed cases
# ---------------------------------------------------------------------------
def test_one_point_keeps_five_sixths_of_its_value():
    # d = 1, one point at 0: all its weight on one vertex; the two blur
    # passes give that vertex 1 + 1/4 and the slice scales by
    # 1 / (1 + 2^-1) = 2/3, so the output is 5/6 of the input.
    lattice = PermutohedralLattice(torch.zeros(1, 1, 1))
    out = lattice.filter(torch.tensor([[3.0]]))
    torch.testing.assert_close(out, torch.tensor([[2.5]]))


def test_far_apart_points_do_not_interact():
    features = torch.tensor([[[0.0], [100.0]]])
    out = PermutohedralLattice(features).filter(torch.tensor([[1.0], [0.0]]))
    torch.testing.assert_close(out, torch.tensor([[5 / 6], [0.0]]))


def test_elevation_lies_on_the_zero_plane_and_keeps_distances():
    gen = torch.Generator().manual_seed(0)
    f = torch.randn(50, 5, generator=gen)
    e = elevate(f)
    assert e.shape == (50, 6)
    torch.testing.assert_close(e.sum(1), torch.zeros(50), atol=1e-4, rtol=0)
    # E is a scaled isometry: distances grow by sqrt(2/3) (d + 1)
    scale = math.sqrt(2 / 3) * 6
    def dist(x):
        return (x[:, None] - x[None]).norm(dim=-1)

    torch.testing.assert_close(dist(e), scale * dist(f), atol=1e-4,
                               rtol=1e-4)


def test_barycentric_weights_rebuild_the_point():
    gen = torch.Generator().manual_seed(1)
    e = elevate(torch.randn(200, 3, generator=gen) * 3)
    rem0, rank, weights = simplex(e)
    k = e.shape[1]
    assert (rem0 % k == 0).all()
    assert sorted(rank[0].tolist()) == list(range(k))
    assert (weights >= -1e-6).all()
    torch.testing.assert_close(weights.sum(1), torch.ones(200))
    # vertex r: rem0 + r where rank <= d - r, else rem0 + r - (d + 1)
    r = torch.arange(k).view(1, k, 1)
    vertices = rem0[:, None] + torch.where(rank[:, None] <= k - 1 - r, r,
                                           r - k)
    rebuilt = (weights[:, :, None] * vertices.float()).sum(1)
    torch.testing.assert_close(rebuilt, e, atol=1e-4, rtol=1e-5)


# ---------------------------------------------------------------------------
# against the exact Gaussian
# ---------------------------------------------------------------------------
def test_impulse_matches_the_gaussian_within_tolerance():
    size, sxy = 61, 5.0
    response = impulse_response(size, sxy)
    ys, xs = grid(size)
    exact = torch.exp(-((ys - 30)**2 + (xs - 30)**2) / (2 * sxy**2)).float()
    # spread: RMS radius within 3 % of sxy
    assert rms_radius(response) == pytest.approx(sxy, rel=0.03)
    # shape: normalised responses differ by < 15 % of the total mass and
    # < 20 % of the Gaussian's peak anywhere
    a, b = response / response.sum(), exact / exact.sum()
    assert float((a - b).abs().sum()) < 0.15
    assert float((a - b).abs().max()) < 0.2 * float(b.max())
    # symmetric up to float rounding
    torch.testing.assert_close(response, response.flip(0), atol=1e-6, rtol=0)


def test_constant_image_gives_a_flat_response():
    size, sxy = 61, 5.0
    lattice = PermutohedralLattice(pixel_features(size, size, sxy))
    ones = lattice.filter(torch.ones(size * size, 1)).view(size, size)
    inner = ones[15:46, 15:46]
    # flat inside to 0.5 %, at 0.88 of the Gaussian's mass 2 pi sxy^2
    assert float(inner.max() / inner.min()) < 1.005
    assert float(inner.mean()) / (2 * math.pi * sxy**2) == pytest.approx(
        0.88, abs=0.03)
    # normalised: rows sum to 1 inside (within 2 %), less in a corner
    kernel = NormalizedKernel(lattice, shared=True)
    sums = kernel(torch.ones(1, 1, size * size)).view(size, size)
    assert ((sums[15:46, 15:46] - 1).abs() < 0.02).all()
    assert float(sums[0, 0]) < 0.8


def test_bilateral_lattice_on_a_flat_colour_is_spatial():
    size, sxy = 41, 4.0
    image = torch.full((1, 3, size, size), 120.0)
    features = pixel_features(size, size, sxy, image, 20.0)
    assert rms_radius(impulse_response(size, sxy, features)) == \
        pytest.approx(sxy, rel=0.05)


def test_colour_edge_blocks_the_bilateral_filter():
    size, sxy = 41, 4.0
    image = torch.zeros(1, 3, size, size)
    image[..., size // 2 + 1:] = 255.0
    features = pixel_features(size, size, sxy, image, 20.0)
    response = impulse_response(size, sxy, features)  # impulse at col 20
    assert float(response[:, :21].sum()) > 0.5
    assert float(response[:, 21:].sum()) < 1e-6


def test_batch_is_filtered_per_image():
    gen = torch.Generator().manual_seed(2)
    images = torch.rand(3, 3, 20, 17, generator=gen) * 255
    features = pixel_features(20, 17, 3.0, images, 30.0)
    values = torch.rand(3 * 20 * 17, 4, generator=gen)
    batched = PermutohedralLattice(features).filter(values).view(3, -1, 4)
    for i in range(3):
        single = PermutohedralLattice(features[i:i + 1]).filter(
            values.view(3, -1, 4)[i])
        torch.testing.assert_close(batched[i], single, atol=1e-5, rtol=1e-5)


def test_on_vertices_sees_the_count_before_the_tables():
    seen = []
    lattice = PermutohedralLattice(pixel_features(16, 16, 2.0), seen.append)
    assert seen == [lattice.num_vertices]
    assert lattice.neighbours.shape == (3, 2 * lattice.num_vertices)


def test_features_must_be_three_dimensional():
    with pytest.raises(ValueError, match=r'\(B, N, d\)'):
        PermutohedralLattice(torch.zeros(10, 2))


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_lattice_matches_cpu():
    gen = torch.Generator().manual_seed(3)
    images = torch.rand(2, 3, 40, 30, generator=gen) * 255
    features = pixel_features(40, 30, 5.0, images, 20.0)
    values = torch.rand(2 * 40 * 30, 3, generator=gen)
    cpu = PermutohedralLattice(features).filter(values)
    gpu = PermutohedralLattice(features.cuda()).filter(values.cuda())
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=1e-4)


def test_probabilities_skip_one_channel_exactly():
    gen = torch.Generator().manual_seed(4)
    images = torch.rand(2, 3, 18, 15, generator=gen) * 255
    q = torch.softmax(torch.randn(2, 4, 18 * 15, generator=gen) * 3, 1)
    for shared, features in (
            (False, pixel_features(18, 15, 3.0, images, 20.0)),
            (True, pixel_features(18, 15, 4.0))):
        kernel = NormalizedKernel(PermutohedralLattice(features), shared)
        full = kernel(q)
        fast = kernel(q, sums_to_one=True)
        assert fast.shape == (2, 4, 18 * 15)
        torch.testing.assert_close(fast, full, atol=2e-6, rtol=0)
