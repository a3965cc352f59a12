"""Reading ``test_cfg.crf`` and running the chosen CRF backend on one
image (glue between the segmentor and :mod:`lpd_mmseg.models.crf`)."""
import dataclasses
from typing import Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from .config_checks import check_choice, reject_unknown_keys

CRF_BACKENDS = ('torch', 'pydensecrf')
TORCH_OPTIONS = ('truncate', 'downsample', 'chunk_size')


def crf_options(cfg) -> Optional[Tuple[str, object, dict]]:
    """Validate a ``test_cfg.crf`` dict.

    ``None`` or ``backend=None`` means no CRF.  Other keys are the fields of
    :class:`~lpd_mmseg.models.crf.DenseCRFParams` (paper defaults) and, for
    the torch backend, its approximation options.

    Returns:
        tuple | None: ``(backend, params, torch_options)``.
    """
    from ..crf import DenseCRFParams, _import_pydensecrf
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
        return dense_crf_torch(probs[None], image[None].to(probs.device),
                               params, **knobs)[0]
    rgb = image.detach().round().clamp(0, 255).byte().permute(1, 2, 0)
    refined = dense_crf_pydensecrf(
        probs.detach().float().cpu().numpy(),
        np.ascontiguousarray(rgb.cpu().numpy()), params)
    return torch.from_numpy(refined).to(probs.device)


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
