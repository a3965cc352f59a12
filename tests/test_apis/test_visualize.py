"""Prototype panels and coverage of images (lpd_mmseg.apis.visualization,
tools/visualize_prototypes.py)."""
import contextlib
import io
import json
import os
import os.path as osp

import numpy as np
import pytest
from PIL import Image

from lpd_mmseg.apis.visualization import (
    COVERAGE_FIGURE,
    COVERAGE_JSON,
    image_prototype_maps,
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
