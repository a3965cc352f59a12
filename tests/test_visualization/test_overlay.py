import numpy as np
import pytest

from lpd_mmseg.visualization.overlay import (
    blend_labels,
    colour_lut,
    draw_legend,
    overlay_figure,
)

PALETTE = [[255, 0, 0], [0, 255, 0], [255, 255, 255]]
NAMES = ['TUM', 'STR', 'BACK']


def test_blend_hand_values():
    rgb = np.full((2, 2, 3), 100, np.uint8)
    labels = np.array([[0, 1], [0, 1]])
    out = blend_labels(rgb, labels, PALETTE, alpha=0.5)
    # 0.5 * 100 + 0.5 * 255 = 177.5 -> 178; 0.5 * 100 + 0 = 50
    assert out[0, 0].tolist() == [178, 50, 50]
    assert out[0, 1].tolist() == [50, 178, 50]
    with pytest.raises(ValueError, match='alpha'):
        blend_labels(rgb, labels, PALETTE, alpha=1.5)
    with pytest.raises(ValueError, match='differ in size'):
        blend_labels(rgb, labels[:1], PALETTE)


def test_background_is_visible_not_white_on_white():
    rgb = np.full((24, 24, 3), 250, np.uint8)  # glass
    labels = np.full((24, 24), 2)
    out = blend_labels(rgb, labels, PALETTE, background_index=2)
    # dimmed towards grey (0.6 * 250 + 0.4 * 150 = 210), with hatch lines
    assert out.max() <= 210 and out.min() < 120
    plain = blend_labels(rgb, labels, PALETTE, background_index=None)
    assert plain.min() >= 250  # what the white palette entry would give


def test_colour_lut_pads_with_black():
    lut = colour_lut(PALETTE)
    assert lut.shape == (256, 3) and lut[2].tolist() == [255, 255, 255]
    assert lut[7].tolist() == [0, 0, 0]


def test_legend_outlines_every_swatch():
    legend = np.asarray(draw_legend(NAMES, PALETTE, width=300,
                                    background_index=2))
    assert legend.shape[1] == 300
    # the white class swatch has a dark outline on the white canvas
    assert (legend.sum(axis=2) < 200).any()
    narrow = draw_legend(NAMES * 4, PALETTE * 4, width=120)
    assert narrow.height > legend.shape[0]  # wraps onto more rows


def test_figure_panels_titles_and_upscaling():
    rgb = np.full((64, 32, 3), 200, np.uint8)
    gt = np.zeros((64, 32), int)
    pred = np.ones((64, 32), int)
    fig = overlay_figure(rgb, [('ground truth', gt), ('prediction', pred)],
                         NAMES, PALETTE, background_index=2,
                         title='patch.png')
    # a 32 px wide patch is enlarged 12x (>= 384 px) per panel
    assert fig.shape[1] == 2 * 32 * 12 + 8
    assert fig.shape[0] > 64 * 12
    with pytest.raises(ValueError, match='palette'):
        overlay_figure(rgb, [('x', gt)], NAMES[:2], PALETTE)
