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


def _inference_pipeline(cfg: Config, example: ImageInput) -> Compose:
    pipeline = [dict(t) for t in cfg.test_pipeline]
    # Keep the image loading and packing steps; masks are not needed.
    pipeline = [t for t in pipeline
                if t['type'] not in ('LoadAnnotations',
                                     'LoadHistoAnnotations')]
    if isinstance(example, np.ndarray):
        pipeline[0] = dict(type='LoadImageFromNDArray')
    return Compose(pipeline)


def prepare_batch(model, images: Sequence[ImageInput]) -> dict:
    """Run the config's test pipeline and the model's data preprocessor.

    ``images`` are file paths or BGR ``uint8`` arrays (as ``cv2.imread``
    gives); a grey-scale image is expanded to three channels.
    """
    if not images:
        raise ValueError('no images given')
    pipeline = _inference_pipeline(model.cfg, images[0])
    items = []
    for img in images:
        if isinstance(img, np.ndarray):
            if img.ndim == 2:
                img = np.repeat(img[..., None], 3, axis=2)
            if img.ndim != 3 or img.shape[2] != 3:
                raise ValueError(f'image array must be (H, W, 3) or (H, W), '
                                 f'got shape {img.shape}')
            items.append(pipeline(dict(img=img)))
        else:
            items.append(pipeline(dict(img_path=img)))
    return model.data_preprocessor(pseudo_collate(items), False)


@torch.no_grad()
def predict(model, images: Sequence[ImageInput]):
    """Segment images; returns ``SegDataSample`` objects with
    ``pred_sem_seg`` (values ``0..C``, ``C`` = background) and
    ``seg_logits``."""
    data = prepare_batch(model, images)
    return model.predict(data['inputs'], data['data_samples'])


@torch.no_grad()
def prototype_maps(model, images: Sequence[ImageInput], stage: int = -1
                   ) -> Tuple[Tensor, Tensor, List[dict]]:
    """Per-prototype cosine similarity maps of one used stage.

    Returns:
        tuple: ``similarity (B, C*k, h, w)``, the preprocessed inputs
        ``(B, 3, H, W)`` and the image metas.
    """
    data = prepare_batch(model, images)
    feats = model.extract_feat(data['inputs'])
    similarity = model.decode_head.forward(feats)[stage]
    return similarity, data['inputs'], [s.metainfo for s in
                                        data['data_samples']]
