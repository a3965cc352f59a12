# Fully supervised upper bound: the second-stage model (same backbone,
# mmseg's SegformerHead, 5 classes incl. background) trained on the true
# pixel masks of the same training images (written by
# make_synthetic_bcss.py --with-train-masks) instead of pseudo-masks.
_base_ = './quality_stage2.py'
custom_imports = dict(imports=['lpd_mmseg'], allow_failed_imports=False)
train_dataloader = dict(
    dataset=dict(
        data_prefix=dict(img_path='training', seg_map_path='training_masks')))
