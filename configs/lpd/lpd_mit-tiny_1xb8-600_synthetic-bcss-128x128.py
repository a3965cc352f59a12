# Small LPD for CPU: the `make demo` config.  A narrow MiT with stage 4 kept
# at stride 16 (as in the reference variant), k=5 prototypes of width 128,
# trained on the generated BCSS-WSSS-layout data set
# (tools/make_synthetic_bcss.py --size 128) with the 600-iteration schedule
# at batch 8 (_base_/schedules/schedule_lpd_600.py).  A few minutes on 2 CPU
# cores, no downloads.
#
# The backbone starts from the weights shipped in the repository
# (lpd_mmseg/testing/weights/, 6.7 MB): this MiT trained once as an
# image-level classifier on a generated set of its own (data seed 100, no
# pixel mask), made by benchmarks/pretrain_backbone.py.  It stands in for
# the ImageNet weights that the real configs load; docs/results.md measures
# what it changes ("A pre-trained backbone").  Random weights:
# --cfg-options model.backbone.init_cfg=None
_base_ = [
    '../_base_/models/lpd_mit-b1.py', '../_base_/datasets/bcss_wsss.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_lpd_600.py'
]
custom_imports = dict(imports=['lpd_mmseg'], allow_failed_imports=False)

data_root = 'data/synthetic-bcss-demo'
demo_backbone = ('{{ fileDirname }}/../../lpd_mmseg/testing/weights/'
                 'mit-tiny_gen100-cls_backbone.pth')
# 600 generated training patches at batch 8 (the demo's defaults).
iters_per_epoch = 75
model = dict(
    backbone=dict(
        embed_dims=32,
        num_layers=[2, 2, 2, 2],
        strides=[4, 2, 2, 1],
        drop_path_rate=0.0,
        init_cfg=dict(type='Pretrained', checkpoint=demo_backbone)),
    decode_head=dict(
        in_channels=[64, 160, 256],
        num_prototypes=5,
        prototype_dim=128,
        warmup_iters=200))

train_dataloader = dict(
    batch_size=8,
    num_workers=2,
    dataset=dict(data_root=data_root))
val_dataloader = dict(
    batch_size=16, num_workers=1, dataset=dict(data_root=data_root))
test_dataloader = val_dataloader

randomness = dict(seed=0)
env_cfg = dict(cudnn_benchmark=False)
