"""Python inference API: load a trained segmentor safely and strictly, run
it on images, and read out CAMs and prototype maps."""
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from mmengine.config import Config
from mmengine.dataset import Compose, pseudo_collate
from torch import Tensor

from .checkpoint import (
    _state_dict_of,
    check_checkpoint_matches,
    safe_load_checkpoint,
)

ImageInput = Union[str, np.ndarray]


def init_segmentor(config: Union[str, Config],
                   checkpoint: Optional[str] = None,
                   device: str = 'cpu',
                   cfg_options: Optional[dict] = None):
    """Build a segmentor from a config and load a checkpoint.

    Unlike ``mmseg.apis.init_model`` the checkpoint must match the model
    exactly (:class:`~lpd_mmseg.apis.CheckpointMismatchError` otherwise), and
    it is read with ``weights_only=True``
    (:class:`~lpd_mmseg.apis.UnsafeCheckpointError` for a pickle that could
    run code).  Backbone pre-training URLs in the config are not fetched.
    """
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    cfg = Config.fromfile(config) if isinstance(config, str) else config
    cfg = cfg.copy()
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    cfg.model.pretrained = None
    cfg.model.train_cfg = None
    backbone = cfg.model.get('backbone', {})
    if isinstance(backbone, dict):
        backbone['init_cfg'] = None
    model = MODELS.build(cfg.model)
    model.cfg = cfg
    meta = {}
    if checkpoint is not None:
        loaded = safe_load_checkpoint(checkpoint)
        check_checkpoint_matches(model, loaded, source=checkpoint)
        model.load_state_dict(_state_dict_of(loaded))
        meta = loaded.get('meta', {}) if isinstance(loaded, dict) else {}
    dataset_meta = meta.get('dataset_meta')
    if dataset_meta is None:
        dataset_type = cfg.get('test_dataloader', {}).get('dataset', {}).get(
            'type')
        from mmseg.registry import DATASETS
        cls = DATASETS.get(dataset_type) if dataset_type else None
        dataset_meta = dict(getattr(cls, 'METAINFO', {})) if cls else {}
    model.dataset_meta = dataset_meta
    model.to(device)
    model.eval()
    return model


#: Smallest image side accepted: MiT's first stage (stride 4) reduces its
#: keys by 8 (``sr_ratio``), so a side under 32 px fails in the backbone.
MIN_IMAGE_SIDE = 32
CHANNEL_ORDERS = ('bgr', 'rgb')


def _where(index: int, img) -> str:
    return f'image {index} ({img})' if isinstance(img, str) else \
        f'image {index} (array)'


def check_image_array(img: np.ndarray, where: str = 'image',
                      channel_order: str = 'bgr') -> np.ndarray:
    """Validate one image array and return it as ``(H, W, 3)`` ``uint8``
    in BGR order (what the model sees for an image file).

    Accepted: ``uint8`` arrays of shape ``(H, W, 3)``, ``(H, W, 1)`` or
    ``(H, W)`` (grey, repeated to three channels).  Any other dtype is
    refused, never rescaled by guesswork: the message says how to convert
    explicitly.  NaN is refused.
    """
    if channel_order not in CHANNEL_ORDERS:
        raise ValueError(f'channel_order must be one of {CHANNEL_ORDERS}, '
                         f'got {channel_order!r}')
    if np.issubdtype(img.dtype, np.floating) and np.isnan(img).any():
        raise ValueError(f'{where} contains NaN values; expected uint8 '
                         'pixel values 0..255')
    if img.dtype != np.uint8:
        hints = {
            'f': '(img * 255).round().astype(np.uint8) for values in '
                 '[0, 1], img.round().clip(0, 255).astype(np.uint8) for '
                 'values in 0..255',
            'u': '(img // 257).astype(np.uint8) for 16-bit images',
        }
        hint = hints.get(img.dtype.kind, 'img.astype(np.uint8) if the '
                         'values are already 0..255')
        raise TypeError(f'{where} has dtype {img.dtype}; expected uint8 '
                        f'pixel values 0..255. Convert explicitly, e.g. '
                        f'{hint}')
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f'{where}: image array must be (H, W, 3) or '
                         f'(H, W), got shape {img.shape}')
    if channel_order == 'rgb':
        img = np.ascontiguousarray(img[..., ::-1])
    return img


def _pipeline(cfg: Config, from_array: bool) -> Compose:
    pipeline = [dict(t) for t in cfg.test_pipeline]
    # Keep the image loading and packing steps; masks are not needed.
    pipeline = [t for t in pipeline
                if t['type'] not in ('LoadAnnotations',
                                     'LoadHistoAnnotations')]
    if from_array:
        pipeline[0] = dict(type='LoadImageFromNDArray')
    return Compose(pipeline)


def _as_list(images) -> list:
    if isinstance(images, (str, np.ndarray)):
        return [images]
    images = list(images)
    if not images:
        raise ValueError('no images given')
    return images


def prepare_items(model, images: Sequence[ImageInput],
                  channel_order: str = 'bgr') -> List[dict]:
    """Check each image and run the config's test pipeline on it.

    ``images``: file paths and/or ``uint8`` arrays, mixed freely (see
    :func:`check_image_array`; ``channel_order`` applies to arrays only,
    files are read as BGR).  Every side must be at least
    :data:`MIN_IMAGE_SIDE` pixels.  Errors name the image.
    """
    pipelines = {}
    items = []
    for index, img in enumerate(_as_list(images)):
        where = _where(index, img)
        from_array = isinstance(img, np.ndarray)
        if from_array:
            results = dict(img=check_image_array(img, where, channel_order))
        elif isinstance(img, str):
            results = dict(img_path=img)
        else:
            raise TypeError(f'{where}: expected a file path or a numpy '
                            f'array, got {type(img).__name__}')
        if from_array not in pipelines:
            pipelines[from_array] = _pipeline(model.cfg, from_array)
        try:
            item = pipelines[from_array](results)
        except Exception as e:
            raise ValueError(f'{where} could not be loaded: '
                             f'{type(e).__name__}: {e}') from e
        height, width = item['inputs'].shape[-2:]
        if min(height, width) < MIN_IMAGE_SIDE:
            raise ValueError(
                f'{where} is {width}x{height} px; every side must be at '
                f'least {MIN_IMAGE_SIDE} px (MIN_IMAGE_SIDE). Cut larger '
                'patches, or pad the image yourself.')
        items.append(item)
    return items


def prepare_batch(model, images: Sequence[ImageInput],
                  channel_order: str = 'bgr') -> dict:
    """Run the test pipeline and the model's data preprocessor on images of
    one size (:func:`predict` also takes mixed sizes).

    ``images`` are file paths or ``uint8`` arrays (BGR as ``cv2.imread``
    gives, or RGB with ``channel_order='rgb'``); a grey-scale image is
    expanded to three channels.
    """
    items = prepare_items(model, images, channel_order)
    sizes = sorted({tuple(item['inputs'].shape[-2:]) for item in items})
    if len(sizes) > 1:
        raise ValueError(
            f'the images have {len(sizes)} different sizes ({sizes}); one '
            'batch needs one size. predict() takes mixed sizes.')
    return model.data_preprocessor(pseudo_collate(items), False)


@torch.no_grad()
def predict(model, images: Sequence[ImageInput], channel_order: str = 'bgr'):
    """Segment images; returns ``SegDataSample`` objects with
    ``pred_sem_seg`` (values ``0..C``, ``C`` = background) and
    ``seg_logits``, in the order given.

    ``images``: one or a list of file paths and/or ``uint8`` arrays (BGR by
    default, ``channel_order='rgb'`` for RGB arrays), of any sizes of at
    least :data:`MIN_IMAGE_SIDE` px; images of one size run as one batch,
    each image is predicted as it would be alone.
    """
    from ..engine.loops import size_groups
    items = prepare_items(model, images, channel_order)
    results: list = [None] * len(items)
    for group in size_groups([tuple(i['inputs'].shape) for i in items]):
        data = model.data_preprocessor(
            pseudo_collate([items[i] for i in group]), False)
        for i, sample in zip(group, model.predict(data['inputs'],
                                                  data['data_samples'])):
            results[i] = sample
    return results


@torch.no_grad()
def prototype_maps(model, images: Sequence[ImageInput], stage: int = -1
                   ) -> Tuple[Tensor, Tensor, List[dict]]:
    """Per-prototype cosine similarity maps of one used stage, for images
    of one size (checked as in :func:`predict`).

    Returns:
        tuple: ``similarity (B, C*k, h, w)``, the preprocessed inputs
        ``(B, 3, H, W)`` and the image metas.
    """
    data = prepare_batch(model, images)
    feats = model.extract_feat(data['inputs'])
    similarity = model.decode_head.forward(feats)[stage]
    return similarity, data['inputs'], [s.metainfo for s in
                                        data['data_samples']]
