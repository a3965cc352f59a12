"""The model side of slide inference: build the segmentor once with the
command line's test options, and run it on a batch of tiles.

:func:`predict_tiles` is the only place that calls the model; everything
else sees ``(B, C + 1, h, w)`` class probabilities.
"""
import warnings
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np
import torch
from mmengine.config import Config
from mmengine.dataset import Compose, pseudo_collate

from ..inference import init_segmentor, prepare_batch

_MASK_STEPS = ('LoadAnnotations', 'LoadHistoAnnotations')


@dataclass
class SlideModel:
    """A built segmentor and what slide inference needs to know about it.

    Attributes:
        model: the segmentor (``LPDEncoderDecoder`` or any mmseg one).
        tta: the test-time-augmentation wrapper, or None.
        tta_pipeline: its per-tile pipeline (arrays in, augmented passes
            out), or None.
        class_names (list[str]): ``C`` tissue classes then background.
        palette (list): ``C + 1`` RGB triples.
        training_mpp (float, optional): MPP recorded in the dataset
            metainfo.
        options (dict): the test options used (gate, crf, tta).
    """
    model: object
    tta: Optional[object]
    tta_pipeline: Optional[Compose]
    class_names: List[str]
    palette: List[List[int]]
    training_mpp: Optional[float]
    options: dict

    @property
    def num_classes(self) -> int:
        """``C + 1``."""
        return len(self.class_names)


def _dataset_meta(cfg: Config, model) -> dict:
    meta = dict(getattr(model, 'dataset_meta', None) or {})
    dataset = cfg.get('test_dataloader', {}).get('dataset', {})
    if 'mpp' not in meta:
        from mmseg.registry import DATASETS
        cls = DATASETS.get(dataset.get('type')) if dataset.get(
            'type') else None
        mpp = (dataset.get('metainfo') or {}).get('mpp') or getattr(
            cls, 'METAINFO', {}).get('mpp')
        if mpp is not None:
            meta['mpp'] = mpp
    return meta


def _tta_pipeline(cfg: Config) -> Compose:
    steps = [dict(t) for t in cfg.tta_pipeline]
    steps[0] = dict(type='LoadImageFromNDArray')
    for step in steps:
        if step.get('type') == 'TestTimeAug':
            step['transforms'] = [
                group for group in step['transforms']
                if not all(t.get('type') in _MASK_STEPS for t in group)
            ]
    return Compose(steps)


def build_slide_model(config: str, checkpoint: str, device: str = 'cpu',
                      gate: Optional[str] = None, crf: Optional[str] = None,
                      tta: bool = False) -> SlideModel:
    """Build and load the segmentor with the test options set in its
    config, before it is built (never changed on a built model).

    Args:
        config (str): model config file.
        checkpoint (str): checkpoint file (loaded weights-only, strictly).
        device (str): e.g. ``'cpu'`` or ``'cuda:0'``.
        gate (str, optional): ``'predicted'`` or ``'none'`` (``'oracle'``
            needs ground truth, which slides do not have).
        crf (str, optional): CRF backend, ``'torch'`` or ``'pydensecrf'``.
        tta (bool): the config's test-time augmentation.
    """
    cfg = Config.fromfile(config)
    test_cfg = dict(cfg.model.get('test_cfg') or {})
    test_cfg['mode'] = 'whole'  # tiling happens here, tile by tile
    for key in ('crop_size', 'stride'):
        test_cfg.pop(key, None)
    if gate is not None:
        if gate == 'oracle':
            raise ValueError("--gate oracle reads ground-truth masks, which "
                             "slides do not have; use 'predicted' or 'none'")
        test_cfg['gate'] = gate
    if crf is not None:
        crf_cfg = dict(test_cfg.get('crf') or {})
        crf_cfg['backend'] = crf
        test_cfg['crf'] = crf_cfg
    cfg.model.test_cfg = test_cfg
    with warnings.catch_warnings():  # mmseg's build_loss deprecation
        warnings.simplefilter('ignore', UserWarning)
        model = init_segmentor(cfg, checkpoint, device=device)
    wrapper = pipeline = None
    if tta:
        if 'tta_pipeline' not in cfg or 'tta_model' not in cfg:
            raise KeyError(f'--tta needs tta_pipeline and tta_model in '
                           f'{config}')
        from mmseg.registry import MODELS
        wrapper = MODELS.build(dict(cfg.tta_model, module=model))
        wrapper.eval()
        pipeline = _tta_pipeline(cfg)
    meta = _dataset_meta(cfg, model)
    names = [str(c) for c in meta.get('classes', ())]
    palette = [list(map(int, p)) for p in meta.get('palette', ())]
    if not names or len(palette) < len(names):
        raise ValueError(f'{config}: the dataset metainfo needs classes '
                         'and one palette colour per class')
    mpp = meta.get('mpp')
    return SlideModel(model, wrapper, pipeline, names,
                      palette[:len(names)],
                      float(mpp) if mpp is not None else None,
                      dict(gate=test_cfg.get('gate'),
                           crf=(test_cfg.get('crf') or {}).get('backend'),
                           tta=bool(tta)))


@torch.no_grad()
def predict_tiles(slide_model: SlideModel,
                  tiles: Sequence[np.ndarray]) -> np.ndarray:
    """Class probabilities of a batch of tiles.

    Args:
        slide_model (SlideModel): from :func:`build_slide_model`.
        tiles (list[np.ndarray]): ``(h, w, 3)`` RGB uint8 tiles of one
            size.

    Returns:
        np.ndarray: ``(B, C + 1, h, w)`` float32, softmax of the model's
        ``seg_logits`` (last channel = background).
    """
    bgr = [np.ascontiguousarray(t[..., ::-1]) for t in tiles]
    if slide_model.tta is not None:
        items = [slide_model.tta_pipeline(dict(img=img)) for img in bgr]
        samples = slide_model.tta.test_step(pseudo_collate(items))
    else:
        data = prepare_batch(slide_model.model, bgr)
        samples = slide_model.model.predict(data['inputs'],
                                            data['data_samples'])
    logits = torch.stack([s.seg_logits.data for s in samples])
    return logits.float().softmax(dim=1).cpu().numpy()
