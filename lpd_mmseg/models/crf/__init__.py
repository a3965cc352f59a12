"""Dense CRF refinement of class probability maps (docs/crf.md).

Two backends solve the same fully connected CRF (Kraehenbuehl & Koltun,
2011) with a Potts label compatibility:

* ``'torch'`` (:func:`dense_crf_torch`): batched mean-field inference in
  plain PyTorch, CPU or CUDA, both kernels filtered on a permutohedral
  lattice (:class:`PermutohedralLattice`, Adams, Baek & Davis 2010).
* ``'pydensecrf'`` (:func:`dense_crf_pydensecrf`): the reference code, an
  optional compiled extra, one image at a time on the CPU.

Energy shared by both backends, for pixel ``i`` and label ``l``::

    unary     U_i(l) = -log(max(p_i(l), 1e-5))
    messages  M_i(l) = sum_k w_k * (Kn_k Q(l))_i
    update    Q_i(l) = softmax_l(-U_i(l) + M_i(l))

``k`` runs over the paper's two kernels: a Gaussian on the pixel position
(``gaussian_sxy``, weight ``gaussian_compat``) and a bilateral kernel on
position and RGB colour (``bilateral_sxy``, ``bilateral_srgb``,
``bilateral_compat``).  Adding ``+ w_k (Kn_k Q)(l)`` to the logits charges
``w_k`` times the kernel weight of every neighbour that takes another label
(the Potts model), up to a per-pixel constant that the softmax removes.

Both normalise symmetrically: with the raw lattice filter ``K`` (the pixel
itself included) and ``d = K 1``, ``Kn = D^-1/2 K D^-1/2``.  In a flat
interior ``Kn`` is a weighted average (rows sum to about 1), so ``compat``
bounds the logit change of a term; near the border rows sum to less, so the
terms are weaker there.  The lattice's impulse response has an RMS radius
within a few percent of the nominal standard deviation.

Entry point for configs: :func:`build_crf` turns ``test_cfg.crf`` into a
:class:`DenseCRF` once; ``crf(scores, image, gate)`` refines one image.
:func:`crf_refine` refines one probability map with either backend.
"""
from typing import Optional, Union

import numpy as np
import torch

from .config import (
    CRF_BACKENDS,
    DEFAULT_MAX_MEMORY_GB,
    DenseCRF,
    allowed_channels,
    build_crf,
    restrict_probs,
)
from .lattice import PermutohedralLattice
from .params import UNARY_CLIP, DenseCRFParams
from .reference import (
    PYDENSECRF_INSTALL_HINT,
    dense_crf_pydensecrf,
    import_pydensecrf,
)
from .torch_backend import (
    CRFMemoryError,
    dense_crf_torch,
    dense_crf_torch_bytes,
    unary_from_probs,
)

__all__ = [
    'DenseCRFParams', 'DenseCRF', 'build_crf', 'crf_refine',
    'dense_crf_torch', 'dense_crf_torch_bytes', 'dense_crf_pydensecrf',
    'import_pydensecrf', 'PermutohedralLattice', 'CRFMemoryError',
    'unary_from_probs', 'allowed_channels', 'restrict_probs', 'UNARY_CLIP',
    'CRF_BACKENDS', 'DEFAULT_MAX_MEMORY_GB', 'PYDENSECRF_INSTALL_HINT'
]

ArrayOrTensor = Union[np.ndarray, torch.Tensor]


def _as_tensor(x: ArrayOrTensor) -> torch.Tensor:
    """Wrap a numpy array as a tensor; pass tensors through."""
    if isinstance(x, torch.Tensor):
        return x
    return torch.from_numpy(np.ascontiguousarray(x))


def crf_refine(probs: ArrayOrTensor,
               image: ArrayOrTensor,
               params: Optional[DenseCRFParams] = None,
               backend: str = 'torch',
               **kwargs) -> torch.Tensor:
    """Refine the probability map of one image with either backend.

    Args:
        probs: (C, H, W) class probabilities, tensor or array.
        image: (H, W, 3) uint8 RGB image, tensor or array.
        params: CRF parameters; None means the paper defaults.
        backend: ``'torch'`` (:func:`dense_crf_torch`) or ``'pydensecrf'``
            (:func:`dense_crf_pydensecrf`).
        **kwargs: Options passed to :func:`dense_crf_torch`
            (``chunk_size``, ``max_bytes``); not accepted by pydensecrf.

    Returns:
        torch.Tensor: (C, H, W) float32 refined probabilities on the device of
        ``probs`` (CPU for a numpy input).
    """
    params = DenseCRFParams() if params is None else params
    probs_t, image_t = _as_tensor(probs), _as_tensor(image)
    if probs_t.dim() != 3:
        raise ValueError(
            f'probs must have shape (C, H, W), got {tuple(probs_t.shape)}')
    if image_t.dtype != torch.uint8:
        raise TypeError(f'image must be uint8 RGB, got dtype {image_t.dtype}')
    if image_t.dim() != 3 or image_t.shape[2] != 3:
        raise ValueError(
            f'image must have shape (H, W, 3), got {tuple(image_t.shape)}')
    if backend == 'torch':
        images = image_t.permute(2, 0, 1).unsqueeze(0)
        return dense_crf_torch(probs_t.unsqueeze(0), images, params,
                               **kwargs)[0]
    if backend == 'pydensecrf':
        if kwargs:
            raise TypeError('the pydensecrf backend takes no settings, '
                            f'got {sorted(kwargs)}')
        refined = dense_crf_pydensecrf(probs_t.detach().cpu().float().numpy(),
                                       image_t.detach().cpu().numpy(), params)
        return torch.from_numpy(refined).to(probs_t.device)
    raise ValueError(
        f"backend must be 'torch' or 'pydensecrf', got {backend!r}")
