from .checkpoint_hook import SafeCheckpointHook
from .consistency_hook import LPDConfigCheckHook, check_head_matches_dataset
from .prototype_bank_hook import PrototypeBankHook

__all__ = ['LPDConfigCheckHook', 'PrototypeBankHook', 'SafeCheckpointHook',
           'check_head_matches_dataset']
