"""``--cfg-options`` for training a shipped CPU config for another number
of iterations (the demo and the quality benchmark)."""
from typing import List


def warmup_iters(iters: int) -> int:
    """Linear warm-up length for a run of ``iters`` iterations: a tenth of
    the run, at least 1 and at most 50 (the shipped CPU configs' value)."""
    if iters < 1:
        raise ValueError(f'iters must be >= 1, got {iters}')
    return max(1, min(50, iters // 10))


def schedule_options(iters: int) -> List[str]:
    """Options setting ``train_cfg.max_iters`` and the two schedulers of
    the shipped CPU configs (``param_scheduler[0]``: linear warm-up,
    ``[1]``: poly decay to the end) for a run of ``iters`` iterations."""
    warm = warmup_iters(iters)
    return [f'train_cfg.max_iters={iters}', f'param_scheduler.0.end={warm}',
            f'param_scheduler.1.begin={warm}',
            f'param_scheduler.1.end={iters}']
