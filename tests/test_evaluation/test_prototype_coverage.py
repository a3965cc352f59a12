"""Prototype coverage arithmetic (lpd_mmseg.evaluation.prototype_coverage),
against hand-computed values."""
import json
import math

import pytest
import torch

from lpd_mmseg.evaluation.prototype_coverage import (
    coverage_entropy,
    coverage_report,
    coverage_shares,
    format_coverage,
    prototype_coverage,
)

# C = 2 classes, k = 2 prototypes, one row of 4 pixels.  Channels are
# c0p0, c0p1, c1p0, c1p1 (prototypes of class c are c*k .. c*k+k-1).
SIMILARITY = torch.tensor([
    [[0.9, 0.1, 0.5, 0.0]],   # c0 p0
    [[0.2, 0.8, 0.5, 0.3]],   # c0 p1   -> c0 winners: 0, 1, 0 (tie), 1
    [[0.0, 0.0, 0.7, 0.1]],   # c1 p0
    [[1.0, 1.0, 0.2, 0.0]],   # c1 p1   -> c1 winners: 1, 1, 0, 0
])


def test_coverage_hand_computed():
    # Pixels 0, 1 are class 0, pixel 2 class 1, pixel 3 background (2).
    counts = prototype_coverage(SIMILARITY, torch.tensor([[0, 0, 1, 2]]), 2,
                                2)
    assert counts.dtype == torch.int64
    assert counts.tolist() == [[1, 1], [1, 0]]
    # Ties go to the lowest prototype; 255 (ignore) counts for nobody.
    counts = prototype_coverage(SIMILARITY, torch.tensor([[0, 0, 0, 255]]),
                                2, 2)
    assert counts.tolist() == [[2, 1], [0, 0]]


def test_coverage_rows_sum_to_class_pixels():
    gen = torch.Generator().manual_seed(0)
    sim = torch.rand(4 * 3, 7, 5, generator=gen)
    region = torch.randint(0, 6, (7, 5), generator=gen)  # 4, 5: not tissue
    counts = prototype_coverage(sim, region, 4, 3)
    for c in range(4):
        assert counts[c].sum() == (region == c).sum()


def test_coverage_shape_errors():
    with pytest.raises(ValueError, match=r'\(C\*k, H, W\) = \(6, H, W\)'):
        prototype_coverage(SIMILARITY, torch.zeros(1, 4), 2, 3)
    with pytest.raises(ValueError, match='differ in size'):
        prototype_coverage(SIMILARITY, torch.zeros(2, 4), 2, 2)


def test_shares_and_entropy_hand_computed():
    counts = torch.tensor([[2, 1], [0, 0], [3, 3], [0, 5]])
    shares = coverage_shares(counts)
    assert shares[0].tolist() == pytest.approx([2 / 3, 1 / 3])
    assert torch.isnan(shares[1]).all()
    entropy = coverage_entropy(shares)
    expected = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3)) / \
        math.log(2)
    assert entropy[0].item() == pytest.approx(expected)   # 0.918
    assert math.isnan(entropy[1].item())                  # no pixels
    assert entropy[2].item() == pytest.approx(1.0)        # even split
    assert entropy[3].item() == pytest.approx(0.0)        # collapsed
    # One prototype per class: nothing to split.
    assert coverage_entropy(torch.tensor([[1.0]])).tolist() == [0.0]


def test_coverage_report_entries():
    report = coverage_report(torch.tensor([[2, 1], [0, 0]]), ['TUM', 'STR'])
    assert report['TUM']['pixels'] == 3
    assert report['TUM']['counts'] == [2, 1]
    assert report['TUM']['effective_prototypes'] == pytest.approx(
        2**report['TUM']['entropy'])
    assert report['STR'] == dict(pixels=0, counts=[0, 0], shares=None,
                                 entropy=None, effective_prototypes=None)
    json.dumps(report)  # no NaN: valid JSON


def test_format_coverage_lists_every_class():
    report = dict(num_prototypes=2, num_images=1, region='predicted',
                  backbone_stage=4,
                  aggregate=coverage_report(torch.tensor([[2, 1], [0, 0]]),
                                            ['TUM', 'STR']))
    lines = format_coverage(report).splitlines()
    assert lines[0].startswith('prototype coverage over 1 image(s)')
    assert lines[2].split() == ['TUM', '3', '0.92', '1.9', '0.67', '0.33']
    assert lines[3].split() == ['STR', '0', '(no', 'pixels)']
