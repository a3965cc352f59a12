from .checkpoint import (CheckpointMismatchError, UnsafeCheckpointError,
                         check_checkpoint_matches, safe_load_checkpoint)

__all__ = [
    'safe_load_checkpoint', 'check_checkpoint_matches',
    'CheckpointMismatchError', 'UnsafeCheckpointError'
]
