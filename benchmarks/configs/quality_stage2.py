# Quality benchmark, second stage: the shipped CPU second-stage config
# (narrow MiT + SegformerHead, 5 classes incl. background) trained on the
# pseudo-masks that an LPD or CAM run of the benchmark wrote for the
# training patches, gated by their file-name labels.  The benchmark script
# points data_prefix.seg_map_path at those masks and sets data_root, seed
# and iterations.  Validation runs once, at the end.  Random backbone
# weights unless `quality.py --backbone-init CKPT` (as in quality_lpd.py).
_base_ = ['../../configs/second_stage/'
          'segformer_mit-tiny_1xb8-1200_synthetic-bcss-pseudo-128x128.py']
custom_imports = dict(imports=['lpd_mmseg'], allow_failed_imports=False)
model = dict(backbone=dict(init_cfg=None))
train_cfg = dict(val_interval=100000)
default_hooks = dict(
    logger=dict(interval=50),
    checkpoint=dict(interval=100000, save_best=None, max_keep_ckpts=1,
                    save_last=True),
    visualization=dict(draw=False))
