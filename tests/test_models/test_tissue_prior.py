"""Tissue prior (background on bare glass) against hand-made images."""
import pytest
import torch

from lpd_mmseg.models.tissue_prior import (
    TissuePrior,
    apply_tissue_prior,
    build_tissue_prior,
    glass_mask,
    opening,
)


def test_opening_removes_blobs_thinner_than_the_size():
    mask = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    mask[0, 0, 1, 1] = True  # a 1-pixel speck
    mask[0, 0, 4:8, 4:8] = True  # a 4x4 block touching the border
    out = opening(mask, 3)
    assert not out[0, 0, 1, 1]
    assert out[0, 0, 4:8, 4:8].all() and out.sum() == 16
    assert torch.equal(opening(mask, 1), mask)


def test_glass_mask_brightness_saturation_and_specks():
    image = torch.zeros(1, 3, 6, 6)
    image[:, :, :, :3] = 240  # white glass on the left half
    image[:, 0, :, 3:] = 200  # pink tissue on the right: saturated
    image[:, 1, :, 3:] = 120
    image[:, 2, :, 3:] = 180
    image[:, :, 2, 1] = torch.tensor([200., 120, 180])  # tissue speck
    glass = glass_mask(image, TissuePrior(min_size=2))
    assert glass[0, 0, :, :3].all()  # the speck on glass is removed
    assert not glass[0, 0, :, 3:].any()
    # grey but bright tissue is not glass when it is darker than 200
    grey = torch.full((1, 3, 4, 4), 190.0)
    assert not glass_mask(grey, TissuePrior()).any()


def test_apply_tissue_prior_background_wins_on_glass():
    scores = torch.tensor([[[[0.9, 0.9]], [[0.2, 0.2]], [[0.0, 0.0]]]])
    glass = torch.tensor([[[[True, False]]]])
    out = apply_tissue_prior(scores, glass)
    assert out[0, :, 0, 0].tolist() == [0, 0, 1]
    assert torch.allclose(out[0, :, 0, 1], scores[0, :, 0, 1])


def test_settings_are_checked():
    assert build_tissue_prior(None) is None
    assert build_tissue_prior(dict()) == TissuePrior()
    with pytest.raises(TypeError, match=r"unknown keys \['grey'\]"):
        build_tissue_prior(dict(grey=200))
    with pytest.raises(ValueError, match='brightness must be in'):
        build_tissue_prior(dict(brightness=300))
    with pytest.raises(ValueError, match='min_size must be an int'):
        build_tissue_prior(dict(min_size=0))


def test_post_processor_needs_the_image_for_the_prior():
    from lpd_mmseg.models.postprocess import LPDPostProcessor
    post = LPDPostProcessor.from_test_cfg(dict(tissue_prior=dict()), 10.0)
    assert post.needs_image
    cams = torch.rand(1, 2, 4, 4)
    probs = torch.tensor([[0.9, 0.8]])
    with pytest.raises(ValueError, match='tissue_prior needs the image'):
        post(cams, probs)
    white = torch.full((1, 3, 4, 4), 250.0)
    _, mask = post(cams, probs, images=white)
    assert (mask == 2).all()
