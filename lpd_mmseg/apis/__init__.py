from .checkpoint import (
                         CheckpointMismatchError,
                         CorruptCheckpointError,
                         UnsafeCheckpointError,
                         check_checkpoint_file,
                         check_checkpoint_matches,
                         safe_load_checkpoint,
)
from .inference import init_segmentor, predict, prepare_batch, prototype_maps
from .pseudo_masks import generate_pseudo_masks, make_pseudo_masks
from .visualization import visualize_prototypes

__all__ = [
    'safe_load_checkpoint', 'check_checkpoint_matches',
    'check_checkpoint_file', 'CheckpointMismatchError',
    'CorruptCheckpointError', 'UnsafeCheckpointError', 'init_segmentor',
    'predict', 'prepare_batch', 'prototype_maps', 'make_pseudo_masks',
    'generate_pseudo_masks', 'visualize_prototypes'
]
