from .mask_refiner import (
                           MaskRefiner,
                           contrastive_terms,
                           foreground_background,
                           momentum_update,
                           select_firing_prototypes,
)

__all__ = [
    'MaskRefiner', 'contrastive_terms', 'foreground_background',
    'momentum_update', 'select_firing_prototypes'
]
