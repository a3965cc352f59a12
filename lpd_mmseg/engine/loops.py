"""Validation and test loops that accept images of different sizes.

MMSeg's data preprocessor stacks a test batch into one tensor and asserts
that all images have the same size.  Histology val/test patches often do
not (patches cut at a slide's border, LUAD-HistoSeg's test set).  These
loops split such a batch into runs of equal size, call the model on each
and put the predictions back in the original order, so each image is
predicted exactly as it would be alone: no padding, the metric unchanged.
A batch whose images all have one size goes through in one call, as
before.
"""
from contextlib import contextmanager
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from mmengine.runner import TestLoop, ValLoop
from mmseg.registry import LOOPS


def size_groups(keys: Sequence) -> List[List[int]]:
    """Indices of equal ``keys`` (e.g. image shapes), groups in order of
    first appearance: ``[(3, 4), (5, 5), (3, 4)] -> [[0, 2], [1]]``."""
    groups: Dict = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def _nested(inputs) -> bool:
    """TTA batches are ``inputs[aug][image]``."""
    return len(inputs) > 0 and isinstance(inputs[0], (list, tuple))


def split_by_size(data_batch: dict
                  ) -> Optional[List[Tuple[List[int], dict]]]:
    """``[(indices, sub_batch), ...]`` of equal-size images, or None when
    the batch has one size (or is not a list of image tensors)."""
    inputs = data_batch.get('inputs')
    if not isinstance(inputs, (list, tuple)) or not inputs:
        return None
    nested = _nested(inputs)
    count = len(inputs[0]) if nested else len(inputs)
    if nested:
        keys = [tuple(tuple(aug[i].shape) for aug in inputs)
                for i in range(count)]
    else:
        keys = [tuple(t.shape) for t in inputs]
    groups = size_groups(keys)
    if len(groups) < 2:
        return None

    def take(value, idx):
        if not isinstance(value, (list, tuple)):
            return value
        if nested and value and isinstance(value[0], (list, tuple)):
            return [[aug[i] for i in idx] for aug in value]
        if len(value) == count:
            return [value[i] for i in idx]
        return value

    return [(idx, {k: take(v, idx) for k, v in data_batch.items()})
            for idx in groups]


def grouped_step(step: Callable, data_batch: dict) -> list:
    """Run ``step`` (``model.val_step``/``test_step``) once per size group;
    outputs in the order of ``data_batch``."""
    parts = split_by_size(data_batch)
    if parts is None:
        return step(data_batch)
    outputs: list = [None] * sum(len(idx) for idx, _ in parts)
    for idx, sub_batch in parts:
        for i, out in zip(idx, step(sub_batch)):
            outputs[i] = out
    return outputs


@contextmanager
def _grouped(model, name: str):
    step = getattr(model, name)
    setattr(model, name, lambda data: grouped_step(step, data))
    try:
        yield
    finally:
        delattr(model, name)


@LOOPS.register_module()
class SizeGroupedValLoop(ValLoop):
    """``ValLoop`` for batches of mixed image sizes (see module doc)."""

    def run_iter(self, idx, data_batch: Sequence[dict]):
        with _grouped(self.runner.model, 'val_step'):
            super().run_iter(idx, data_batch)


@LOOPS.register_module()
class SizeGroupedTestLoop(TestLoop):
    """``TestLoop`` for batches of mixed image sizes (see module doc)."""

    def run_iter(self, idx, data_batch: Sequence[dict]):
        with _grouped(self.runner.model, 'test_step'):
            super().run_iter(idx, data_batch)
