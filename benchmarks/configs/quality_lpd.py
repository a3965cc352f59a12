# Quality benchmark, LPD: the CPU demo model (narrow MiT, k=5, D=128)
# trained for a fixed budget; the benchmark script sets data_root, seed and
# iterations.  Validation runs once, at the end.  The backbone starts from
# random weights here (the demo config starts from the shipped pre-trained
# one); `quality.py --backbone-init CKPT` starts every method from CKPT.
_base_ = '../../configs/lpd/lpd_mit-tiny_1xb8-600_synthetic-bcss-128x128.py'
custom_imports = dict(imports=['lpd_mmseg'], allow_failed_imports=False)
model = dict(backbone=dict(init_cfg=None))
train_cfg = dict(val_interval=100000)
default_hooks = dict(
    logger=dict(interval=50),
    checkpoint=dict(interval=100000, save_best=None, max_keep_ckpts=1,
                    save_last=True),
    visualization=dict(draw=False))
