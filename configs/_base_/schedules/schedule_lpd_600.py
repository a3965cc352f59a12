# Short CPU schedule of the demo config: the paper schedule's optimiser,
# loops and hooks with 600 iterations, a larger learning rate (1e-3, chosen
# when the demo model started from random weights; it is kept for the
# shipped pre-trained backbone, see docs/results.md), 50 iterations of
# linear warm-up, then linear decay; validation and a checkpoint every 200
# iterations (only the best by val mIoU is kept).
_base_ = ['./schedule_lpd_18.7k.py']
max_iters = 600
val_interval = 200
optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, begin=0, end=50, by_epoch=False),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=50, end=max_iters,
         by_epoch=False)
]
train_cfg = dict(max_iters=max_iters, val_interval=val_interval)
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(interval=val_interval, max_keep_ckpts=1))
