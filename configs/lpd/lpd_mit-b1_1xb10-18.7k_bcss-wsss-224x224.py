# LPD, paper setting: MiT-B1, 224 px, batch 10 on 1 GPU, ~18.7k iterations
# (8 epochs) on BCSS-WSSS.
_base_ = [
    '../_base_/models/lpd_mit-b1.py', '../_base_/datasets/bcss_wsss.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_lpd_18.7k.py'
]
custom_imports = dict(imports=['lpd_mmseg'], allow_failed_imports=False)
