# Small LPD for CPU: the `make demo` config.  A narrow, randomly initialised
# MiT (no downloads) with stage 4 kept at stride 16 (as in the reference
# variant), k=5 prototypes of width 128, trained for 600 iterations at batch
# 8 on the generated BCSS-WSSS-layout data set (tools/make_synthetic_bcss.py
# --size 128).  A few minutes on 2 CPU cores.
_base_ = [
    '../_base_/models/lpd_mit-b1.py', '../_base_/datasets/bcss_wsss.py',
    '../_base_/default_runtime.py'
]
custom_imports = dict(imports=['lpd_mmseg'], allow_failed_imports=False)

data_root = 'data/synthetic-bcss-demo'
max_iters = 600
val_interval = 200

model = dict(
    backbone=dict(
        embed_dims=32,
        num_layers=[2, 2, 2, 2],
        strides=[4, 2, 2, 1],
        drop_path_rate=0.0,
        init_cfg=None),
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

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999),
                   weight_decay=1e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, begin=0, end=50, by_epoch=False),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=50, end=max_iters,
         by_epoch=False)
]
train_cfg = dict(
    type='IterBasedTrainLoop', max_iters=max_iters, val_interval=val_interval)
# Val/test batches may mix patch sizes (each size runs on its own).
val_cfg = dict(type='SizeGroupedValLoop')
test_cfg = dict(type='SizeGroupedTestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=20, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # Atomic saves and a safe --resume (docs/reliability.md).
    checkpoint=dict(
        type='SafeCheckpointHook',
        by_epoch=False,
        interval=val_interval,
        save_best='mIoU',
        max_keep_ckpts=1),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
randomness = dict(seed=0)
env_cfg = dict(cudnn_benchmark=False)
