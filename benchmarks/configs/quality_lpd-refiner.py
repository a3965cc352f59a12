# LPD with the mask refiner, as the reference always trains it.  The frozen
# encoder is the EMA copy of the model's own backbone (no download), taken
# when the head's warm-up ends; the other refiner settings are the
# MaskRefiner defaults (the paper's values).
_base_ = './quality_lpd.py'
custom_imports = dict(imports=['lpd_mmseg'], allow_failed_imports=False)
model = dict(mask_refiner=dict(type='MaskRefiner', encoder='ema'))
