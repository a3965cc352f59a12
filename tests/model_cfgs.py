"""Tiny model configs shared by the model tests (CPU, seconds)."""
import copy

TINY_MIT = dict(
    type='MixVisionTransformer', in_channels=3, embed_dims=8, num_stages=4,
    num_layers=[1, 1, 1, 1], num_heads=[1, 1, 2, 4], patch_sizes=[7, 3, 3, 3],
    sr_ratios=[8, 4, 2, 1], out_indices=(0, 1, 2, 3), mlp_ratio=2,
    init_cfg=None)
TINY_MIT_CHANNELS = [8, 16, 32]  # stages 2..4


def tiny_head(**kw):
    head = dict(type='LPDHead', in_channels=list(TINY_MIT_CHANNELS),
                num_classes=4, num_prototypes=3, prototype_dim=16,
                warmup_iters=0)
    head.update(kw)
    return head


def tiny_segmentor(head=None, test_cfg=None, backbone=None):
    return dict(
        type='LPDEncoderDecoder',
        data_preprocessor=dict(
            type='SegDataPreProcessor', mean=[170.3, 121.9, 180.1],
            std=[44.3, 57.5, 50.5], bgr_to_rgb=False, pad_val=0,
            seg_pad_val=255),
        backbone=copy.deepcopy(backbone or TINY_MIT),
        decode_head=head or tiny_head(),
        train_cfg=dict(),
        test_cfg=test_cfg or dict(mode='whole'))
