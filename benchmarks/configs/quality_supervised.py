# Fully supervised upper bound: the same backbone with mmseg's SegformerHead
# (5 classes incl. background), trained on the pixel masks of the same
# training images (written by make_synthetic_bcss.py --with-train-masks).
_base_ = './quality_lpd.py'
custom_imports = dict(imports=['lpd_mmseg'], allow_failed_imports=False)
model = dict(
    _delete_=True,
    type='EncoderDecoder',
    data_preprocessor={{_base_.model.data_preprocessor}},
    pretrained=None,
    backbone={{_base_.model.backbone}},
    decode_head=dict(
        type='SegformerHead',
        in_channels=[32, 64, 160, 256],
        in_index=[0, 1, 2, 3],
        channels=128,
        dropout_ratio=0.1,
        num_classes=5,
        norm_cfg=dict(type='BN', requires_grad=True),
        align_corners=False,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0,
            avg_non_ignore=True)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadHistoAnnotations'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='RandomFlip', prob=0.5, direction='vertical'),
    dict(type='RandomRotate90'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    dataset=dict(
        split=None,
        data_prefix=dict(img_path='training', seg_map_path='training_masks'),
        pipeline=train_pipeline))
