"""Class maps -> QuPath GeoJSON: one polygon (with its holes) per
connected region of each tissue class.

Regions are traced with OpenCV (8-connected outer boundaries, 4-connected
holes, through the centres of the region's boundary pixels), repaired with
shapely where a boundary touches itself, then moved by just under half a
pixel (:data:`GROW`, mitred corners; outlines out, holes in) so that they
run along pixel edges: a pixel is inside a polygon when its centre is.
Regions (and holes) below ``min_area_um2`` are dropped as specks.
Coordinates are level-0 pixels of the slide, origin top-left, as QuPath
expects.
"""
from typing import List, Sequence

import cv2
import numpy as np

from .cvthreads import single_threaded

MIN_REGION_UM2 = 400.0  # specks below 400 um^2 (a 20 um square) dropped
# Outlines through pixel centres grow by just under half a pixel: pixel
# centres inside a region stay inside, and a gap of one pixel between two
# parts of a region (an inlet, a diagonal touch) stays open.
GROW = 0.49


@single_threaded
def class_polygons(mask: np.ndarray, scale: float, min_area_px: float
                   ) -> List[object]:
    """Shapely polygons of the connected regions of a boolean mask.

    Args:
        mask (np.ndarray): ``(H, W)`` bool.
        scale (float): output units per mask pixel (pixel ``i`` spans
            ``i * scale .. (i + 1) * scale``).
        min_area_px (float): regions and holes smaller than this many mask
            pixels are dropped.

    Returns:
        list[shapely.Polygon]: valid polygons in output units.
    """
    from shapely.geometry import LineString, Point, Polygon
    from shapely.ops import unary_union
    from shapely.validation import make_valid
    contours, hierarchy = cv2.findContours(
        mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return []
    hierarchy = hierarchy[0]

    def ring(contour):
        pts = contour[:, 0, :].astype(np.float64)
        return (pts + 0.5) * scale

    def outline(points, grow):
        """Region through pixel centres (a point or a line for regions
        one pixel wide), moved by ``grow`` pixels onto pixel edges."""
        if len(points) == 1:
            geom = Point(points[0])
        elif len(points) == 2 or cv2.contourArea(
                points.astype(np.float32)) == 0:
            geom = LineString(points)
        else:
            geom = Polygon(points)
            if not geom.is_valid:
                geom = make_valid(geom)
        return geom.buffer(grow * scale, cap_style='square',
                           join_style='mitre', mitre_limit=2.0)

    polygons = []
    for i, contour in enumerate(contours):
        if hierarchy[i][3] != -1:  # a hole; handled with its parent
            continue
        region = outline(ring(contour), GROW)
        holes = []
        child = hierarchy[i][2]
        while child != -1:
            hole = contours[child]
            # the hole's ring runs through the region's pixels around it
            if len(hole) >= 3 and cv2.contourArea(hole) >= min_area_px:
                holes.append(outline(ring(hole), -GROW))
            child = hierarchy[child][0]
        if holes:
            region = region.difference(unary_union(holes))
        for part in getattr(region, 'geoms', [region]):
            if (part.geom_type == 'Polygon'
                    and part.area >= min_area_px * scale * scale):
                polygons.append(part)
    return polygons


def label_features(labels: np.ndarray, class_names: Sequence[str],
                   palette: Sequence[Sequence[int]], scale: float,
                   min_area_px: float) -> List[dict]:
    """GeoJSON features of every tissue class of a class map.

    Args:
        labels (np.ndarray): ``(H, W)`` class indices, ``C`` = background.
        class_names (list[str]): ``C + 1`` names, background last (it gets
            no features).
        palette (list): ``C + 1`` RGB triples.
        scale (float): level-0 pixels per label pixel.
        min_area_px (float): speck threshold in label pixels.

    Returns:
        list[dict]: QuPath annotation features.
    """
    from shapely.geometry import mapping
    features = []
    for c, name in enumerate(class_names[:-1]):
        mask = labels == c
        if not mask.any():
            continue
        for poly in class_polygons(mask, scale, min_area_px):
            features.append(dict(
                type='Feature',
                geometry=mapping(poly),
                properties=dict(
                    objectType='annotation',
                    classification=dict(
                        name=str(name),
                        color=[int(v) for v in palette[c]]),
                    isLocked=False)))
    return features


def feature_collection(features: List[dict]) -> dict:
    """A GeoJSON FeatureCollection; tuples become lists."""
    import json
    return json.loads(json.dumps(dict(type='FeatureCollection',
                                      features=features)))
