"""Pure helpers of benchmarks/stage2_probe.py against hand-computed
values."""
import pytest
import torch

from benchmarks.stage2_probe import class_shares, share_gate


def test_class_shares_counts_background_in_the_total():
    # 8 pixels: 3 x TUM(0), 1 x LYM(2), 4 x background(4)
    mask = torch.tensor([[0, 0, 0, 2], [4, 4, 4, 4]])
    shares = class_shares(mask, 4)
    assert shares.tolist() == pytest.approx([3 / 8, 0, 1 / 8, 0])


def test_share_gate_threshold_and_largest_class():
    shares = torch.tensor([0.30, 0.04, 0.05, 0.0], dtype=torch.float64)
    assert share_gate(shares, 0.05).tolist() == [1, 0, 1, 0]
    # nothing reaches the share: the largest class stays on
    assert share_gate(shares, 0.5).tolist() == [1, 0, 0, 0]
