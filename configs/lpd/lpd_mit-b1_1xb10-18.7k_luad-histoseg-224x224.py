# LPD, paper setting on LUAD-HistoSeg (classes TE, NEC, LYM, TAS).  16,678
# training patches -> 1,668 iterations per epoch at batch 10; the schedule
# keeps the BCSS iteration count (~11 epochs) as the reference code does.
_base_ = [
    '../_base_/models/lpd_mit-b1.py', '../_base_/datasets/luad_histoseg.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_lpd_18.7k.py'
]
custom_imports = dict(imports=['lpd_mmseg'], allow_failed_imports=False)
