# Quality probe: the balanced second stage with its backbone started from
# the first-stage checkpoint's backbone (keys 'backbone.*') instead of
# random weights.  benchmarks/stage2_probe.py --warm-start sets the
# checkpoint per seed.
_base_ = ['quality_stage2.py']
custom_imports = dict(imports=['lpd_mmseg'], allow_failed_imports=False)
model = dict(
    backbone=dict(
        init_cfg=dict(_delete_=True, type='Pretrained', checkpoint='',
                      prefix='backbone.')))
