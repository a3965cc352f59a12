"""Split-level tissue segmentation metrics (both background protocols)."""
from .confusion import BACKGROUND_PROTOCOLS, confusion_matrix, tissue_metrics
from .prototype_coverage import (
                                 coverage_entropy,
                                 coverage_report,
                                 coverage_shares,
                                 format_coverage,
                                 prototype_coverage,
)
from .tissue_metric import TissueIoUMetric

__all__ = [
    'BACKGROUND_PROTOCOLS', 'confusion_matrix', 'tissue_metrics',
    'TissueIoUMetric', 'prototype_coverage', 'coverage_shares',
    'coverage_entropy', 'coverage_report', 'format_coverage'
]
