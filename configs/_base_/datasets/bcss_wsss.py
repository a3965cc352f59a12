# BCSS-WSSS: training/ (or train/) with labels in file names; val/ and
# test/ with img/ + mask/.  See docs/datasets.md.
dataset_type = 'BCSSWSSSDataset'
data_root = 'data/BCSS-WSSS'

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='RandomFlip', prob=0.5, direction='vertical'),
    dict(type='RandomRotate90'),
    dict(type='PackWeakSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadHistoAnnotations'),
    dict(type='PackWeakSegInputs'),
]
# The paper's TTA: horizontal flip x brightness {0.9, 1.0, 1.1}.
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='TestTimeAug',
        transforms=[
            [
                dict(type='RandomFlip', prob=0., direction='horizontal'),
                dict(type='RandomFlip', prob=1., direction='horizontal'),
            ],
            [dict(type='FixedBrightness', factor=f) for f in (0.9, 1.0, 1.1)],
            [dict(type='LoadHistoAnnotations')],
            [dict(type='PackWeakSegInputs')],
        ]),
]
train_dataloader = dict(
    batch_size=10,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        split='train',
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        split='val',
        test_mode=True,
        pipeline=test_pipeline))
# The test set: the val loader with split='test' (test_mode carried over).
test_dataloader = dict(
    val_dataloader, dataset=dict(val_dataloader['dataset'], split='test'))
# 'count': ground-truth background pixels count (TPRO/PBIP/LPD protocol);
# switch to 'ignore' for the WSSS-Tissue protocol.
val_evaluator = dict(type='TissueIoUMetric', background='count')
test_evaluator = val_evaluator
