import math

import pytest
import torch

from lpd_mmseg.models.utils import (
    add_background,
    background_score,
    cosine_similarity_maps,
    fuse_stage_cams,
    gate_cams,
    global_average_pool,
    merge_prototypes,
    normalize_cams,
    region_mask_from_cams,
)


def test_cosine_similarity_hand_values():
    feats = torch.tensor([3., 4.]).reshape(1, 2, 1, 1)
    protos = torch.tensor([[1., 0.], [0., 2.], [-3., -4.]])
    out = cosine_similarity_maps(feats, protos)
    assert out.shape == (1, 3, 1, 1)
    assert torch.allclose(out.flatten(), torch.tensor([0.6, 0.8, -1.0]))
    with pytest.raises(ValueError, match='width'):
        cosine_similarity_maps(feats, torch.zeros(2, 3))


def test_merge_layout_is_class_major():
    # C=2, k=3: channels 0..2 belong to class 0, 3..5 to class 1.
    x = torch.tensor([[1., 2., 3., 10., 20., 30.]])
    assert merge_prototypes(x, 3, 'mean').tolist() == [[2., 20.]]
    assert merge_prototypes(x, 3, 'max').tolist() == [[3., 30.]]


def test_merge_soft_maximum_hand_value():
    x = torch.tensor([[0., math.log(3.)]])
    # softmax weights 1/4, 3/4 -> 0.75 * ln 3
    out = merge_prototypes(x, 2, 'softmax')
    assert out.item() == pytest.approx(0.75 * math.log(3.), rel=1e-6)
    # maps: merged pixel by pixel
    maps = x.reshape(1, 2, 1, 1).repeat(1, 1, 2, 3)
    assert torch.allclose(merge_prototypes(maps, 2, 'softmax'),
                          torch.full((1, 1, 2, 3), 0.75 * math.log(3.)))
    with pytest.raises(ValueError, match='multiple'):
        merge_prototypes(torch.zeros(1, 5), 2)
    with pytest.raises(ValueError, match='merge mode'):
        merge_prototypes(x, 2, 'median')


def test_gap_normalize_and_fuse():
    cams = torch.tensor([-1., 0., 2., 4.]).reshape(1, 1, 2, 2)
    assert global_average_pool(cams).item() == pytest.approx(1.25)
    norm = normalize_cams(cams)
    assert torch.allclose(norm.flatten(), torch.tensor([0., 0., 0.5, 1.]),
                          atol=1e-4)
    a = torch.full((1, 1, 2, 2), 1.0)
    b = torch.full((1, 1, 4, 4), 0.5)
    fused = fuse_stage_cams([a, b], [0.4, 0.6], (8, 8))
    assert fused.shape == (1, 1, 8, 8)
    assert torch.allclose(fused, torch.full_like(fused, 0.7))
    skipped = fuse_stage_cams([a, b], [0.0, 1.0], (4, 4))
    assert torch.allclose(skipped, torch.full_like(skipped, 0.5))
    with pytest.raises(ValueError, match='fusion weights'):
        fuse_stage_cams([a], [0.5, 0.5], (2, 2))


def test_background_and_gating():
    cams = torch.tensor([0.5, 0.2]).reshape(1, 2, 1, 1)
    assert background_score(cams, 2.0).item() == pytest.approx(0.25)
    full = add_background(cams, 10.0)
    assert full.shape == (1, 3, 1, 1)
    assert full[0, 2].item() == pytest.approx(0.5**10)
    gated = gate_cams(cams, torch.tensor([[0., 1.]]))
    assert gated.flatten().tolist() == pytest.approx([0.0, 0.2])


def test_region_mask_labels_and_background():
    cams = torch.tensor([[[[0.9, 0.1]], [[0.8, 0.05]]]])  # (1, 2, 1, 2)
    # pixel 0: class 0 wins; pixel 1: background (1 - 0.1) ** 1 wins
    assert region_mask_from_cams(cams, 1.0).tolist() == [[[0, 2]]]
    # with only class 1 labelled, pixel 0 goes to class 1
    labels = torch.tensor([[0., 1.]])
    assert region_mask_from_cams(cams, 1.0, labels).tolist() == [[[1, 2]]]


def test_relative_peaks_hand_computed():
    from lpd_mmseg.models.utils.prototype_ops import relative_peaks
    maps = torch.tensor([[[[2.0, -1.0]], [[0.5, 1.0]], [[-3.0, -1.0]]]])
    assert torch.allclose(relative_peaks(maps),
                          torch.tensor([[1.0, 0.5, 0.0]]))


def test_region_rules_and_pairs_hand_computed():
    from lpd_mmseg.models.utils.prototype_ops import (
        region_cams,
        region_mask_from_cams,
        region_pairs,
    )
    # class 1 is labelled but negative everywhere
    maps = torch.tensor([[[[4.0, 2.0, 0.0]], [[-3.0, -1.0, -2.0]]]])
    labels = torch.tensor([[1., 1]])
    relu = region_mask_from_cams(region_cams(maps, 'relu'), 10.0, labels)
    # class 0 normalised (1, 0.5, 0), class 1 all 0: pixel 2 background
    assert relu.tolist() == [[[0, 0, 2]]]
    assert region_pairs(relu, labels).item() == 1
    minmax = region_mask_from_cams(region_cams(maps, 'minmax'), 10.0,
                                   labels)
    # class 1 normalised (0, 1, 0.5): it wins pixel 1 (1 > 0.5)
    assert minmax.tolist() == [[[0, 1, 1]]]
    assert region_pairs(minmax, labels).item() == 2
    assert region_pairs(minmax, torch.tensor([[1., 0]])).item() == 1
    with pytest.raises(ValueError, match='region_rule must be one of'):
        region_cams(maps, 'soft')
