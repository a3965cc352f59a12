# LPD with the optional mask refiner.  The reference uses a frozen MedCLIP
# image encoder fetched from a model hub; here the frozen encoder is a
# momentum (EMA) copy of the model's own backbone, which needs no external
# weights: a copy of the backbone as trained at the end of the head's
# warm-up (warmup_iters, when the refiner starts), then updated by EMA.  To
# use another frozen encoder, give a registry backbone (its init_cfg is
# applied by the model's init_weights), e.g.
#   encoder=dict(type='ResNetV1c', depth=50, init_cfg=dict(
#       type='Pretrained', checkpoint='open-mmlab://resnet50_v1c')),
#   embed_channels=2048,
_base_ = './lpd_mit-b1_1xb10-18.7k_bcss-wsss-224x224.py'
custom_imports = dict(imports=['lpd_mmseg'], allow_failed_imports=False)
model = dict(
    mask_refiner=dict(
        type='MaskRefiner',
        encoder='ema',
        momentum=0.999,
        temperature=0.07,
        loss_weight=0.1,
        size_weight=5e-4,
        cam_threshold=0.5,
        max_pairs=8))
