"""tools/segment_slide.py end to end: the real CC0 slide, generated
pyramidal TIFFs with a known tissue / glass layout, folders of patches and
every bad input of issue 11."""
import csv
import json
import os
import os.path as osp

import numpy as np
import pytest
from PIL import Image

from lpd_mmseg.apis.slide import (
    SlideError,
    SlideReader,
    SlideWarning,
    TileOptions,
    build_slide_model,
    run_grid,
    segment_folder,
    segment_slide,
)
from lpd_mmseg.apis.slide.cli import main
from lpd_mmseg.apis.slide.tiling import tile_starts
from lpd_mmseg.testing.slides import write_test_slide

from conftest import TINY_CONFIG, run_tool

pytestmark = pytest.mark.slow
SIZE = (640, 480)
BOXES = ((0.1, 0.1, 0.6, 0.7), (0.65, 0.5, 0.9, 0.9))
OPTS = TileOptions(tile=160, overlap=48, batch_size=4)


@pytest.fixture(scope='module')
def ckpt(tiny_trained):
    return tiny_trained[1]


@pytest.fixture(scope='module')
def model(ckpt):
    return build_slide_model(TINY_CONFIG, ckpt, gate='none')


@pytest.fixture(scope='module')
def layout(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('slides') / 'layout.tif')
    return write_test_slide(path, SIZE, BOXES, mpp=0.25, min_level_side=256)


def _labels(path, level=0):
    import openslide
    slide = openslide.OpenSlide(path)
    w, h = slide.level_dimensions[level]
    labels = np.asarray(slide.read_region((0, 0), level, (w, h)))[..., 0]
    return labels, slide


def _grid(model, path, opts, mpp=0.25):
    parts = []
    with SlideReader(path) as reader:
        run_grid(model, reader, reader.resolution(mpp), opts,
                 lambda first, rows: parts.append(rows))
    return np.concatenate(parts)


def _glass(width, height, margin=8):
    """True on level-0 pixels at least ``margin`` px away from tissue."""
    ys, xs = np.indices((height, width))
    near = np.zeros((height, width), bool)
    for x0, y0, x1, y1 in BOXES:
        near |= ((xs >= x0 * width - margin) & (xs < x1 * width + margin)
                 & (ys >= y0 * height - margin) & (ys < y1 * height + margin))
    return ~near


def test_real_slide_end_to_end(cmu_slide, ckpt, tmp_path):
    out = str(tmp_path / 'out')
    result = run_tool(['tools/segment_slide.py', TINY_CONFIG, ckpt,
                       cmu_slide, '--out', out, '--mpp', '2.0', '--tile',
                       '128', '--overlap', '32', '--no-progress'])
    folder = osp.join(out, 'cmu_small_region')
    names = ['labels.tif', 'overlay.png', 'cmu_small_region.geojson',
             'areas.csv', 'run.json']
    for name in names:
        assert osp.join(folder, name) in result.stdout
    assert sorted(os.listdir(folder)) == sorted(names)
    labels, slide = _labels(osp.join(folder, 'labels.tif'))
    assert float(slide.properties['openslide.mpp-x']) == pytest.approx(2.0)
    # 2220 x 2967 px at 0.499 um/px -> 554 x 740 at 2 um/px
    assert labels.shape == (740, 554)
    assert (labels[:100, :100] == 4).all()  # the glass in the top left
    assert (labels < 4).mean() > 0.2        # tissue got tissue classes
    collection = json.load(open(osp.join(folder,
                                         'cmu_small_region.geojson')))
    assert collection['type'] == 'FeatureCollection'
    assert collection['features']
    classes = {f['properties']['classification']['name']
               for f in collection['features']}
    assert classes <= {'TUM', 'STR', 'LYM', 'NEC'}
    from shapely.geometry import shape
    for feature in collection['features']:
        poly = shape(feature['geometry'])
        assert poly.is_valid
        # level-0 coordinates of a 2220 x 2967 slide
        assert poly.bounds[2] <= 2221 and poly.bounds[3] <= 2968
    run = json.load(open(osp.join(folder, 'run.json')))
    from lpd_mmseg.apis.checkpoint import sha256_of
    assert run['checkpoint_sha256'] == sha256_of(ckpt)
    assert run['slide']['mpp'] == pytest.approx(0.499)
    tiles = run['tiles']
    assert tiles['run'] + tiles['skipped'] == tiles['total']
    assert tiles['skipped'] > 0
    rows = list(csv.DictReader(open(osp.join(folder, 'areas.csv'))))
    assert sum(int(r['pixels']) for r in rows) == labels.size
    assert sum(float(r['share_of_tissue']) for r in rows[:-1]) == \
        pytest.approx(1.0, abs=1e-4)


def test_layout_slide_glass_areas_and_polygons(model, layout, tmp_path):
    outputs = segment_slide(model, layout, str(tmp_path), OPTS,
                            min_region_um2=0.0)
    labels, _ = _labels(outputs['labels.tif'])
    assert labels.shape == (SIZE[1], SIZE[0])
    assert (labels[_glass(*SIZE)] == 4).all()
    counts = np.bincount(labels.ravel(), minlength=5)
    rows = list(csv.DictReader(open(outputs['areas.csv'])))
    assert [int(r['pixels']) for r in rows] == counts.tolist()
    for row in rows:  # 0.25 um/px: 16e6 pixels per mm^2
        assert float(row['area_mm2']) == pytest.approx(
            int(row['pixels']) / 16e6, abs=1e-6)
    # polygons round-trip onto the label grid
    import shapely
    from shapely.geometry import shape
    features = json.load(open(outputs['layout.geojson']))['features']
    ys, xs = np.indices(labels.shape)
    for c, name in enumerate(model.class_names[:-1]):
        truth = labels == c
        polys = [shape(f['geometry']) for f in features
                 if f['properties']['classification']['name'] == name]
        assert all(p.is_valid for p in polys)
        back = np.zeros_like(truth)
        for p in polys:
            back |= shapely.contains_xy(p, xs + 0.5, ys + 0.5)
        if truth.any():
            assert (back & truth).sum() / (back | truth).sum() > 0.98
        else:
            assert not back.any()


def test_specks_below_the_area_threshold_are_dropped(model, layout,
                                                     tmp_path):
    bars = []

    class Bar:
        def __init__(self, total):
            self.total, self.done = total, 0
            bars.append(self)

        def update(self, n):
            self.done += n

        def close(self):
            pass

    outputs = segment_slide(model, layout, str(tmp_path), OPTS,
                            min_region_um2=50.0, progress=Bar)
    run = json.load(open(outputs['run.json']))
    assert [(b.total, b.done) for b in bars] == [(run['tiles']['run'], ) * 2]
    from shapely.geometry import shape
    features = json.load(open(outputs['layout.geojson']))['features']
    # level-0 px at 0.25 um/px: 50 um^2 = 800 px
    assert all(shape(f['geometry']).area >= 800 for f in features)


def _edge_change(labels, tile, overlap, box_edges):
    """Share of label changes across tile borders (away from tissue
    edges) and over all columns."""
    change = (labels[:, 1:] != labels[:, :-1]).mean(axis=0)
    starts = tile_starts(labels.shape[1], tile, tile - overlap)
    edges = [s - 1 for s in starts[1:]] + [s + tile - 1
                                           for s in starts[:-1]]
    edges = [e for e in edges
             if min(abs(e + 1 - b) for b in box_edges) > 3]
    return change[edges].mean(), change.mean()


def test_stitched_map_has_no_seams_and_matches_a_whole_run(model, layout):
    whole = _grid(model, layout, TileOptions(tile=1024, overlap=0))
    blended = _grid(model, layout, OPTS)
    hard = _grid(model, layout, TileOptions(tile=160, overlap=0))
    tissue = whole < 4
    assert (blended == whole)[tissue].mean() > 0.65
    assert (blended == whole)[tissue].mean() > \
        (hard == whole)[tissue].mean()
    box_x = [b * SIZE[0] for box in BOXES for b in (box[0], box[2])]
    at_edges, overall = _edge_change(blended, 160, 48, box_x)
    assert at_edges < 2.5 * overall
    hard_edges, hard_overall = _edge_change(hard, 160, 0, box_x)
    assert hard_edges > 5 * hard_overall  # the check does see seams


def test_folder_of_patches_skips_other_files(model, tmp_path):
    folder = tmp_path / 'patches'
    folder.mkdir()
    rng = np.random.default_rng(0)
    names = ['TCGA-A1_xmin1_ymin2_MPP-0.2500+0[1100].png', 'b.jpg']
    for name in names:
        img = np.full((96, 128, 3), 240, np.uint8)
        img[20:80, 10:100] = [200, 110, 170]
        img[20:80, 10:100] += rng.integers(0, 20, (60, 90, 3),
                                           dtype=np.uint8)
        Image.fromarray(img).save(folder / name)
    (folder / 'notes.txt').write_text('not an image')
    with pytest.warns(SlideWarning, match='skipping 1 entries.*notes.txt'):
        outputs = segment_folder(model, str(folder), str(tmp_path / 'out'),
                                 OPTS)
    masks = sorted(os.listdir(outputs['masks']))
    assert masks == sorted(osp.splitext(n)[0] + '.png' for n in names)
    mask = np.asarray(Image.open(osp.join(outputs['masks'], masks[0])))
    assert mask.shape == (96, 128) and (mask[:10] == 4).all()
    assert len(os.listdir(outputs['overlays'])) == 2
    run = json.load(open(outputs['run.json']))
    assert [i['tiles_run'] for i in run['images']] == [1, 1]  # tissue
    rows = list(csv.DictReader(open(outputs['areas.csv'])))
    assert sorted(r['image'] for r in rows) == sorted(names)
    for row in rows:
        total = sum(int(row[f'{c}_pixels']) for c in model.class_names)
        assert total == 96 * 128


def test_tta_and_crf_options_are_built_in(ckpt):
    from lpd_mmseg.apis.slide import predict_tiles
    tta = build_slide_model(TINY_CONFIG, ckpt, gate='none', tta=True)
    assert tta.model.test_cfg.gate == 'none'
    assert tta.options == dict(gate='none', crf=None, tta=True)
    tiles = [np.full((64, 64, 3), 200, np.uint8)] * 2
    probs = predict_tiles(tta, tiles)
    assert probs.shape == (2, 5, 64, 64)
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-4)
    crf = build_slide_model(TINY_CONFIG, ckpt, crf='torch')
    assert crf.model.test_cfg.crf['backend'] == 'torch'
    assert predict_tiles(crf, tiles[:1]).shape == (1, 5, 64, 64)
    with pytest.raises(ValueError, match='oracle'):
        build_slide_model(TINY_CONFIG, ckpt, gate='oracle')


# ------------------------------------------------------------ bad input
def _cli(ckpt, inputs, out, *extra):
    return main([TINY_CONFIG, ckpt, *inputs, '--out', str(out), '--tile',
                 '160', '--no-progress', '--workers', '0', *extra])


def test_unreadable_slide_is_named(ckpt, tmp_path, capsys):
    bad = tmp_path / 'broken.svs'
    bad.write_bytes(b'this is not a slide')
    assert _cli(ckpt, [str(bad)], tmp_path / 'out') == 1
    err = capsys.readouterr().err
    assert 'broken.svs' in err and 'neither OpenSlide nor Pillow' in err
    assert not osp.exists(tmp_path / 'out' / 'broken')
    assert os.listdir(tmp_path / 'out') == []


def test_missing_mpp_needs_mpp_slide(ckpt, tmp_path, capsys):
    path = write_test_slide(str(tmp_path / 'nompp.tif'), (320, 240), BOXES,
                            mpp=None)
    assert _cli(ckpt, [path], tmp_path / 'out') == 1
    err = capsys.readouterr().err
    assert 'nompp.tif' in err and '--mpp-slide' in err
    assert _cli(ckpt, [path], tmp_path / 'out', '--mpp-slide', '0.25') == 0
    run = json.load(open(tmp_path / 'out' / 'nompp' / 'run.json'))
    assert run['slide']['mpp_source'] == '--mpp-slide'


def test_target_much_finer_than_the_slide(model, tmp_path):
    path = write_test_slide(str(tmp_path / 'coarse.tif'), (160, 120),
                            BOXES, mpp=1.0)
    with pytest.raises(SlideError, match=r'coarse.tif.*4\.0x finer'):
        segment_slide(model, path, str(tmp_path / 'out'), OPTS, mpp=0.25)
    assert os.listdir(tmp_path / 'out') == []
    # a 1.6x finer target runs, upsampled, with a warning
    mild = write_test_slide(str(tmp_path / 'mild.tif'), (160, 120), BOXES,
                            mpp=0.4)
    with pytest.warns(SlideWarning, match='upsampled 1.60x'):
        outputs = segment_slide(model, mild, str(tmp_path / 'out'), OPTS)
    labels, _ = _labels(outputs['labels.tif'])
    assert labels.shape == (192, 256)
    assert json.load(open(outputs['run.json']))['tiles']['run'] > 0


def test_all_glass_slide_is_all_background(model, tmp_path):
    path = write_test_slide(str(tmp_path / 'glass.tif'), (320, 240), (),
                            mpp=0.25)
    with pytest.warns(SlideWarning, match='glass.tif: no tissue found'):
        outputs = segment_slide(model, path, str(tmp_path), OPTS)
    labels, _ = _labels(outputs['labels.tif'])
    assert (labels == 4).all()
    assert json.load(open(outputs['glass.geojson']))['features'] == []
    run = json.load(open(outputs['run.json']))
    assert run['tiles']['run'] == 0 and run['warnings']


def test_existing_output_needs_overwrite(ckpt, tmp_path, capsys):
    small = write_test_slide(str(tmp_path / 'small.tif'), (200, 150), BOXES)
    out = tmp_path / 'out'
    assert _cli(ckpt, [small], out) == 0
    marker = out / 'small' / 'run.json'
    before = marker.read_text()
    assert _cli(ckpt, [small], out) == 1
    assert 'already exists; pass --overwrite' in capsys.readouterr().err
    assert marker.read_text() == before
    assert _cli(ckpt, [small], out, '--overwrite', '--min-region',
                '12.5') == 0
    assert sorted(os.listdir(out)) == ['small']
    run = json.load(open(marker))
    assert run['geojson']['min_region_um2'] == 12.5
    assert _cli(ckpt, [small], out, '--min-tissue', '1.5') == 1
    assert '--min-tissue must be in [0, 1)' in capsys.readouterr().err


def test_interrupted_run_leaves_nothing(model, layout, tmp_path,
                                        monkeypatch):
    from lpd_mmseg.apis.slide import engine
    calls = []

    def interrupted(*args):
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return real(*args)

    real = engine.predict_tiles
    monkeypatch.setattr(engine, 'predict_tiles', interrupted)
    with pytest.raises(KeyboardInterrupt):
        segment_slide(model, layout, str(tmp_path), OPTS)
    assert os.listdir(tmp_path) == []


def test_plain_png_region_with_mpp_slide(model, tmp_path):
    img = np.full((200, 300, 3), 240, np.uint8)
    img[40:160, 50:250] = [190, 100, 170]
    path = str(tmp_path / 'region.png')
    Image.fromarray(img).save(path)
    with pytest.raises(SlideError, match='region.png.*--mpp-slide'):
        segment_slide(model, path, str(tmp_path / 'a'), OPTS)
    outputs = segment_slide(model, path, str(tmp_path / 'b'), OPTS,
                            mpp_slide=0.25)
    labels, _ = _labels(outputs['labels.tif'])
    assert labels.shape == (200, 300) and (labels[:30] == 4).all()
    assert json.load(open(outputs['run.json']))['tiles']['run'] == 6
