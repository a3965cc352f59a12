# CAM baseline: one prototype per class (a cosine classifier), no diversity.
_base_ = '../lpd/lpd_mit-b1_1xb10-18.7k_bcss-wsss-224x224.py'
custom_imports = dict(imports=['lpd_mmseg'], allow_failed_imports=False)
model = dict(decode_head=dict(num_prototypes=1, loss_diversity=None))
