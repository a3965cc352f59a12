"""Prototype panels and coverage (lpd_mmseg.apis.visualization,
tools/visualize_prototypes.py)."""
import contextlib
import io
import json
import math
import os
import os.path as osp

import numpy as np
import pytest
import torch
from PIL import Image

from lpd_mmseg.apis.visualization import (
    COVERAGE_FIGURE,
    COVERAGE_JSON,
    coverage_entropy,
    coverage_report,
    coverage_shares,
    draw_prototype_panel,
    image_prototype_maps,
    prototype_coverage,
    visualize_prototypes,
)

from tool_fixtures import (
    STEM,
    load_tool,
    tiny_lpd,  # noqa: F401 (fixture)
)


def run_tool(argv):
    """``tools/visualize_prototypes.py`` in-process: (exit code, stdout,
    stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = load_tool('visualize_prototypes').main(argv)
    return code, out.getvalue(), err.getvalue()


def val_images(env):
    return [osp.join(env.val_img_dir, n)
            for n in sorted(os.listdir(env.val_img_dir))]


@pytest.fixture(scope='module')
def vis_run(tiny_lpd, tmp_path_factory):  # noqa: F811
    """The tool on the two val images, regions from the prediction."""
    out = str(tmp_path_factory.mktemp('vis') / 'out')
    code, stdout, stderr = run_tool([tiny_lpd.config, tiny_lpd.checkpoint,
                                     *val_images(tiny_lpd), '--out', out,
                                     '--no-progress'])
    assert code == 0, stderr
    with open(osp.join(out, COVERAGE_JSON)) as f:
        report = json.load(f)
    return out, stdout, report


# --------------------------------------------------------------------- math
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


# --------------------------------------------------------------- the model
def test_prototype_maps_match_the_image(tiny_lpd):  # noqa: F811
    from lpd_mmseg.apis import init_segmentor
    model = init_segmentor(tiny_lpd.config, tiny_lpd.checkpoint)
    bgr = np.random.default_rng(1).integers(0, 255, (48, 40, 3), np.uint8)
    maps = image_prototype_maps(model, bgr, stage=0)
    assert tuple(maps['similarity'].shape) == (4 * 3, 48, 40)
    assert maps['similarity'].abs().max() <= 1 + 1e-5  # cosine
    assert tuple(maps['pred'].shape) == (48, 40)
    assert int(maps['pred'].max()) <= 4
    np.testing.assert_array_equal(maps['rgb'], bgr[..., ::-1])
    with pytest.raises(ValueError, match='several images share'):
        visualize_prototypes(
            model, [val_images(tiny_lpd)[0],
                    val_images(tiny_lpd)[0].replace('/val/', '/test/')],
            str(tiny_lpd.root), progress=False)


# -------------------------------------------------------------- end to end
def test_tool_writes_panels_and_coverage(vis_run, tiny_lpd):  # noqa: F811
    out, stdout, report = vis_run
    assert sorted(os.listdir(out)) == sorted([
        f'{STEM}+0_prototypes.png', f'{STEM}+1_prototypes.png',
        COVERAGE_FIGURE, COVERAGE_JSON])
    for name in os.listdir(out):
        if name.endswith('.png'):
            with Image.open(osp.join(out, name)) as img:
                img.verify()
    assert report['region'] == 'predicted'
    assert report['backbone_stage'] == 4 and report['stage'] == 2
    assert report['classes'] == ['TUM', 'STR', 'LYM', 'NEC']
    assert report['num_prototypes'] == 3 and report['num_images'] == 2
    assert report['checkpoint'] == osp.abspath(tiny_lpd.checkpoint)
    # The aggregate is the sum of the per-image counts.
    for name, entry in report['aggregate'].items():
        per_image = np.sum([img['classes'][name]['counts']
                            for img in report['images']], axis=0)
        assert entry['counts'] == per_image.tolist()
        if entry['shares'] is not None:
            assert sum(entry['shares']) == pytest.approx(1.0)
    assert [img['panel'] for img in report['images']] == [
        f'{STEM}+0_prototypes.png', f'{STEM}+1_prototypes.png']
    assert 'prototype coverage over 2 image(s)' in stdout


def test_coverage_on_ground_truth_masks(tiny_lpd, tmp_path):  # noqa: F811
    out = str(tmp_path / 'gt')
    image = val_images(tiny_lpd)[0]
    code, _, err = run_tool([tiny_lpd.config, tiny_lpd.checkpoint, image,
                             '--out', out, '--masks', tiny_lpd.val_mask_dir,
                             '--stage', '0', '--no-progress'])
    assert code == 0, err
    with open(osp.join(out, COVERAGE_JSON)) as f:
        report = json.load(f)
    assert report['region'] == 'masks' and report['backbone_stage'] == 2
    # The val mask (tool_fixtures.val_masks): left half TUM, right half
    # background, a 16x16 STR square across the middle.
    agg = report['aggregate']
    assert agg['TUM']['pixels'] == 64 * 32 - 16 * 8
    assert agg['STR']['pixels'] == 16 * 16
    assert agg['LYM']['shares'] is None and agg['NEC']['pixels'] == 0


def test_clear_errors(tiny_lpd, tmp_path):  # noqa: F811
    out = str(tmp_path / 'o')
    image = val_images(tiny_lpd)[0]
    code, _, err = run_tool([tiny_lpd.config, tiny_lpd.checkpoint,
                             str(tmp_path / 'missing.png'), '--out', out])
    assert code == 1 and "missing.png': no such file" in err
    code, _, err = run_tool([tiny_lpd.config, tiny_lpd.checkpoint, image,
                             '--out', out, '--masks', str(tmp_path)])
    assert code == 1 and 'no mask' in err
    code, _, err = run_tool([tiny_lpd.config, tiny_lpd.bad_checkpoint, image,
                             '--out', out])
    assert code == 1 and 'does not fit this model' in err
    code, _, err = run_tool([tiny_lpd.config, tiny_lpd.checkpoint, image,
                             '--out', out, '--stage', '3'])
    assert code == 1 and '--stage must be in -3..2' in err
    assert not osp.exists(out)


def test_existing_outputs_need_overwrite(tiny_lpd, tmp_path):  # noqa: F811
    out = tmp_path / 'o'
    image = val_images(tiny_lpd)[0]
    args = [tiny_lpd.config, tiny_lpd.checkpoint, image, '--out', str(out),
            '--no-progress']
    code, _, err = run_tool(args)
    assert code == 0, err
    written = {n: (out / n).read_bytes() for n in os.listdir(out)}
    assert len(written) == 3
    (out / COVERAGE_JSON).write_text('{"old": true}')
    code, _, err = run_tool(args)
    panel = f'{STEM}+0_prototypes.png'
    assert code == 1
    assert (f"output folder '{out}' already holds 3 of the files this run "
            f'would write ({panel}, {COVERAGE_FIGURE}, {COVERAGE_JSON})'
            in err)
    assert '--overwrite' in err
    assert (out / COVERAGE_JSON).read_text() == '{"old": true}'
    from lpd_mmseg.apis import init_segmentor
    model = init_segmentor(tiny_lpd.config, tiny_lpd.checkpoint)
    with pytest.raises(FileExistsError, match='already holds 3 of the'):
        visualize_prototypes(model, [image], str(out), progress=False)
    # one existing file is enough to refuse
    (out / COVERAGE_FIGURE).unlink()
    (out / panel).unlink()
    with pytest.raises(FileExistsError, match=f'holds 1 of .*'
                       f'\\({COVERAGE_JSON}\\)'):
        visualize_prototypes(model, [image], str(out), progress=False)
    code, _, err = run_tool(args + ['--overwrite'])
    assert code == 0, err
    assert sorted(os.listdir(out)) == sorted(written)
    with open(out / COVERAGE_JSON) as f:
        assert json.load(f)['num_images'] == 1
    # an --out that is a file
    code, _, err = run_tool(args[:3] + ['--out', str(out / panel)])
    assert code == 1 and 'exists and is not a folder' in err


def test_help(capsys):
    with pytest.raises(SystemExit) as exc:
        load_tool('visualize_prototypes').main(['--help'])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ('--out', '--stage', '--device', '--masks', '--overwrite',
                 'IMG'):
        assert flag in text
