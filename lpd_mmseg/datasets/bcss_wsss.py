from mmseg.registry import DATASETS

from .palette import BCSS_CLASSES, BCSS_PALETTE, metainfo
from .weak_label_dataset import WeakLabelHistoDataset


@DATASETS.register_module()
class BCSSWSSSDataset(WeakLabelHistoDataset):
    """BCSS-WSSS: breast cancer H&E patches from TCGA (BCSS, CC0).

    Training names look like
    ``TCGA-A1-A0SK-DX1_xmin45749_ymin25055_MPP-0.2500+0[1101].png``; the
    last bracket group is the multi-hot label in class order TUM, STR, LYM,
    NEC.  Masks are palette PNGs: 0 TUM, 1 STR, 2 LYM, 3 NEC, 4 background.
    See :class:`WeakLabelHistoDataset` for arguments.
    """
    # mpp: microns per pixel of the patches (40x TCGA scans); slide
    # inference runs at this MPP by default
    METAINFO = metainfo(BCSS_CLASSES, BCSS_PALETTE, mpp=0.25)
    LABEL_FORMAT = 'compact'
