# Backbone swap: ResNet-50 V1c (dilated, output stride 8), ImageNet weights.
_base_ = './lpd_mit-b1_1xb10-18.7k_bcss-wsss-224x224.py'
custom_imports = dict(imports=['lpd_mmseg'], allow_failed_imports=False)
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    backbone=dict(
        _delete_=True,
        type='ResNetV1c',
        depth=50,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        dilations=(1, 1, 2, 4),
        strides=(1, 2, 1, 1),
        norm_cfg=norm_cfg,
        norm_eval=False,
        style='pytorch',
        contract_dilation=True,
        init_cfg=dict(
            type='Pretrained', checkpoint='open-mmlab://resnet50_v1c')),
    decode_head=dict(in_channels=[512, 1024, 2048], in_index=[1, 2, 3]))
