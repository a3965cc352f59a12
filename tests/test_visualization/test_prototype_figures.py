"""Prototype figures (lpd_mmseg.visualization.prototype_figures)."""
import numpy as np
import torch
from PIL import Image

from lpd_mmseg.evaluation.prototype_coverage import coverage_report
from lpd_mmseg.visualization.overlay import colour_lut
from lpd_mmseg.visualization.prototype_figures import (
    draw_coverage_figure,
    draw_prototype_panel,
)


def test_panel_titles_and_legend(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
    pred = rng.integers(0, 3, (16, 16))
    sim = rng.random((2 * 3, 16, 16)) * 2 - 1
    shares = np.array([[0.5, 0.25, 0.25], [np.nan] * 3])
    path = str(tmp_path / 'panel.png')
    fig = draw_prototype_panel(path, rgb, pred, sim, ['TUM', 'STR', 'BACK'],
                               [[255, 0, 0], [0, 255, 0], [255] * 3], 3,
                               shares=shares)
    titles = [ax.get_title() for ax in fig.axes]
    assert 'TUM p2\n25% of TUM' in titles and 'STR p0' in titles
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    assert [t.get_text() for t in legends[0].get_texts()] == [
        'TUM', 'STR', 'BACK']
    with Image.open(path) as img:
        assert img.size[0] > 100 and img.size[1] > 100


def test_colour_lut_uses_the_palette():
    lut = colour_lut([[255, 0, 0], [0, 255, 0], [1, 2, 3]])
    colours = lut[np.array([[0, 1], [2, 7]])]
    assert colours.tolist() == [[[255, 0, 0], [0, 255, 0]],
                                [[1, 2, 3], [0, 0, 0]]]  # 7: no colour


def test_coverage_figure_one_panel_per_class(tmp_path):
    report = coverage_report(torch.tensor([[2, 1], [0, 0]]), ['TUM', 'STR'])
    path = str(tmp_path / 'coverage.png')
    fig = draw_coverage_figure(path, report, 2, [[255, 0, 0], [0, 255, 0]])
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0].startswith('TUM: 3 px') and titles[1] == 'STR: no pixels'
    with Image.open(path) as img:
        assert img.size[0] > 100
