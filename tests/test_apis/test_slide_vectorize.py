import cv2
import numpy as np
import pytest

from lpd_mmseg.apis.slide.cvthreads import opencv_single_threaded
from lpd_mmseg.apis.slide.vectorize import (
    class_polygons,
    feature_collection,
    label_features,
)


def _raster(polygons, shape, scale=1.0):
    """Pixels whose centre lies inside any polygon (output units)."""
    import shapely
    ys, xs = np.indices(shape)
    out = np.zeros(shape, bool)
    for poly in polygons:
        out |= shapely.contains_xy(poly, (xs + 0.5) * scale,
                                   (ys + 0.5) * scale)
    return out


def test_square_with_hole_is_one_polygon_with_one_hole():
    mask = np.zeros((60, 60), bool)
    mask[10:50, 10:50] = True
    mask[25:35, 25:35] = False
    polys = class_polygons(mask, scale=1.0, min_area_px=4)
    assert len(polys) == 1 and polys[0].is_valid
    assert len(polys[0].interiors) == 1
    # along pixel edges (less 0.01 px, vectorize.GROW): 40 x 40 minus
    # the 10 x 10 hole, whose traced corners are cut
    assert polys[0].area == pytest.approx(1600 - 100, abs=3)
    back = _raster(polys, mask.shape)
    np.testing.assert_array_equal(back, mask)


def test_regions_specks_and_scale():
    mask = np.zeros((60, 80), bool)
    mask[5:25, 5:25] = True
    mask[30:55, 40:75] = True
    mask[2:4, 70:72] = True       # a 2x2 speck
    polys = class_polygons(mask, scale=4.0, min_area_px=10)
    assert len(polys) == 2
    bounds = sorted(p.bounds for p in polys)
    # pixel edges times the scale (within vectorize.GROW's 0.01 px)
    assert bounds[0] == pytest.approx((20, 20, 100, 100), abs=0.05)
    assert bounds[1] == pytest.approx((160, 120, 300, 220), abs=0.05)


def test_round_trip_of_a_random_class_map_within_tolerance():
    rng = np.random.default_rng(0)
    with opencv_single_threaded():  # see test_opencv_pool_and_fork
        noise = cv2.GaussianBlur(rng.normal(size=(120, 160)), (0, 0), 6)
    labels = np.digitize(noise, np.quantile(noise, [0.3, 0.6])).astype(
        np.uint8)  # classes 0, 1 and background 2
    features = label_features(labels, ['A', 'B', 'BACK'],
                              [[255, 0, 0], [0, 255, 0], [0, 0, 0]],
                              scale=2.0, min_area_px=0)
    from shapely.geometry import shape
    for c, name in enumerate(['A', 'B']):
        polys = [shape(f['geometry']) for f in features
                 if f['properties']['classification']['name'] == name]
        assert polys and all(p.is_valid for p in polys)
        back = _raster(polys, labels.shape, scale=2.0)
        truth = labels == c
        iou = (back & truth).sum() / (back | truth).sum()
        assert iou > 0.99, (name, iou)


def test_features_carry_qupath_properties():
    labels = np.full((20, 20), 2, np.uint8)
    labels[2:12, 2:12] = 1
    features = label_features(labels, ['A', 'B', 'BACK'],
                              [[255, 0, 0], [0, 200, 0], [9, 9, 9]],
                              scale=1.0, min_area_px=1)
    collection = feature_collection(features)
    assert collection['type'] == 'FeatureCollection'
    (feature, ) = collection['features']
    props = feature['properties']
    assert props['objectType'] == 'annotation'
    assert props['classification'] == {'name': 'B', 'color': [0, 200, 0]}
    assert feature['geometry']['type'] == 'Polygon'
