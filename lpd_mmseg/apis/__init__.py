from .checkpoint import (CheckpointMismatchError, UnsafeCheckpointError,
                         check_checkpoint_matches, safe_load_checkpoint)

__all__ = [
    'safe_load_checkpoint', 'check_checkpoint_matches',
    'CheckpointMismatchError', 'UnsafeCheckpointError'
]
from .inference import init_segmentor, predict, prepare_batch, prototype_maps

__all__ += ['init_segmentor', 'predict', 'prepare_batch', 'prototype_maps']
