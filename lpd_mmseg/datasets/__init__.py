from .bcss_wsss import BCSSWSSSDataset
from .label_parsing import (
                            LabelParseError,
                            check_mask_values,
                            label_from_mask,
                            parse_label_from_name,
)
from .luad_histoseg import LUADHistoSegDataset
from .transforms import *  # noqa: F401,F403
from .weak_label_dataset import DataLoadError, WeakLabelHistoDataset

__all__ = [
    'BCSSWSSSDataset', 'LUADHistoSegDataset', 'WeakLabelHistoDataset',
    'DataLoadError', 'LabelParseError', 'parse_label_from_name',
    'label_from_mask', 'check_mask_values'
]
