# Paper schedule: AdamW 5e-5, weight decay 1e-3, linear (poly, power 1)
# decay, batch 10, 8 epochs of BCSS-WSSS (23,422 patches -> 2,343 iterations
# per epoch, 18,744 in all).  Mixed precision: pass --amp to tools/train.py.
iters_per_epoch = 2343
max_iters = 8 * iters_per_epoch
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=5e-5, betas=(0.9, 0.999), weight_decay=1e-3))
param_scheduler = [
    dict(
        type='PolyLR',
        eta_min=0.0,
        power=1.0,
        begin=0,
        end=max_iters,
        by_epoch=False)
]
train_cfg = dict(
    type='IterBasedTrainLoop', max_iters=max_iters,
    val_interval=iters_per_epoch)
# Val/test batches may mix patch sizes (each size runs on its own).
val_cfg = dict(type='SizeGroupedValLoop')
test_cfg = dict(type='SizeGroupedTestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # Keep the best checkpoint by validation mIoU (the paper's selection).
    # Atomic saves and a safe --resume (docs/reliability.md).
    checkpoint=dict(
        type='SafeCheckpointHook',
        by_epoch=False,
        interval=iters_per_epoch,
        save_best='mIoU',
        max_keep_ckpts=2),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
