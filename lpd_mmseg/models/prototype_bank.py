"""Clustering prototype bank (the PBIP-style baseline).

PBIP builds its prototypes by k-means over features of a frozen encoder,
then trains with them fixed.  Here the bank is built from the model's own
backbone: for each class, the globally pooled features of the training
images labelled with that class alone are clustered into ``k`` centres, per
used stage.  The centres become the frozen prototypes of
``LPDHead(prototype_mode='frozen_bank')``.
"""
import time
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from mmengine.dataset import pseudo_collate
from mmengine.logging import print_log
from mmengine.utils import ProgressBar
from torch import Tensor


def spherical_kmeans(points: Tensor, k: int, iters: int = 50,
                     seed: int = 0) -> Tensor:
    """k-means on the unit sphere (cosine similarity), k-means++ seeding.

    Args:
        points (Tensor): ``(N, D)``, N >= k.
        k (int): number of centres.
        iters (int): Lloyd iterations.  Default 50.
        seed (int): seed of the k-means++ draws.  Default 0.

    Returns:
        Tensor: ``(k, D)`` unit-norm centres.
    """
    if points.dim() != 2:
        raise ValueError(f'points must be (N, D), got {tuple(points.shape)}')
    if points.shape[0] < k:
        raise ValueError(f'{points.shape[0]} points cannot make {k} clusters')
    x = F.normalize(points.float(), dim=1)
    gen = torch.Generator().manual_seed(seed)
    first = torch.randint(x.shape[0], (1, ), generator=gen)
    centres = [x[first[0]]]
    for _ in range(1, k):
        sim = x @ torch.stack(centres).T
        dist = (1 - sim.amax(dim=1)).clamp(min=0)
        if dist.sum() <= 0:
            choice = torch.randint(x.shape[0], (1, ), generator=gen)[0]
        else:
            choice = torch.multinomial(dist, 1, generator=gen)[0]
        centres.append(x[choice])
    centres = torch.stack(centres)
    for _ in range(iters):
        assign = (x @ centres.T).argmax(dim=1)
        updated = torch.zeros_like(centres).index_add_(0, assign, x)
        empty = torch.bincount(assign, minlength=k) == 0
        # An empty cluster keeps its previous centre.
        updated[empty] = centres[empty]
        updated = F.normalize(updated, dim=1)
        if torch.allclose(updated, centres, atol=1e-6):
            centres = updated
            break
        centres = updated
    return centres


@torch.no_grad()
def collect_single_label_features(model, dataset, num_classes: int,
                                  batch_size: int = 16,
                                  max_per_class: Optional[int] = None,
                                  progress: bool = True
                                  ) -> List[Dict[int, Tensor]]:
    """Pooled backbone features of single-label training images.

    Returns:
        list[dict[int, Tensor]]: per used stage of ``model.decode_head``, a
        map from class index to ``(N_c, C_i)`` features.
    """
    head = model.decode_head
    per_stage = [{c: [] for c in range(num_classes)}
                 for _ in range(head.num_stages)]
    counts = torch.zeros(num_classes, dtype=torch.long)
    indices = []
    for idx in range(len(dataset)):
        label = dataset.get_data_info(idx).get('gt_image_label')
        if label is None:
            raise ValueError('the prototype bank needs image-level labels '
                             '(a weakly labelled training split)')
        label = torch.as_tensor(label)
        if label.sum() == 1:
            cls = int(label.argmax())
            if max_per_class is None or counts[cls] < max_per_class:
                counts[cls] += 1
                indices.append(idx)
    bar = ProgressBar(len(indices)) if progress and indices else None
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(indices), batch_size):
            chunk = indices[start:start + batch_size]
            batch = pseudo_collate([dataset[i] for i in chunk])
            data = model.data_preprocessor(batch, training=False)
            feats = head._transform_inputs(model.extract_feat(data['inputs']))
            labels = torch.stack([s.gt_image_label
                                  for s in data['data_samples']])
            classes = labels.argmax(dim=1).cpu()
            for stage, feat in enumerate(feats):
                pooled = feat.float().mean(dim=(2, 3)).cpu()
                for row, cls in zip(pooled, classes.tolist()):
                    per_stage[stage][cls].append(row)
            if bar is not None:
                for _ in chunk:
                    bar.update()
    finally:
        model.train(was_training)
    if bar is not None:
        print()
    return [{c: torch.stack(v) if v else torch.zeros(0, 1)
             for c, v in stage.items()} for stage in per_stage]


def build_prototype_bank(model, dataset, k: Optional[int] = None,
                         class_names: Optional[List[str]] = None,
                         batch_size: int = 16,
                         max_per_class: Optional[int] = None,
                         seed: int = 0,
                         progress: bool = True) -> List[Tensor]:
    """Build per-stage banks ``(num_classes * k, C_i)`` by k-means.

    Raises:
        ValueError: when a class has fewer single-label images than ``k``,
            naming the class.
    """
    head = model.decode_head
    k = k or head.num_prototypes
    num_classes = head.num_classes
    names = class_names or [str(c) for c in range(num_classes)]
    start = time.perf_counter()
    features = collect_single_label_features(
        model, dataset, num_classes, batch_size, max_per_class, progress)
    too_few = [
        f'{names[c]} ({features[0][c].shape[0]})' for c in range(num_classes)
        if features[0][c].shape[0] < k
    ]
    if too_few:
        raise ValueError(
            'the clustering bank needs at least k='
            f'{k} single-label training images per class; too few for: '
            f"{', '.join(too_few)}. Lower num_prototypes or add data.")
    banks = []
    for stage_feats in features:
        centres = [spherical_kmeans(stage_feats[c], k, seed=seed + c)
                   for c in range(num_classes)]
        banks.append(torch.cat(centres))
    print_log(
        f'prototype bank: {k} k-means prototypes per class from '
        f'{sum(f.shape[0] for f in features[0].values())} single-label '
        f'images in {time.perf_counter() - start:.1f} s',
        logger='current')
    return banks
