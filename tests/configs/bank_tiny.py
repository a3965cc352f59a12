# Test-only: the clustering-bank baseline at tiny size.
_base_ = './lpd_tiny.py'
custom_imports = dict(imports=['lpd_mmseg'], allow_failed_imports=False)
model = dict(
    decode_head=dict(
        num_prototypes=2, prototype_mode='frozen_bank', loss_diversity=None))
custom_hooks = [
    dict(type='LPDConfigCheckHook'),
    dict(type='ProgressLoggerHook', reports=10),
    dict(type='PrototypeBankHook', bank_file='prototype_bank.pth'),
]
