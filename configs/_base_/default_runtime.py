_base_ = ['mmseg::_base_/default_runtime.py']

custom_imports = dict(imports=['lpd_mmseg'], allow_failed_imports=False)
# Average raw CAMs over the augmented passes, then gate / CRF once.
tta_model = dict(type='LPDTTAModel')
# ProgressLoggerHook: a few 'progress ...' lines per train run and per
# val/test pass, also when a pass is shorter than the logger interval.
custom_hooks = [
    dict(type='LPDConfigCheckHook'),
    dict(type='ProgressLoggerHook', reports=10)
]
# Every shipped schedule uses the plugin's SafeCheckpointHook (atomic,
# ordered saves; --resume falls back to the newest intact checkpoint) and
# the SizeGroupedVal/TestLoop (batches of mixed patch sizes).  They are set
# next to the schedule's other hooks and loops, not here: mmengine refuses
# a key defined in two _base_ files.  See docs/reliability.md.
