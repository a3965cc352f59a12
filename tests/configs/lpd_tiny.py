# Test-only: the demo config shrunk to seconds on a CPU.  data_root is set
# by the tests through --cfg-options.
_base_ = '../../configs/lpd/lpd_mit-tiny_1xb8-600_synthetic-bcss-128x128.py'
custom_imports = dict(imports=['lpd_mmseg'], allow_failed_imports=False)

model = dict(
    backbone=dict(embed_dims=8, num_layers=[1, 1, 1, 1], init_cfg=None),
    decode_head=dict(
        in_channels=[16, 40, 64], num_prototypes=3, prototype_dim=16,
        warmup_iters=2))
train_dataloader = dict(batch_size=4, num_workers=0, persistent_workers=False)
val_dataloader = dict(batch_size=4, num_workers=0, persistent_workers=False)
test_dataloader = val_dataloader
train_cfg = dict(max_iters=4, val_interval=2)
param_scheduler = [
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=0, end=4,
         by_epoch=False)
]
default_hooks = dict(
    logger=dict(interval=1),
    checkpoint=dict(interval=2, max_keep_ckpts=3, save_best=None))
