import numpy as np

from lpd_mmseg.apis.slide.tissue import (
    SATURATION_MAX,
    SATURATION_MIN,
    box_tissue_fraction,
    otsu_threshold,
    remove_small_objects,
    tissue_mask,
)


def test_otsu_hand_values():
    # two clusters {10, 12} and {200, 202}: any t in [12, 199] separates
    # them; Otsu's argmax is the first, 12
    values = np.array([10, 12, 10, 12, 200, 202, 200, 202], np.uint8)
    assert otsu_threshold(values) == 12
    assert otsu_threshold(np.full(10, 7, np.uint8)) == 0


def test_remove_small_objects():
    mask = np.zeros((20, 20), bool)
    mask[1:3, 1:3] = True        # 4 px
    mask[10:18, 10:18] = True    # 64 px
    out = remove_small_objects(mask, 5)
    assert not out[1:3, 1:3].any() and out[10:18, 10:18].all()


def _thumb(tissue_box=None, size=(200, 300)):
    rng = np.random.default_rng(0)
    img = np.full(size + (3,), 242, np.float32)
    img += rng.normal(0, 3, img.shape)
    if tissue_box is not None:
        y0, y1, x0, x1 = tissue_box
        img[y0:y1, x0:x1] = [214, 130, 180]
        img[y0:y1, x0:x1] += rng.normal(0, 10, (y1 - y0, x1 - x0, 3))
    return img.clip(0, 255).astype(np.uint8)


def test_tissue_and_glass_are_told_apart():
    mask, threshold = tissue_mask(_thumb((50, 150, 60, 200)), mpp=4.0)
    assert SATURATION_MIN <= threshold <= SATURATION_MAX
    assert mask[60:140, 70:190].all()
    assert not mask[:40].any() and not mask[:, 210:].any()


def test_all_glass_gives_no_tissue_and_all_tissue_stays_whole():
    glass, _ = tissue_mask(_thumb(), mpp=4.0)
    assert not glass.any()
    full, _ = tissue_mask(_thumb((0, 200, 0, 300)), mpp=4.0)
    assert full.all()


def test_explicit_threshold_and_tiny_pieces():
    img = _thumb((50, 150, 60, 200))
    mask, threshold = tissue_mask(img, mpp=4.0, threshold=254)
    assert threshold == 254 and not mask.any()
    img[5:7, 5:7] = [150, 70, 160]  # 2x2 px of dust at 4 um/px = 64 um^2
    mask, _ = tissue_mask(img, mpp=4.0)
    assert not mask[:10, :10].any()


def test_box_tissue_fraction():
    mask = np.zeros((10, 10), bool)
    mask[:5] = True
    # factor 4: the target-grid box (0, 0, 40, 40) is the whole mask
    assert box_tissue_fraction(mask, 4, 0, 0, 40, 40) == 0.5
    assert box_tissue_fraction(mask, 4, 0, 20, 40, 20) == 0.0


FORK_AFTER_SLIDE_CODE = '''
import sys
from lpd_mmseg.apis.slide.reader import SlideReader
try:
    from lpd_mmseg.testing.synthetic import generate_synthetic_bcss
except ImportError:
    from lpd_mmseg.testing.synthetic import generate_synthetic_bcss
with SlideReader(sys.argv[1]) as reader:
    reader.read_downsampled(reader.resolution(2.0), 1)
# forks two workers (multiprocessing 'fork') that call OpenCV
generate_synthetic_bcss(sys.argv[2], seed=0, num_train=8, num_val=2,
                        num_test=2, size=64, progress=False, workers=2)
print('forked workers finished')
'''


def test_opencv_pool_and_fork(cmu_slide, tmp_path):
    """Reading a slide and then forking OpenCV workers (as the synthetic
    data generator does) must not hang.  The hang is a race after fork():
    it was seen once in the test suite and once in this script before slide
    code kept OpenCV single-threaded, not on every run."""
    import subprocess
    import sys
    out = subprocess.run([sys.executable, '-c', FORK_AFTER_SLIDE_CODE,
                          cmu_slide, str(tmp_path / 'synthetic')],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert 'forked workers finished' in out.stdout
