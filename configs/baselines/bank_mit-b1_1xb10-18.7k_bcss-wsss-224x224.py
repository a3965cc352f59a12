# Clustering-bank baseline (the PBIP idea): before training, k-means over
# the pooled backbone features of single-label training images gives k
# prototypes per class and stage; they stay frozen while the backbone and
# the logit scales train.  The bank is saved to work_dir/prototype_bank.pth.
_base_ = '../lpd/lpd_mit-b1_1xb10-18.7k_bcss-wsss-224x224.py'
custom_imports = dict(imports=['lpd_mmseg'], allow_failed_imports=False)
model = dict(
    decode_head=dict(prototype_mode='frozen_bank', loss_diversity=None))
custom_hooks = [
    dict(type='LPDConfigCheckHook'),
    dict(type='ProgressLoggerHook', reports=10),
    dict(type='PrototypeBankHook', bank_file='prototype_bank.pth'),
]
