# Second stage of the two-stage WSSS recipe: a plain, fully supervised
# SegFormer (MiT-B1 + SegformerHead, stock mmseg EncoderDecoder) trained on
# the LPD pseudo-masks of the BCSS-WSSS training patches.
#
# 1. Train LPD (configs/lpd/lpd_mit-b1_1xb10-18.7k_bcss-wsss-224x224.py).
# 2. Write one pseudo-mask per training patch, same file name, values
#    0 TUM, 1 STR, 2 LYM, 3 NEC, 4 background:
#      python tools/make_pseudo_masks.py \
#          configs/lpd/lpd_mit-b1_1xb10-18.7k_bcss-wsss-224x224.py LPD_CKPT \
#          --out data/BCSS-WSSS/pseudo_masks --crf torch
# 3. Train this config:
#      python tools/train.py configs/second_stage/\
#          segformer_mit-b1_1xb10-18.7k_bcss-wsss-pseudo-224x224.py
#    adding the class weights make_pseudo_masks.py prints
#      --cfg-options model.decode_head.loss_decode.class_weight=[...]
#    (1/sqrt of each class's pseudo-mask pixel share; a plain loss can
#    stop predicting a rare, under-labelled class such as necrosis),
#    and test it like any model (tools/test.py CONFIG CKPT).  There is no
#    class gating here: the network predicts all 5 classes directly, so the
#    numbers correspond to the "predicted" (honest) gating protocol.
#
# The head predicts 5 classes: the 4 tissue classes plus background (value
# 4), which the LPD pseudo-masks mark where no tissue CAM is strong.  The
# evaluation follows the 'count' protocol of configs/_base_/datasets/
# bcss_wsss.py (mIoU over the 4 tissue classes of a 5x5 confusion matrix).
#
# Schedule: the LPD schedule (18.7k iterations = 8 epochs at batch 10,
# checkpoint selected by val mIoU), with SegFormer's usual optimiser
# settings on top: AdamW lr 6e-5, weight decay 0.01, 10x learning rate for
# the head, no decay on norms and position blocks, 1500 iterations of
# linear warm-up.  BN, not SyncBN, so that one GPU (or CPU) works; switch
# norm_cfg to SyncBN for multi-GPU runs.
_base_ = [
    '../_base_/models/lpd_mit-b1.py', '../_base_/datasets/bcss_wsss.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_lpd_18.7k.py'
]
custom_imports = dict(imports=['lpd_mmseg'], allow_failed_imports=False)

data_root = 'data/BCSS-WSSS'
# Folders below data_root: the training patches and the pseudo-masks with
# the same file names (BCSSWSSSDataset pairs them by name and refuses a
# patch without a mask or a mask without a patch).
train_img_dir = 'training'
pseudo_mask_dir = 'pseudo_masks'
num_classes = 5  # TUM, STR, LYM, NEC + background

norm_cfg = dict(type='BN', requires_grad=True)
# The LPD model's data preprocessor (same statistics) and MiT-B1 backbone
# (ImageNet weights), with a stock SegFormer head instead of LPDHead.
model = dict(
    type='EncoderDecoder',
    backbone=dict(
        # Stage 4 at stride 16, as in the LPD model that wrote the
        # pseudo-masks (stock SegFormer MiT-B1 uses [4, 2, 2, 2], stride
        # 32; the ImageNet weights fit either).
        strides=[4, 2, 2, 1]),
    decode_head=dict(
        _delete_=True,
        type='SegformerHead',
        in_channels=[64, 128, 320, 512],
        in_index=[0, 1, 2, 3],
        channels=256,
        dropout_ratio=0.1,
        num_classes=num_classes,
        norm_cfg=norm_cfg,
        align_corners=False,
        # Padding (seg_pad_val 255) is ignored; background (4) is a class.
        ignore_index=255,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(_delete_=True, mode='whole'))

# Pseudo-masks are loaded like real masks (values 0..4 are checked); the
# same flips and 90-degree rotations as LPD's training.
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadHistoAnnotations'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='RandomFlip', prob=0.5, direction='vertical'),
    dict(type='RandomRotate90'),
    dict(type='PackSegInputs'),
]
# `tools/test.py --tta`: average the softmax over a horizontal flip.
tta_model = dict(type='SegTTAModel')
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='TestTimeAug',
        transforms=[
            [
                dict(type='RandomFlip', prob=0., direction='horizontal'),
                dict(type='RandomFlip', prob=1., direction='horizontal'),
            ],
            [dict(type='LoadHistoAnnotations')],
            [dict(type='PackSegInputs')],
        ]),
]
# Val/test data, pipelines and TissueIoUMetric come from the BCSS-WSSS base.
train_dataloader = dict(
    dataset=dict(
        data_root=data_root,
        # No `split`: an explicit prefix with seg_map_path reads masks.
        split=None,
        data_prefix=dict(img_path=train_img_dir, seg_map_path=pseudo_mask_dir),
        pipeline=train_pipeline))

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(
        custom_keys=dict(
            pos_block=dict(decay_mult=0.0),
            norm=dict(decay_mult=0.0),
            head=dict(lr_mult=10.0))))
param_scheduler = [
    dict(
        type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0,
        end=1500),
    dict(
        type='PolyLR',
        eta_min=0.0,
        power=1.0,
        begin=1500,
        end={{_base_.max_iters}},
        by_epoch=False)
]
