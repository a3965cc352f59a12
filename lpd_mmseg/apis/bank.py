"""Build the clustering prototype bank outside training."""
import os.path as osp
import time
from typing import Optional

import torch
from mmengine.config import Config


def build_bank_from_config(config: str, out: str,
                           checkpoint: Optional[str] = None,
                           max_per_class: Optional[int] = None,
                           batch_size: int = 16, device: str = 'cpu',
                           init_weights: bool = True, seed: int = 0,
                           overwrite: bool = False) -> dict:
    """k-means prototype bank for ``LPDHead(prototype_mode='frozen_bank')``.

    Features come from the config's backbone, with its pre-trained weights
    (``init_weights``) or those of ``checkpoint``; images are the
    single-label patches of the config's training split.  The bank is saved
    as a list of per-stage tensors, the format ``PrototypeBankHook`` loads.

    Returns:
        dict: summary (shapes, seconds, output path).
    """
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS, MODELS

    from ..models.prototype_bank import build_prototype_bank
    from .inference import init_segmentor
    if osp.exists(out) and not overwrite:
        raise FileExistsError(f'{out} exists; pass --overwrite to replace it')
    cfg = Config.fromfile(config)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    head_cfg = cfg.model.decode_head
    if head_cfg.get('prototype_mode') != 'frozen_bank':
        raise ValueError(f"{config}: decode_head.prototype_mode must be "
                         "'frozen_bank' to build a bank for it")
    # the bank is built from the backbone; the head's (empty) bank is unused
    if checkpoint is not None:
        model = init_segmentor(cfg, checkpoint, device=device)
    else:
        model = MODELS.build(cfg.model)
        if init_weights:
            model.init_weights()
        model.to(device).eval()
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    start = time.perf_counter()
    banks = build_prototype_bank(
        model, dataset, class_names=list(dataset.metainfo['classes']),
        batch_size=batch_size, max_per_class=max_per_class, seed=seed)
    seconds = time.perf_counter() - start
    torch.save([b.cpu() for b in banks], out)
    return dict(out=out, shapes=[list(b.shape) for b in banks],
                seconds=round(seconds, 2))
