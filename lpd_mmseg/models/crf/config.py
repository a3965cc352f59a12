"""``test_cfg.crf`` parsed once into a callable :class:`DenseCRF`."""
import dataclasses
import math
from numbers import Real
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from ..gating import allowed_mask
from ..utils.config_checks import check_choice, reject_unknown_keys
from .params import DenseCRFParams, check_positive_int
from .reference import dense_crf_pydensecrf, import_pydensecrf
from .torch_backend import CRFMemoryError, dense_crf_torch

__all__ = ['DenseCRF', 'build_crf', 'allowed_channels', 'restrict_probs',
           'CRF_BACKENDS', 'TORCH_OPTIONS', 'DEFAULT_MAX_MEMORY_GB']

CRF_BACKENDS = ('torch', 'pydensecrf')
TORCH_OPTIONS = ('chunk_size', 'max_memory_gb')
#: Options of the local-window solver that the lattice replaced.
REMOVED_OPTIONS = ('truncate', 'downsample')
#: Default ``test_cfg.crf.max_memory_gb``: the torch backend refuses an
#: image whose estimated peak memory is larger.
DEFAULT_MAX_MEMORY_GB = 4.0


def allowed_channels(gate: Tensor, shape) -> Tensor:
    """0/1 mask ``(C + 1, H, W)`` of the channels a pixel may take: the
    gated-in tissue classes and, always, the background channel ``C``.

    Args:
        gate (Tensor): ``(C,)`` or ``(C, H, W)`` class presence.
        shape: ``(C + 1, H, W)`` of the scores.

    One image of :func:`~lpd_mmseg.models.gating.allowed_mask`, as float.
    """
    return allowed_mask(gate[None], (1, *shape))[0].float()


def restrict_probs(probs: Tensor, allowed: Optional[Tensor]) -> Tensor:
    """Zero the probabilities of disallowed channels and renormalise.

    Args:
        probs (Tensor): ``(C, H, W)`` probabilities.
        allowed (Tensor, optional): ``(C, H, W)`` 0/1 mask; None keeps all.
    """
    if allowed is None:
        return probs
    probs = probs * allowed.to(probs)
    return probs / probs.sum(dim=0, keepdim=True).clamp_min(1e-12)


@dataclasses.dataclass(frozen=True)
class DenseCRF:
    """A validated ``test_cfg.crf``: backend, parameters and options.

    Build it with :func:`build_crf`; call it on one image's scores.

    Attributes:
        backend: ``'torch'`` or ``'pydensecrf'``.
        params: The CRF parameters.
        chunk_size: Torch backend: images refined together (None: auto).
        max_memory_gb: Torch backend: largest estimated peak memory, in
            GiB, before an image is refused.
    """
    backend: str
    params: DenseCRFParams = DenseCRFParams()
    chunk_size: Optional[int] = None
    max_memory_gb: float = DEFAULT_MAX_MEMORY_GB

    def refine(self, probs: Tensor, image: Tensor) -> Tensor:
        """Refine one image's class probabilities.

        Args:
            probs (Tensor): ``(C, H, W)`` probabilities.
            image (Tensor): ``(3, H, W)`` pixel values in 0..255.

        Returns:
            Tensor: ``(C, H, W)`` refined probabilities, on ``probs``'
            device.
        """
        if self.backend == 'torch':
            try:
                return dense_crf_torch(
                    probs[None], image[None].to(probs.device), self.params,
                    chunk_size=self.chunk_size,
                    max_bytes=int(self.max_memory_gb * 2**30))[0]
            except CRFMemoryError as err:
                raise ValueError(self._memory_message(
                    probs.shape, err.needed)) from err
        rgb = image.detach().round().clamp(0, 255).byte().permute(1, 2, 0)
        refined = dense_crf_pydensecrf(
            probs.detach().float().cpu().numpy(),
            np.ascontiguousarray(rgb.cpu().numpy()), self.params)
        return torch.from_numpy(refined).to(probs.device)

    def _memory_message(self, shape, needed: int) -> str:
        """What to do about an image over ``max_memory_gb``."""
        height, width = int(shape[-2]), int(shape[-1])
        return (
            f'the torch CRF on a {width}x{height} image needs about '
            f'{needed / 2**30:.3g} GiB (estimated before allocating), more '
            f'than test_cfg.crf.max_memory_gb='
            f"{self.max_memory_gb}. Use crf=dict(backend='pydensecrf'), "
            'refine smaller regions (memory grows linearly with the pixels), '
            'no CRF (crf=None / --crf none), or raise max_memory_gb if the '
            'device has the memory.')

    def __call__(self, scores: Tensor, image: Tensor,
                 gate: Optional[Tensor] = None) -> Tensor:
        """Dense CRF on the softmax of ``(C + 1, H, W)`` scores.

        A gated-out class keeps probability 0 before and after the CRF (a
        score of 0 would otherwise still get a softmax share, and the CRF
        could make it win), so gating means the same with and without it.

        Args:
            scores (Tensor): ``(C + 1, H, W)`` class scores, background last.
            image (Tensor): ``(3, H, W)`` pixel values in 0..255.
            gate (Tensor, optional): ``(C,)`` or ``(C, H, W)`` class
                presence; None allows every class.

        Returns:
            Tensor: log-probabilities ``(C + 1, H, W)`` in ``scores``' dtype.
        """
        allowed = None if gate is None else allowed_channels(
            gate.to(scores.device), scores.shape)
        probs = restrict_probs(torch.softmax(scores.float(), dim=0), allowed)
        refined = restrict_probs(self.refine(probs, image), allowed)
        return refined.clamp_min(1e-8).log().to(scores.dtype)


def build_crf(cfg) -> Optional[DenseCRF]:
    """Validate a ``test_cfg.crf`` dict into a :class:`DenseCRF`.

    ``None`` or ``backend=None`` means no CRF.  Other keys are the fields of
    :class:`DenseCRFParams` (paper defaults) and, for the torch backend,
    ``chunk_size`` and ``max_memory_gb`` (default
    :data:`DEFAULT_MAX_MEMORY_GB`).

    Returns:
        DenseCRF | None: None when no CRF is configured.

    Raises:
        TypeError: unknown keys (with the closest known one).
        ValueError: a bad backend, option or parameter, naming the key.
        ImportError: backend ``'pydensecrf'`` without the package.
    """
    if cfg is None:
        return None
    cfg = dict(cfg)
    backend = cfg.pop('backend', None)
    if backend is None:
        return None
    check_choice('test_cfg.crf.backend', backend, CRF_BACKENDS)
    removed = sorted(k for k in REMOVED_OPTIONS if k in cfg)
    if removed:
        raise ValueError(
            f'test_cfg.crf options {removed} belonged to the local-window '
            'solver, which the permutohedral lattice replaced; the lattice '
            'has no approximation settings: remove them')
    fields = {f.name for f in dataclasses.fields(DenseCRFParams)}
    known = fields | set(TORCH_OPTIONS)
    reject_unknown_keys('test_cfg.crf',
                        {k: v for k, v in cfg.items() if k not in known},
                        known | {'backend'})
    options = {k: cfg.pop(k) for k in TORCH_OPTIONS if k in cfg}
    if options and backend != 'torch':
        raise ValueError(f'test_cfg.crf options {sorted(options)} only apply '
                         "to backend='torch'")
    if 'chunk_size' in options:
        check_positive_int('test_cfg.crf.chunk_size', options['chunk_size'])
    limit = options.get('max_memory_gb', DEFAULT_MAX_MEMORY_GB)
    if (isinstance(limit, bool) or not isinstance(limit, Real)
            or not math.isfinite(limit) or limit <= 0):
        raise ValueError('test_cfg.crf.max_memory_gb must be a finite number '
                         f'> 0 (GiB), got {limit!r}')
    params = DenseCRFParams(**cfg)
    if backend == 'pydensecrf':
        import_pydensecrf()  # fail now, with the install hint
    return DenseCRF(backend, params, **options)
