# CAM baseline: one prototype per class, no diversity.
_base_ = './quality_lpd.py'
custom_imports = dict(imports=['lpd_mmseg'], allow_failed_imports=False)
model = dict(decode_head=dict(num_prototypes=1, loss_diversity=None))
