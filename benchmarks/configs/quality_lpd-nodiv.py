# Ablation: the same k learnable prototypes without the diversity loss.
_base_ = './quality_lpd.py'
custom_imports = dict(imports=['lpd_mmseg'], allow_failed_imports=False)
model = dict(decode_head=dict(loss_diversity=None))
