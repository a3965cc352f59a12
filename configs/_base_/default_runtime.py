_base_ = ['mmseg::_base_/default_runtime.py']

custom_imports = dict(imports=['lpd_mmseg'], allow_failed_imports=False)
# Average raw CAMs over the augmented passes, then gate / CRF once.
tta_model = dict(type='LPDTTAModel')
custom_hooks = [dict(type='LPDConfigCheckHook')]
# Every shipped schedule uses the plugin's SafeCheckpointHook (atomic,
# ordered saves; --resume falls back to the newest intact checkpoint) and
# the SizeGroupedVal/TestLoop (batches of mixed patch sizes).  They are set
# next to the schedule's other hooks and loops, not here: mmengine refuses
# a key defined in two _base_ files.  See docs/reliability.md.
