# LUAD-HistoSeg: the BCSS-WSSS layout and pipelines with the LUAD dataset
# class (classes TE, NEC, LYM, TAS; labels like [1 0 0 1]).
_base_ = './bcss_wsss.py'
dataset_type = 'LUADHistoSegDataset'
data_root = 'data/LUAD-HistoSeg'
train_dataloader = dict(dataset=dict(type=dataset_type, data_root=data_root))
val_dataloader = dict(dataset=dict(type=dataset_type, data_root=data_root))
test_dataloader = dict(dataset=dict(type=dataset_type, data_root=data_root))
