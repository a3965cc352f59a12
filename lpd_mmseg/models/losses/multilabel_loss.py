import torch.nn as nn
import torch.nn.functional as F
from mmseg.registry import MODELS
from torch import Tensor


def multilabel_bce(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean binary cross-entropy of class logits ``(B, C)`` against
    multi-hot labels ``(B, C)``, computed in float32."""
    if logits.shape != labels.shape:
        raise ValueError(f'logits {tuple(logits.shape)} and labels '
                         f'{tuple(labels.shape)} differ in shape')
    return F.binary_cross_entropy_with_logits(logits.float(),
                                              labels.float())


@MODELS.register_module()
class MultiLabelBCELoss(nn.Module):
    """Image-level multi-label classification loss.

    Args:
        loss_weight (float): default 1.0.
        loss_name (str): default ``'loss_cls'``.
    """

    def __init__(self, loss_weight: float = 1.0, loss_name: str = 'loss_cls'):
        super().__init__()
        if not loss_name.startswith('loss_'):
            raise ValueError("loss_name must start with 'loss_', got "
                             f'{loss_name!r}')
        self.loss_weight = loss_weight
        self._loss_name = loss_name

    @property
    def loss_name(self) -> str:
        return self._loss_name

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        return self.loss_weight * multilabel_bce(logits, labels)
