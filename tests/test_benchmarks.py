"""The benchmarks' quick modes (the full runs are not part of the suite)."""
import json
import os
import os.path as osp

import pytest

from conftest import REPO, run_tool

pytestmark = pytest.mark.slow


#: The quick run trains one method of each kind: supervised, one prototype
#: (CAM), k prototypes with diversity, an unweighted second stage on LPD
#: masks and a balanced one on CAM masks.  The other benchmark configs are
#: built in test_quality_configs_build.
QUICK_METHODS = ('supervised', 'cam', 'lpd', 'stage2-lpd', 'stage2-cam-bal',
                 'stage3-cam-bal')


def test_quality_quick(tmp_path):
    out = tmp_path / 'quality.json'
    run_tool(['benchmarks/quality.py', '--quick', '--work-dir',
              str(tmp_path / 'work'), '--out', str(out), '--methods'] +
             list(QUICK_METHODS), timeout=900)
    payload = json.loads(out.read_text())
    assert set(payload['summary']) == set(QUICK_METHODS)
    for entry in payload['summary'].values():
        for protocol in ('honest', 'honest+crf', 'oracle', 'oracle+crf'):
            assert 0 <= entry[protocol]['mIoU']['mean'] <= 100
    assert 'effective_prototypes' in payload['summary']['lpd']
    # the second stages trained on their own first stage's pseudo-masks
    for method, source in (('stage2-lpd', 'lpd'), ('stage2-cam-bal', 'cam'),
                           ('stage3-cam-bal', 'stage2-cam-bal')):
        run, = [r for r in payload['runs'] if r['method'] == method]
        assert run['pseudo_masks']['dir'].endswith(f'pseudo_{source}_seed0')
        assert 0 <= run['pseudo_masks']['metrics']['mIoU'] <= 100
        assert 'pseudo_masks' in payload['summary'][method]
    weighted = {r['method']: any('loss_decode.class_weight=[' in o
                                 for o in r['extra_options'])
                for r in payload['runs'] if r['method'].startswith('stage2')}
    assert weighted == {'stage2-lpd': False, 'stage2-cam-bal': True}
    third, = [r for r in payload['runs'] if r['method'] == 'stage3-cam-bal']
    assert any('loss_decode.class_weight=[' in o
               for o in third['extra_options'])
    table = open(osp.splitext(str(out))[0] + '.md').read()
    assert '| stage2-lpd | argmax of all 5 classes, no gate | no |' in table
    assert '| lpd | oracle gate + tissue prior (reference) | yes |' in table
    # the stage-2 probe reads the same finished runs
    probe = tmp_path / 'probe.json'
    run_tool(['benchmarks/stage2_probe.py', '--seeds', '0', '--iters', '4',
              '--stage2', 'stage2-lpd', '--work-dir', str(tmp_path / 'work'),
              '--data-root', str(tmp_path / 'work' / 'data'), '--out',
              str(probe)])
    rows = json.loads(probe.read_text())['summary']
    assert {'lpd-oracle', 'stage2-lpd', 'stage2-self>0.05', 'fusion',
            'lpd-s2gate>0.05'} <= set(rows)
    stage2, = [r for r in payload['runs'] if r['method'] == 'stage2-lpd']
    assert rows['stage2-lpd']['mIoU']['mean'] == \
        stage2['metrics']['honest']['mIoU']


@pytest.mark.parametrize('name', sorted(
    n for n in os.listdir(osp.join(REPO, 'benchmarks', 'configs'))
    if n.endswith('.py')))
def test_quality_configs_build(name):
    """Every benchmark config (also those the quick run leaves out) loads
    with its base chain and builds its model."""
    from mmengine.config import Config
    from mmseg.registry import MODELS
    cfg = Config.fromfile(osp.join(REPO, 'benchmarks', 'configs', name))
    assert cfg.custom_imports['imports'] == ['lpd_mmseg']
    cfg.model.backbone.init_cfg = None  # the warm-start one names a file
    model = MODELS.build(cfg.model)
    assert sum(p.numel() for p in model.parameters()) > 0


def test_backbone_state_dict_hand_values():
    """Only 'backbone.*' keys, prefix removed, floats cast, ints kept."""
    import torch

    from benchmarks.pretrain_backbone import backbone_state_dict
    state = {'backbone.a.weight': torch.tensor([0.5, 1.25]),
             'backbone.n': torch.tensor([3]),
             'decode_head.p': torch.ones(2)}
    out = backbone_state_dict(state)
    assert set(out) == {'a.weight', 'n'}
    assert out['a.weight'].dtype == torch.float16
    assert out['a.weight'].tolist() == [0.5, 1.25]
    assert out['n'].dtype == torch.int64 and out['n'].tolist() == [3]
    with pytest.raises(KeyError, match='backbone'):
        backbone_state_dict({'decode_head.p': torch.ones(2)})


def test_parse_variant_hand_values():
    """--extra NAME[@METHOD]:OPTIONS, LPD by default, refusals named."""
    from benchmarks.quality import parse_variant
    assert parse_variant('lpd-d256:a.b=1,c=2') == ('lpd-d256', 'lpd',
                                                   ('a.b=1', 'c=2'))
    assert parse_variant('cam-blr@cam:x=0.1') == ('cam-blr', 'cam',
                                                  ('x=0.1', ))
    assert parse_variant('same:') == ('same', 'lpd', ())
    for bad, message in (('no-colon', 'expected NAME'),
                         (':a=1', 'expected NAME'),
                         ('v@stage2-lpd:a=1', "'stage2-lpd' is not one"),
                         ('v@nope:a=1', "'nope' is not one"),
                         ('cam:a=1', "NAME 'cam' is a method")):
        with pytest.raises(ValueError, match=message):
            parse_variant(bad)


def test_stage2_iters_hand_values():
    """--stage2-iters changes only the second stages' schedule and work
    dir; without it every run keeps --iters and NAME_seedS."""
    from benchmarks import quality
    parser = quality.build_parser()
    same = parser.parse_args(['--work-dir', 'w'])
    longer = parser.parse_args(['--work-dir', 'w', '--stage2-iters', '1200'])
    assert quality.iters_for(same, 'stage2-lpd-bal') == 600
    assert quality.iters_for(longer, 'stage2-lpd-bal') == 1200
    assert quality.iters_for(longer, 'lpd') == 600
    assert quality.run_dir(same, 'stage2-cam', 'stage2-cam', 2) == osp.join(
        'w', 'stage2-cam_seed2')
    assert quality.run_dir(longer, 'stage2-cam', 'stage2-cam', 2) == osp.join(
        'w', 'stage2-cam-1200it_seed2')
    assert quality.run_dir(longer, 'lpd', 'lpd', 0) == osp.join('w',
                                                                'lpd_seed0')
    opts = quality.train_options(longer, 'stage2-lpd', 0)
    assert 'train_cfg.max_iters=1200' in opts
    assert 'param_scheduler.1.end=1200' in opts
    assert 'train_cfg.max_iters=600' in quality.train_options(longer, 'lpd',
                                                              0)


def test_pretrained_backbone_reaches_every_method(tmp_path):
    """pretrain_backbone.py writes a backbone checkpoint; quality.py
    --backbone-init starts a run from it (the model's backbone equals the
    file after init_weights) and records its hash; an existing output is
    never overwritten."""
    import argparse
    import hashlib

    import torch
    from mmengine.config import Config, DictAction
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    from benchmarks import quality
    ckpt = tmp_path / 'backbone.pth'
    run_tool(['benchmarks/pretrain_backbone.py', '--quick', '--iters', '2',
              '--work-dir', str(tmp_path / 'pre'), '--data-root',
              str(tmp_path / 'pre' / 'data'), '--out', str(ckpt)])
    again = run_tool(['benchmarks/pretrain_backbone.py', '--quick',
                      '--iters', '2', '--work-dir', str(tmp_path / 'pre'),
                      '--data-root', str(tmp_path / 'pre' / 'data'),
                      '--out', str(ckpt)], check=False)
    assert again.returncode != 0 and 'exists' in again.stderr
    weights = torch.load(str(ckpt), weights_only=True)['state_dict']
    # the cfg-options the benchmark adds, parsed as tools/train.py parses
    # them, applied to a quick-sized model
    parser = argparse.ArgumentParser()
    parser.add_argument('--o', nargs='+', action=DictAction)
    args = quality.quick_settings(quality.build_parser().parse_args(
        ['--quick', '--backbone-init', str(ckpt)]))
    for method in ('lpd', 'stage2-lpd'):
        cfg = Config.fromfile(osp.join(REPO, quality.config_for(method)))
        options = [o for o in quality.train_options(args, method, 0)
                   if o.startswith('model.backbone')]
        cfg.merge_from_dict(parser.parse_args(['--o'] + options).o)
        init_default_scope('mmseg')
        model = MODELS.build(cfg.model)
        model.init_weights()
        for key, value in model.backbone.state_dict().items():
            assert torch.equal(value, weights[key].to(value.dtype)), key
    out = tmp_path / 'q.json'
    run_tool(['benchmarks/quality.py', '--quick', '--methods', 'cam',
              '--crf', 'none', '--backbone-init', str(ckpt), '--work-dir',
              str(tmp_path / 'work'), '--out', str(out)], timeout=900)
    record = json.loads(out.read_text())['backbone_init']
    assert record['sha256'] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    log = (tmp_path / 'work' / 'cam_seed0' / 'train_stdout.log').read_text()
    assert str(ckpt) in log and 'do not match' not in log
    # a finished run is not reused under another backbone init
    mixed = run_tool(['benchmarks/quality.py', '--quick', '--methods', 'cam',
                      '--crf', 'none', '--work-dir', str(tmp_path / 'work'),
                      '--out', str(tmp_path / 'q1.json')], check=False)
    assert mixed.returncode != 0
    assert 'not from --backbone-init (none)' in mixed.stderr
    # a backbone of another shape is refused, not half loaded
    wrong = tmp_path / 'wrong.pth'
    torch.save(dict(state_dict={k: v for k, v in list(weights.items())[:4]}),
               str(wrong))
    bad = run_tool(['benchmarks/quality.py', '--quick', '--methods', 'cam',
                    '--crf', 'none', '--backbone-init', str(wrong),
                    '--work-dir', str(tmp_path / 'work2'), '--out',
                    str(tmp_path / 'q2.json')], check=False, timeout=900)
    assert bad.returncode != 0
    assert 'wrong.pth' in bad.stderr and 'missing keys' in bad.stderr


def test_speed_quick(tmp_path):
    out = tmp_path / 'speed.json'
    run_tool(['benchmarks/speed.py', '--quick', '--out', str(out)],
             timeout=900)
    payload = json.loads(out.read_text())
    assert payload['train']['ratio_lpd_over_segformer'] > 0
    assert payload['memory']['lpd']['peak_rss_mb'] > 0
    assert payload['inference']['tta_slowdown'] > 1
    assert payload['crf']['torch']['images_per_s'] > 0
    assert payload['bank']['seconds'] > 0


def test_scale_quick(tmp_path):
    out = tmp_path / 'scale.json'
    run_tool(['benchmarks/scale.py', '--quick', '--out', str(out)],
             timeout=600)
    payload = json.loads(out.read_text())
    assert payload['dataset_scan']['train']['files'] == 500
    assert payload['slide_inference'][0]['size'] == 256


def test_crf_agreement_quick(tmp_path):
    out = tmp_path / 'crf.json'
    run_tool(['benchmarks/crf_agreement.py', '--quick', '--threads', '1',
              '--out', str(out)], timeout=600)
    payload = json.loads(out.read_text())
    assert payload['timing'][0]['torch_s_per_image'] > 0
    assert payload['timing'][0]['load_average_1min'] >= 0
    assert {row['workload'] for row in payload['thread_check']} == {
        'elementwise_500_ops', 'matmul_10_ops'}
    assert payload['region']['within_default_guard']
    assert payload['region']['estimate_gib'] <= \
        payload['region']['worst_case_estimate_gib']
    if payload['pydensecrf_available']:
        assert payload['agreement']['argmax_agreement_min'] > 0.99
    assert osp.isfile(osp.splitext(str(out))[0] + '.md')


def test_slide_small(tmp_path):
    out = tmp_path / 'slide.json'
    run_tool(['benchmarks/slide.py', '--sizes', '1024', '--tile', '128',
              '--mpp', '1.0', '--out', str(out)], timeout=600)
    (row, ) = json.loads(out.read_text())['results']
    assert row['level0_side'] == 1024 and row['target_mpx'] == 0.1
    assert row['tiles_run'] > 0 and row['tiles_skipped'] > 0
    assert row['peak_rss_mb'] > 0 and row['target_mpx_per_s'] > 0
