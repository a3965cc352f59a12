"""Tests of the position-only kernel cache (lpd_mmseg.models.crf.kernels)
and of the lattice build's search and sort helpers."""
import dataclasses

import pytest
import torch

from lpd_mmseg.models.crf import (
    CRFMemoryError,
    DenseCRFParams,
    dense_crf_torch,
    dense_crf_torch_bytes,
    kernels,
)
from lpd_mmseg.models.crf.geometry import (
    elevate_cm,
    simplex_cm,
    vertex_codes_cm,
)
from lpd_mmseg.models.crf.kernels import (
    NormalizedKernel,
    clear_spatial_cache,
    pixel_features,
    spatial_cache_bytes,
    spatial_cache_key,
    spatial_kernel,
)
from lpd_mmseg.models.crf.lattice import (
    PermutohedralLattice,
    count_at_most,
    sorted_slots,
)
from lpd_mmseg.models.crf.torch_backend import default_chunk


@pytest.fixture(autouse=True)
def fresh_cache():
    """One CPU thread and an empty kernel cache per test, then restore."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    clear_spatial_cache()
    yield
    clear_spatial_cache()
    torch.set_num_threads(threads)


def batch(size_h: int, size_w: int, count: int = 2, seed: int = 0):
    """(count, 3, H, W) probabilities and 0..255 images."""
    gen = torch.Generator().manual_seed(seed)
    probs = torch.softmax(
        3 * torch.randn(count, 3, size_h, size_w, generator=gen), 1)
    images = torch.rand(count, 3, size_h, size_w, generator=gen) * 255
    return probs, images


# ---------------------------------------------------------------------------
# the cache
# ---------------------------------------------------------------------------
def test_cached_kernel_gives_the_numbers_of_a_fresh_build():
    probs, images = batch(40, 33)
    fresh = dense_crf_torch(probs, images)
    assert len(kernels._SPATIAL_CACHE) == 1
    # other sizes and other inputs in between, then the same call again
    dense_crf_torch(*batch(24, 24, seed=1))
    dense_crf_torch(*batch(40, 33, count=1, seed=2))
    again = dense_crf_torch(probs, images)
    assert torch.equal(again, fresh)
    clear_spatial_cache()
    assert torch.equal(dense_crf_torch(probs, images), fresh)


def test_threads_sharing_a_cached_kernel_get_their_own_numbers():
    from concurrent.futures import ThreadPoolExecutor
    inputs = [batch(40, 33, count=1, seed=s) for s in range(6)]
    alone = [dense_crf_torch(p, i) for p, i in inputs]
    clear_spatial_cache()
    with ThreadPoolExecutor(3) as pool:
        together = list(pool.map(lambda pi: dense_crf_torch(*pi), inputs))
    assert len(kernels._SPATIAL_CACHE) == 1
    for a, b in zip(alone, together):
        assert torch.equal(a, b)


def test_cache_is_keyed_by_size_sxy_and_device():
    a = spatial_kernel(20, 30, 5.0, 'cpu')
    assert spatial_kernel(20, 30, 5.0, torch.device('cpu')) is a
    assert spatial_kernel(30, 20, 5.0, 'cpu') is not a  # H, W swapped
    assert spatial_kernel(20, 30, 6.0, 'cpu') is not a
    assert spatial_cache_key(20, 30, 5, 'cpu') == (20, 30, 5.0, 'cpu')
    assert len(kernels._SPATIAL_CACHE) == 3


def test_cached_kernel_equals_a_new_kernel_of_its_key():
    cached = spatial_kernel(21, 17, 4.0, 'cpu')
    for key in ((21, 17, 4.0), (17, 21, 4.0), (21, 17, 3.0)):
        spatial_kernel(*key, 'cpu')  # other keys in between
    new = NormalizedKernel(
        PermutohedralLattice(pixel_features(21, 17, 4.0)), shared=True)
    q = torch.softmax(torch.randn(2, 3, 21 * 17), 1)
    assert spatial_kernel(21, 17, 4.0, 'cpu') is cached
    assert torch.equal(cached(q, sums_to_one=True), new(q, sums_to_one=True))
    assert torch.equal(cached.of_ones(), new.of_ones())


def test_mixed_sizes_in_turn_use_their_own_kernels():
    small, large = batch(16, 16, seed=3), batch(32, 24, seed=4)
    alone = [dense_crf_torch(*small), dense_crf_torch(*large)]
    clear_spatial_cache()
    for _ in range(2):  # alternating sizes reuse the right kernel
        assert torch.equal(dense_crf_torch(*large), alone[1])
        assert torch.equal(dense_crf_torch(*small), alone[0])


def test_a_kernel_refuses_a_second_normalisation():
    kernel = spatial_kernel(12, 12, 3.0, 'cpu')
    with pytest.raises(RuntimeError, match='already normalised'):
        kernel.lattice.normalise_()


def test_cache_is_bounded_by_bytes_least_recently_used_first(monkeypatch):
    first = spatial_kernel(30, 30, 3.0, 'cpu')
    size = first.nbytes()
    assert size > 0 and spatial_cache_bytes() == size
    monkeypatch.setattr(kernels, 'SPATIAL_CACHE_BYTES', int(2.5 * size))
    spatial_kernel(30, 30, 3.5, 'cpu')
    spatial_kernel(30, 30, 3.0, 'cpu')  # used again: now the newest
    spatial_kernel(30, 30, 4.0, 'cpu')  # the 3.5 one goes
    keys = [key[2] for key in kernels._SPATIAL_CACHE]
    assert keys == [3.0, 4.0]
    assert spatial_cache_bytes() <= 2.5 * size
    monkeypatch.setattr(kernels, 'SPATIAL_CACHE_BYTES', size // 2)
    spatial_kernel(30, 30, 5.0, 'cpu')  # larger than the budget: not kept
    assert len(kernels._SPATIAL_CACHE) == 0


def test_memory_guard_drops_other_cached_sizes_first():
    probs, images = batch(24, 24, count=1)
    params = DenseCRFParams()
    worst = dense_crf_torch_bytes(24, 24, 3, params)
    spatial_kernel(160, 160, 15.0, 'cpu')
    assert spatial_cache_bytes() > worst
    # fits alone, not with the other size's kernel: that one is dropped
    dense_crf_torch(probs, images, params, max_bytes=worst)
    assert list(kernels._SPATIAL_CACHE) == [
        spatial_cache_key(24, 24, 15.0, 'cpu')]
    # without a limit the cache keeps every size
    spatial_kernel(160, 160, 15.0, 'cpu')
    dense_crf_torch(probs, images, params)
    assert len(kernels._SPATIAL_CACHE) == 2
    with pytest.raises(CRFMemoryError):
        dense_crf_torch(probs, images, params, max_bytes=100)


def test_spatial_kernel_is_not_built_without_its_term():
    probs, images = batch(20, 20)
    params = dataclasses.replace(DenseCRFParams(), gaussian_compat=0.0)
    dense_crf_torch(probs, images, params)
    assert len(kernels._SPATIAL_CACHE) == 0


# ---------------------------------------------------------------------------
# search and sort helpers of the build
# ---------------------------------------------------------------------------
def test_count_at_most_matches_searchsorted_right():
    gen = torch.Generator().manual_seed(5)
    keys = torch.unique(torch.randint(0, 1000, (300,), generator=gen))
    queries = torch.stack([keys + d for d in (-7, 0, 3, 500)])
    queries[3, :5] = keys[:5]  # equal values count as <=
    expected = torch.searchsorted(keys, queries, right=True)
    assert torch.equal(count_at_most(keys, queries), expected)
    # by hand: keys 10, 20, 30
    small = torch.tensor([10, 20, 30])
    assert count_at_most(small, torch.tensor([[5, 10, 25, 30, 99]])
                         ).tolist() == [[0, 1, 2, 3, 3]]


def test_sorted_slots_packed_and_argsort_paths_agree():
    gen = torch.Generator().manual_seed(6)
    codes = torch.randint(0, 50, (3, 7), generator=gen)
    packed = sorted_slots(codes.clone(), bits=6)
    argsort = sorted_slots(codes.clone(), bits=62)  # too wide to pack
    expected = torch.sort(codes.view(-1)).values
    for values, point, slot in (packed, argsort):
        assert torch.equal(values, expected)
        assert torch.equal(codes[slot, point], values)
        assert sorted((slot * 7 + point).tolist()) == list(range(21))
    # the packed sort orders equal codes by slot, then point
    point, slot = packed[1], packed[2]
    order = packed[0] * 100 + slot * 7 + point
    assert bool((order[1:] > order[:-1]).all())


def test_vertex_codes_of_a_batch_keep_images_apart():
    gen = torch.Generator().manual_seed(7)
    features = torch.randn(2 * 50, 3, generator=gen)
    features[50:] = features[:50]  # two identical images
    rem0, rank, _ = simplex_cm(elevate_cm(features))
    codes, steps, bits = vertex_codes_cm(rem0, rank, batch=2)
    assert codes.shape == (4, 100) and steps.shape == (3,)
    assert int(codes.min()) >= 0 and int(codes.max()) < 2**bits
    first, second = set(codes[:, :50].flatten().tolist()), set(
        codes[:, 50:].flatten().tolist())
    assert not first & second
    assert len(first) == len(second)


def test_default_chunk_keeps_cpu_chunks_small():
    params = DenseCRFParams()
    assert default_chunk(224, 224, 5, params, 'cpu') == 1
    assert default_chunk(64, 64, 5, params, torch.device('cpu')) == 16
    assert default_chunk(1024, 1024, 5, params, 'cpu') == 1
    gpu = default_chunk(224, 224, 5, params, 'cuda')  # no GPU needed
    assert gpu > 16 and gpu == default_chunk(224, 224, 5, params, 'cuda:0')
