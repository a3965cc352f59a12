# Clustering-bank baseline (PBIP idea): k-means prototypes from the pooled
# backbone features of single-label training images, built before training
# and frozen.  With no pre-trained weights available offline, the bank is
# clustered from the same randomly initialised backbone every method starts
# from.
_base_ = './quality_lpd.py'
custom_imports = dict(imports=['lpd_mmseg'], allow_failed_imports=False)
model = dict(
    decode_head=dict(prototype_mode='frozen_bank', loss_diversity=None))
custom_hooks = [
    dict(type='LPDConfigCheckHook'),
    dict(type='PrototypeBankHook', bank_file='prototype_bank.pth'),
]
