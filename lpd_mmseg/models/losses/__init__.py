from .diversity_loss import (
                             CorrelationDiversityLoss,
                             JeffreysDiversityLoss,
                             correlation_diversity,
                             jeffreys_diversity,
)
from .multilabel_loss import MultiLabelBCELoss, multilabel_bce

__all__ = [
    'jeffreys_diversity', 'correlation_diversity', 'JeffreysDiversityLoss',
    'CorrelationDiversityLoss', 'MultiLabelBCELoss', 'multilabel_bce'
]
