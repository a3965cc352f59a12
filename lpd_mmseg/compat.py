"""Make the OpenMMLab 2.x stack usable on today's PyTorch without full mmcv.

Everything here runs once, when ``lpd_mmseg`` is imported, before any
``mmseg.models`` import.  Four independent fixes:

1. :func:`check_versions` fails early, with one message, when mmcv, mmengine
   or mmsegmentation are outside the ranges this plugin supports.
2. :func:`install_mmcv_ext_placeholder` lets mmseg import with ``mmcv-lite``
   (no compiled ``mmcv._ext``).  The pure-PyTorch parts of ``mmcv.ops`` work;
   calling a compiled op raises :class:`MissingCompiledOpError` naming it.
3. :func:`allow_mmengine_checkpoint_globals` lets ``torch.load`` with
   ``weights_only=True`` (the default since torch 2.6) read checkpoints
   written by mmengine, by allow-listing exactly the globals that mmengine
   and numpy put into them.  Nothing else is unlocked.
4. :func:`enable_cpu_distributed` lets ``--launcher pytorch`` run without a
   GPU (gloo): mmengine 0.10 calls ``torch.cuda.set_device`` and gives DDP
   ``device_ids=[LOCAL_RANK]`` whatever the device.  With CUDA (or another
   accelerator) present nothing changes.
"""
import importlib
import importlib.machinery
import importlib.util
import sys
import types
from typing import Callable, Dict, List, Tuple

from .version import SUPPORTED_VERSIONS


class IncompatibleEnvironmentError(ImportError):
    """An installed dependency is outside the supported range."""


class MissingCompiledOpError(RuntimeError):
    """A compiled mmcv op was called while only mmcv-lite is installed."""


# --------------------------------------------------------------------------
# 1. version check
# --------------------------------------------------------------------------
def _parse_version(text: str) -> Tuple:
    from packaging.version import Version
    return Version(text)


def _installed_version(dist_names: List[str]):
    from importlib import metadata
    for name in dist_names:
        try:
            return name, metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None, None


def check_versions(supported: Dict[str, Tuple[str, str]] = None) -> None:
    """Raise :class:`IncompatibleEnvironmentError` listing every problem.

    mmcv may come from the ``mmcv`` (full) or ``mmcv-lite`` distribution.
    """
    supported = supported or SUPPORTED_VERSIONS
    candidates = {
        'mmcv': ['mmcv', 'mmcv-lite', 'mmcv-full'],
        'mmengine': ['mmengine', 'mmengine-lite'],
        'mmsegmentation': ['mmsegmentation'],
    }
    problems = []
    for key, (low, high) in supported.items():
        dist, found = _installed_version(candidates.get(key, [key]))
        wanted = f'{key}>={low},<{high}'
        if found is None:
            problems.append(f'{key} is not installed (need {wanted})')
            continue
        version = _parse_version(found)
        if not (_parse_version(low) <= version < _parse_version(high)):
            problems.append(f'{dist}=={found} is installed but lpd_mmseg '
                            f'needs {wanted}')
    if importlib.util.find_spec('pkg_resources') is None:
        problems.append(
            'pkg_resources is missing (setuptools>=81 removed it); mmengine '
            "needs it to resolve 'mmseg::' config bases: "
            "pip install 'setuptools<81'")
    if problems:
        raise IncompatibleEnvironmentError(
            'lpd_mmseg cannot run in this environment:\n  - ' +
            '\n  - '.join(problems) +
            '\nSee README.md, section "Installation".')


# --------------------------------------------------------------------------
# 2. mmcv-lite: a truthful placeholder for the compiled extension
# --------------------------------------------------------------------------
class _CompiledOpsPlaceholder(types.ModuleType):
    """Stands in for ``mmcv._ext`` when mmcv was installed without ops.

    Any attribute resolves to a function that raises when called, so
    ``mmcv.utils.ext_loader.load_ext`` (which only checks ``hasattr``) is
    satisfied at import time, and a real call fails loudly.
    """

    is_lpd_mmseg_placeholder = True

    def __getattr__(self, name: str) -> Callable:
        if name.startswith('__'):
            raise AttributeError(name)

        def compiled_op(*args, **kwargs):
            raise MissingCompiledOpError(
                f"mmcv op '{name}' is a compiled CUDA/C++ op, and this "
                'environment has mmcv-lite (no compiled ops). Install full '
                "mmcv ('pip install \"mmcv>=2.0.0rc4,<2.2.0\"', built for "
                'your torch) to use it, or choose a model without it.')

        compiled_op.__name__ = name
        compiled_op.__qualname__ = name
        return compiled_op


def has_compiled_mmcv_ops() -> bool:
    """True when a real compiled ``mmcv._ext`` is importable."""
    module = sys.modules.get('mmcv._ext')
    if module is not None:
        return not getattr(module, 'is_lpd_mmseg_placeholder', False)
    try:
        return importlib.util.find_spec('mmcv._ext') is not None
    except (ImportError, ValueError):
        return False


def install_mmcv_ext_placeholder() -> bool:
    """Register the placeholder unless a real ``mmcv._ext`` exists.

    Returns True when the placeholder is (now) in place.  The module carries
    a ``ModuleSpec`` without a loader so that mmengine's
    ``mmcv_full_available()`` keeps answering False.
    """
    if has_compiled_mmcv_ops():
        return False
    if 'mmcv._ext' not in sys.modules:
        placeholder = _CompiledOpsPlaceholder('mmcv._ext')
        placeholder.__spec__ = importlib.machinery.ModuleSpec(
            'mmcv._ext', loader=None)
        sys.modules['mmcv._ext'] = placeholder
        import mmcv
        mmcv._ext = placeholder
    return True


# --------------------------------------------------------------------------
# 3. checkpoints under torch.load(weights_only=True)
# --------------------------------------------------------------------------
def _history_buffer_getattr(obj, name):
    """Restricted stand-in for ``builtins.getattr`` inside checkpoints.

    A pickled ``HistoryBuffer`` stores its statistics methods as
    ``getattr(HistoryBuffer, 'mean')`` and friends.  Only that lookup is
    allowed; any other use of ``getattr`` in a pickle is refused.
    """
    import pickle

    from mmengine.logging.history_buffer import HistoryBuffer
    if obj is HistoryBuffer and isinstance(name, str) and \
            not name.startswith('_') and \
            callable(getattr(HistoryBuffer, name, None)):
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'checkpoint asks for getattr({obj!r}, {name!r}); only '
        'HistoryBuffer statistics methods are allowed')


def checkpoint_safe_globals() -> List:
    """The exact globals found in mmengine checkpoints, as accepted by
    :func:`torch.serialization.add_safe_globals`."""
    import numpy as np
    from mmengine.logging.history_buffer import HistoryBuffer

    try:  # numpy >= 2
        from numpy._core import multiarray
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray
    entries = [HistoryBuffer, np.dtype, np.ndarray,
               (_history_buffer_getattr, 'builtins.getattr')]
    # A checkpoint names numpy's private module as it was when written, so
    # both spellings are accepted on either numpy.
    for module in ('numpy._core.multiarray', 'numpy.core.multiarray'):
        entries.append((multiarray.scalar, f'{module}.scalar'))
        entries.append((multiarray._reconstruct, f'{module}._reconstruct'))
    # Unpickling a dtype builds an instance of its concrete class
    # (numpy.dtypes.Float64DType, ...), which must be allowed too.
    dtype_classes = getattr(np, 'dtypes', None)
    if dtype_classes is not None:
        for name in dir(dtype_classes):
            cls = getattr(dtype_classes, name)
            if isinstance(cls, type) and issubclass(cls, np.dtype):
                entries.append(cls)
    return entries


def allow_mmengine_checkpoint_globals() -> bool:
    """Allow-list the checkpoint globals; False on torch without the API."""
    import torch
    add = getattr(torch.serialization, 'add_safe_globals', None)
    if add is None:
        return False
    add(checkpoint_safe_globals())
    return True


def quiet_pkg_resources_warning() -> None:
    """Hide setuptools' deprecation notice for ``pkg_resources``, which
    mmengine imports to resolve ``mmseg::`` config bases; the pin
    ``setuptools<81`` keeps it working, so the notice is noise."""
    import warnings
    warnings.filterwarnings(
        'ignore', message='pkg_resources is deprecated as an API',
        category=UserWarning)


# --------------------------------------------------------------------------
# 4. distributed runs on CPU
# --------------------------------------------------------------------------
def _accelerator_present() -> bool:
    import torch
    from mmengine.device import (
        is_mlu_available,
        is_musa_available,
        is_npu_available,
    )
    return torch.cuda.is_available() or is_npu_available() or \
        is_mlu_available() or is_musa_available()


def _has_cuda_tensors(module) -> bool:
    return any(t.is_cuda for t in module.parameters()) or \
        any(t.is_cuda for t in module.buffers())


def enable_cpu_distributed() -> bool:
    """Patch mmengine's torchrun set-up and DDP wrapper for CPU-only
    machines; returns True when (now) patched.

    * ``mmengine.dist.utils._init_dist_pytorch``: without an accelerator,
      skip ``torch.cuda.set_device`` and use gloo where ``nccl`` (which
      needs CUDA) was asked for.
    * ``MMDistributedDataParallel``: for a model without CUDA tensors drop
      ``device_ids``/``output_device``, which DDP refuses for CPU modules.
    """
    from mmengine.dist import utils as dist_utils
    from mmengine.model import MMDistributedDataParallel
    original_init = dist_utils._init_dist_pytorch
    if getattr(original_init, 'lpd_cpu_aware', False):
        return True

    def init_dist_pytorch(backend, init_backend='torch', **kwargs):
        if _accelerator_present() or init_backend != 'torch':
            return original_init(backend, init_backend=init_backend,
                                 **kwargs)
        import torch.distributed as torch_dist
        if backend == 'nccl':
            backend = 'gloo'
        torch_dist.init_process_group(backend=backend, **kwargs)

    init_dist_pytorch.lpd_cpu_aware = True
    dist_utils._init_dist_pytorch = init_dist_pytorch

    original_ddp = MMDistributedDataParallel.__init__

    def ddp_init(self, module, *args, **kwargs):
        if kwargs.get('device_ids') is not None and \
                not _has_cuda_tensors(module):
            kwargs['device_ids'] = None
            kwargs.pop('output_device', None)
        original_ddp(self, module, *args, **kwargs)

    MMDistributedDataParallel.__init__ = ddp_init
    return True


def fix_weighted_cross_entropy() -> bool:
    """Let mmseg's cross-entropy take class weights and ignored pixels
    together; returns True when (now) patched.

    mmseg 1.x computes the mean's divisor as ``class_weight[label]`` over
    every pixel, so a label holding ``ignore_index`` (255: padding, or
    pseudo-mask pixels left unlabelled) with ``class_weight`` set raises
    ``IndexError``.  The patched function passes that divisor itself: the
    class weights of the labelled pixels, plus 1 per ignored pixel when
    ``avg_non_ignore`` is False (mmseg's "average over all pixels").  Every
    other case goes to mmseg's function unchanged.
    """
    from mmseg.models.losses import cross_entropy_loss as ce_module
    original = ce_module.cross_entropy
    if getattr(original, 'lpd_ignore_aware', False):
        return True

    def cross_entropy(pred, label, weight=None, class_weight=None,
                      reduction='mean', avg_factor=None, ignore_index=-100,
                      avg_non_ignore=False):
        if class_weight is not None and avg_factor is None and \
                reduction == 'mean':
            avg_factor = weighted_label_count(label, class_weight,
                                              ignore_index, avg_non_ignore)
        return original(pred, label, weight=weight,
                        class_weight=class_weight, reduction=reduction,
                        avg_factor=avg_factor, ignore_index=ignore_index,
                        avg_non_ignore=avg_non_ignore)

    cross_entropy.lpd_ignore_aware = True
    ce_module.cross_entropy = cross_entropy
    return True


def weighted_label_count(label, class_weight, ignore_index: int,
                         avg_non_ignore: bool = False):
    """Divisor of a class-weighted mean cross-entropy.

    Args:
        label (Tensor): ``(N, H, W)`` integer labels.
        class_weight (Tensor): ``(C,)`` weights.
        ignore_index (int): label value that carries no loss.
        avg_non_ignore (bool): count the labelled pixels only; when False
            each ignored pixel adds 1 (mmseg's average over all pixels).

    Returns:
        Tensor: scalar, ``sum(class_weight[label])`` over the labelled
        pixels, plus the number of ignored ones unless ``avg_non_ignore``.
    """
    valid = label != ignore_index
    weights = class_weight[label.masked_fill(~valid, 0).long()]
    total = (weights * valid).sum()
    if not avg_non_ignore:
        total = total + (~valid).sum()
    return total


_APPLIED = False


def apply_compat() -> None:
    """Run all fixes once.  Called by ``import lpd_mmseg``."""
    global _APPLIED
    if _APPLIED:
        return
    check_versions()
    quiet_pkg_resources_warning()
    install_mmcv_ext_placeholder()
    allow_mmengine_checkpoint_globals()
    enable_cpu_distributed()
    fix_weighted_cross_entropy()
    _APPLIED = True
