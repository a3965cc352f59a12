# LPD on SegFormer's MiT-B1 (paper setting).  Stage 1 has loss weight 0 in
# the paper and no fusion weight, so it is not used (in_index 1..3).  As in
# the reference variant, stage 4 keeps stride 16 (patch-embedding stride 1
# instead of 2): 14x14 prototype maps at 224 px instead of 7x7.  The
# ImageNet weights load unchanged (only the stride differs).
checkpoint = 'https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segformer/mit_b1_20220624-02e5a6a1.pth'  # noqa
# The reference normalises BGR-read images with these statistics.
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[170.3145, 121.8645, 180.081],
    std=[44.2935, 57.528, 50.541],
    bgr_to_rgb=False,
    # Patches are 224 px; batches of other sizes are padded to a multiple
    # of 16 (the backbone's total stride).
    size_divisor=16,
    pad_val=0,
    seg_pad_val=255)
model = dict(
    type='LPDEncoderDecoder',
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        type='MixVisionTransformer',
        in_channels=3,
        embed_dims=64,
        num_stages=4,
        num_layers=[2, 2, 2, 2],
        num_heads=[1, 2, 5, 8],
        patch_sizes=[7, 3, 3, 3],
        strides=[4, 2, 2, 1],
        sr_ratios=[8, 4, 2, 1],
        out_indices=(0, 1, 2, 3),
        mlp_ratio=4,
        qkv_bias=True,
        drop_rate=0.0,
        attn_drop_rate=0.0,
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(
        type='LPDHead',
        in_channels=[128, 320, 512],
        in_index=[1, 2, 3],
        num_classes=4,
        num_prototypes=10,
        prototype_dim=512,
        stage_loss_weights=[0.1, 1.0, 1.0],
        stage_fusion_weights=[0.3, 0.3, 0.4],
        train_merge='mean',
        test_merge='softmax',
        loss_decode=dict(
            type='MultiLabelBCELoss', loss_weight=1.0, loss_name='loss_cls'),
        loss_diversity=dict(
            type='JeffreysDiversityLoss', loss_weight=0.5, temperature=1.0),
        warmup_iters=3000,
        background_alpha=10.0),
    train_cfg=dict(),
    test_cfg=dict(
        mode='whole',
        # honest gating by the model's own class probabilities; see
        # docs/inference.md for the other gate sources and rules
        gate='predicted',
        gate_threshold=0.5,
        gate_rule='hard',
        # background wins on bare glass (bright, unsaturated pixels);
        # None switches it off
        tissue_prior=dict(brightness=200, saturation=0.1, min_size=5),
        # backend None = off; 'torch' or 'pydensecrf' for the paper's CRF.
        crf=dict(backend=None)))
