"""Split-level tissue segmentation metrics (both background protocols)."""
from .confusion import BACKGROUND_PROTOCOLS, confusion_matrix, tissue_metrics
from .tissue_metric import TissueIoUMetric

__all__ = [
    'BACKGROUND_PROTOCOLS', 'confusion_matrix', 'tissue_metrics',
    'TissueIoUMetric'
]
