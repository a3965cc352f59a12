from .checkpoint_hook import SafeCheckpointHook
from .consistency_hook import LPDConfigCheckHook, check_head_matches_dataset
from .progress_hook import ProgressLoggerHook
from .prototype_bank_hook import PrototypeBankHook

__all__ = ['LPDConfigCheckHook', 'PrototypeBankHook', 'ProgressLoggerHook',
           'SafeCheckpointHook',
           'check_head_matches_dataset']
