import numpy as np
import pytest

from lpd_mmseg.apis.slide.tiling import (
    WINDOW_FLOOR,
    BandStitcher,
    ramp,
    tile_grid,
    tile_starts,
    window,
)


def test_tile_starts_hand_values():
    assert tile_starts(10, 4, 3) == [0, 3, 6]
    assert tile_starts(10, 4, 4) == [0, 4, 6]
    assert tile_starts(4, 4, 2) == [0]
    assert tile_starts(3, 4, 2) == [0]
    with pytest.raises(ValueError, match='stride'):
        tile_starts(10, 4, 5)


def test_tile_grid_covers_every_pixel_in_row_order():
    boxes = tile_grid(300, 170, 64, 16)
    cover = np.zeros((170, 300), int)
    for x, y, w, h in boxes:
        assert (w, h) == (64, 64)
        cover[y:y + h, x:x + w] += 1
    assert cover.min() >= 1
    ys = [b[1] for b in boxes]
    assert ys == sorted(ys)
    # an image smaller than a tile is one tile of the image's size
    assert tile_grid(40, 30, 64, 16) == [(0, 0, 40, 30)]
    with pytest.raises(ValueError, match='overlap'):
        tile_grid(100, 100, 64, 64)


def test_ramp_hand_values():
    np.testing.assert_allclose(
        ramp(6, 2), [WINDOW_FLOOR, (1 + WINDOW_FLOOR) / 2, 1, 1,
                     (1 + WINDOW_FLOOR) / 2, WINDOW_FLOOR], rtol=1e-6)
    np.testing.assert_allclose(ramp(5, 0), np.ones(5))
    np.testing.assert_allclose(ramp(4, 2, start=False)[:2], [1, 1])


def test_window_is_flat_on_image_borders():
    w = window((0, 0, 8, 8), width=20, height=8, overlap=2)
    assert w.shape == (8, 8)
    np.testing.assert_allclose(w[:, 0], 1)      # left image border
    np.testing.assert_allclose(w[0, :6], 1)     # top and bottom borders
    assert w[3, -1] == pytest.approx(WINDOW_FLOOR)  # faces a neighbour


def _local_probs(image, num_channels):
    """(C+1, H, W) probabilities that depend only on each pixel."""
    logits = np.stack([np.sin(image * (c + 1) * 0.37)
                       for c in range(num_channels)]) * 4
    e = np.exp(logits - logits.max(0))
    return (e / e.sum(0)).astype(np.float32)


def _stitch(image, tile, overlap, keep=lambda box: True, channels=4):
    height, width = image.shape
    out = np.full((height, width), 255, np.uint8)
    stitcher = BandStitcher(width, height, channels, min(tile, height),
                            background=channels - 1)
    seen = []

    def take(first, labels):
        seen.append((first, len(labels)))
        out[first:first + len(labels)] = labels

    for box in tile_grid(width, height, tile, overlap):
        if not keep(box):
            continue
        x, y, w, h = box
        probs = _local_probs(image[y:y + h, x:x + w], channels)
        for first, labels in stitcher.add(x, y, probs, window(
                box, width, height, overlap)):
            take(first, labels)
    for first, labels in stitcher.finish():
        take(first, labels)
    rows = [r for f, n in seen for r in range(f, f + n)]
    assert rows == list(range(height))  # every row once, in order
    return out


def _assert_equal_up_to_ties(out, probs):
    """Equal to the argmax of ``probs`` except where the two best classes
    are within float16 accumulation error of each other."""
    whole = probs.argmax(0)
    top2 = np.sort(probs, axis=0)[-2:]
    near_tie = (top2[1] - top2[0]) < 5e-3
    assert (out == whole).mean() > 0.999
    assert ((out == whole) | near_tie).all()


def test_stitching_a_local_model_equals_the_whole_image():
    image = np.random.default_rng(0).uniform(0, 10, (150, 230))
    probs = _local_probs(image, 4)
    for tile, overlap in ((64, 16), (48, 0), (100, 40)):
        _assert_equal_up_to_ties(_stitch(image, tile, overlap), probs)


def test_tiles_not_run_are_background():
    image = np.random.default_rng(1).uniform(0, 10, (150, 230))
    out = _stitch(image, 64, 16, keep=lambda b: b[1] == 0 and b[0] < 100)
    assert (out[64:] == 3).all()           # whole tile rows skipped
    assert (out[:48, 170:] == 3).all()     # skipped tiles of a kept row
    _assert_equal_up_to_ties(out[:40, :100],
                             _local_probs(image, 4)[:, :40, :100])


def test_stitcher_rejects_out_of_order_tiles():
    stitcher = BandStitcher(32, 64, 2, 16, background=1)
    probs = np.ones((2, 16, 16), np.float32)
    list(stitcher.add(0, 16, probs, np.ones((16, 16))))
    with pytest.raises(ValueError, match='increasing y'):
        list(stitcher.add(0, 0, probs, np.ones((16, 16))))
