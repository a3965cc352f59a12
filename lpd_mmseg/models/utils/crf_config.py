"""Reading ``test_cfg.crf`` and running the chosen CRF backend on one
image (glue between the segmentor and :mod:`lpd_mmseg.models.crf`)."""
import dataclasses
import math
from numbers import Real
from typing import Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from .config_checks import check_choice, reject_unknown_keys

CRF_BACKENDS = ('torch', 'pydensecrf')
TORCH_OPTIONS = ('truncate', 'downsample', 'chunk_size', 'max_memory_gb')
#: Default ``test_cfg.crf.max_memory_gb``: the torch backend refuses images
#: whose estimated peak memory is larger (at the default settings about
#: 1.1 Mpx, e.g. 1050x1050).
DEFAULT_MAX_MEMORY_GB = 4.0


def crf_options(cfg) -> Optional[Tuple[str, object, dict]]:
    """Validate a ``test_cfg.crf`` dict.

    ``None`` or ``backend=None`` means no CRF.  Other keys are the fields of
    :class:`~lpd_mmseg.models.crf.DenseCRFParams` (paper defaults) and, for
    the torch backend, its approximation options and ``max_memory_gb``
    (largest estimated peak memory, in GiB, before an image is refused;
    default :data:`DEFAULT_MAX_MEMORY_GB`).

    Returns:
        tuple | None: ``(backend, params, torch_options)``.
    """
    from ..crf import (
        DEFAULT_DOWNSAMPLE,
        DEFAULT_TRUNCATE,
        DenseCRFParams,
        _check_knobs,
        _import_pydensecrf,
    )
    if cfg is None:
        return None
    cfg = dict(cfg)
    backend = cfg.pop('backend', None)
    if backend is None:
        return None
    check_choice('test_cfg.crf.backend', backend, CRF_BACKENDS)
    fields = {f.name for f in dataclasses.fields(DenseCRFParams)}
    reject_unknown_keys(
        'test_cfg.crf',
        {k: v for k, v in cfg.items() if k not in fields | set(TORCH_OPTIONS)},
        fields | set(TORCH_OPTIONS) | {'backend'})
    options = {k: cfg.pop(k) for k in TORCH_OPTIONS if k in cfg}
    if options and backend != 'torch':
        raise ValueError(f'test_cfg.crf options {sorted(options)} only apply '
                         "to backend='torch'")
    _check_knobs(options.get('truncate', DEFAULT_TRUNCATE),
                 options.get('downsample', DEFAULT_DOWNSAMPLE),
                 options.get('chunk_size'))
    limit = options.get('max_memory_gb', DEFAULT_MAX_MEMORY_GB)
    if (isinstance(limit, bool) or not isinstance(limit, Real)
            or not math.isfinite(limit) or limit <= 0):
        raise ValueError('test_cfg.crf.max_memory_gb must be a finite number '
                         f'> 0 (GiB), got {limit!r}')
    params = DenseCRFParams(**cfg).validate()
    if backend == 'pydensecrf':
        _import_pydensecrf()  # fail now, with the install hint
    return backend, params, options


def apply_crf(probs: Tensor, image: Tensor, cfg) -> Tensor:
    """Refine one image's class probabilities.

    Args:
        probs (Tensor): ``(C, H, W)`` probabilities.
        image (Tensor): ``(3, H, W)`` pixel values in 0..255.
        cfg: ``test_cfg.crf``.

    Returns:
        Tensor: ``(C, H, W)`` refined probabilities, on ``probs``' device.
    """
    from ..crf import dense_crf_pydensecrf, dense_crf_torch
    options = crf_options(cfg)
    if options is None:
        return probs
    backend, params, knobs = options
    if backend == 'torch':
        knobs = dict(knobs)
        limit = knobs.pop('max_memory_gb', DEFAULT_MAX_MEMORY_GB)
        check_torch_crf_memory(probs.shape, params, knobs, limit,
                               probs.device)
        return dense_crf_torch(probs[None], image[None].to(probs.device),
                               params, **knobs)[0]
    rgb = image.detach().round().clamp(0, 255).byte().permute(1, 2, 0)
    refined = dense_crf_pydensecrf(
        probs.detach().float().cpu().numpy(),
        np.ascontiguousarray(rgb.cpu().numpy()), params)
    return torch.from_numpy(refined).to(probs.device)


def check_torch_crf_memory(shape, params, knobs: dict, limit_gb: float,
                           device=None) -> None:
    """Refuse an image the torch CRF would need more than ``limit_gb`` GiB
    for (estimate of :func:`~lpd_mmseg.models.crf.dense_crf_torch_bytes`),
    instead of running out of memory part-way.

    Args:
        shape: ``(C, H, W)`` of the probabilities.
        params: :class:`~lpd_mmseg.models.crf.DenseCRFParams`.
        knobs (dict): ``truncate``, ``downsample`` (torch options).
        limit_gb (float): ``test_cfg.crf.max_memory_gb``.
        device: where the CRF runs (CUDA filters by row, which needs more).

    Raises:
        ValueError: the estimate exceeds the limit; says what to change.
    """
    from ..crf import (
        DEFAULT_DOWNSAMPLE,
        DEFAULT_TRUNCATE,
        dense_crf_torch_bytes,
    )
    channels, height, width = (int(v) for v in shape)
    truncate = knobs.get('truncate', DEFAULT_TRUNCATE)
    downsample = knobs.get('downsample', DEFAULT_DOWNSAMPLE)
    by_row = device is not None and torch.device(device).type == 'cuda'
    needed = dense_crf_torch_bytes(height, width, channels, params,
                                   truncate=truncate, downsample=downsample,
                                   by_row=by_row)
    if needed <= limit_gb * 2**30:
        return
    raise ValueError(
        f"the torch CRF on a {width}x{height} image needs about "
        f'{needed / 2**30:.1f} GiB (truncate={truncate}, '
        f'downsample={downsample}), more than test_cfg.crf.max_memory_gb='
        f"{limit_gb}. Use crf=dict(backend='pydensecrf') (its memory grows "
        'with the pixels only), a larger downsample (doubling it quarters '
        'the bilateral weights), no CRF (crf=None / --crf none), or raise '
        'max_memory_gb if the device has the memory.')


def allowed_channels(gate: Tensor, shape) -> Tensor:
    """0/1 mask ``(C + 1, H, W)`` of the channels a pixel may take: the
    gated-in tissue classes and, always, the background channel ``C``.

    Args:
        gate (Tensor): ``(C,)`` or ``(C, H, W)`` class presence.
        shape: ``(C + 1, H, W)`` of the scores.
    """
    channels, height, width = shape
    if gate.dim() == 1:
        gate = gate[:, None, None]
    allowed = torch.ones(channels, height, width, device=gate.device)
    allowed[:channels - 1] = (gate > 0).float().expand(channels - 1, height,
                                                       width)
    return allowed


def restrict_probs(probs: Tensor, allowed: Optional[Tensor]) -> Tensor:
    """Zero the probabilities of disallowed channels and renormalise."""
    if allowed is None:
        return probs
    probs = probs * allowed.to(probs)
    return probs / probs.sum(dim=0, keepdim=True).clamp_min(1e-12)


def crf_scores(scores: Tensor, image: Tensor, cfg,
               gate: Optional[Tensor] = None) -> Tensor:
    """Dense CRF on the softmax of ``(C + 1, H, W)`` scores.

    A gated-out class keeps probability 0 before and after the CRF (a score
    of 0 would otherwise still get a softmax share, and the CRF could make it
    win), so gating means the same with and without the CRF.

    Returns:
        Tensor: log-probabilities ``(C + 1, H, W)``.
    """
    allowed = None if gate is None else allowed_channels(
        gate.to(scores.device), scores.shape)
    probs = restrict_probs(torch.softmax(scores.float(), dim=0), allowed)
    refined = restrict_probs(apply_crf(probs, image, cfg), allowed)
    return refined.clamp_min(1e-8).log().to(scores.dtype)
