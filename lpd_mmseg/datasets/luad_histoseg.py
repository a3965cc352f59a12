from mmseg.registry import DATASETS

from .palette import LUAD_CLASSES, LUAD_PALETTE, metainfo
from .weak_label_dataset import WeakLabelHistoDataset


@DATASETS.register_module()
class LUADHistoSegDataset(WeakLabelHistoDataset):
    """LUAD-HistoSeg: lung adenocarcinoma H&E patches.

    Training names look like ``1031280-2300-27920-[1 0 0 1].png``; the last
    bracket group holds four space-separated digits in class order TE
    (tumour epithelium), NEC, LYM, TAS (tumour-associated stroma).  Masks are
    palette PNGs: 0 TE, 1 NEC, 2 LYM, 3 TAS, 4 background.
    See :class:`WeakLabelHistoDataset` for arguments.
    """
    # mpp: the patches are 10x crops, about 1 micron per pixel
    METAINFO = metainfo(LUAD_CLASSES, LUAD_PALETTE, mpp=1.0)
    LABEL_FORMAT = 'spaced'
