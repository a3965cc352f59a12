import os.path as osp
from typing import Optional

import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmseg.registry import HOOKS

from ...models.prototype_bank import build_prototype_bank
from .consistency_hook import unwrap_model


@HOOKS.register_module()
class PrototypeBankHook(Hook):
    """Fill a frozen prototype bank before training (clustering baseline).

    Runs once before the first training iteration when the decode head has
    ``prototype_mode='frozen_bank'`` and no bank yet (a resumed checkpoint
    already holds it).  With ``bank_file`` an existing file is loaded instead
    of clustering, and a newly built bank is saved there.

    Args:
        bank_file (str, optional): ``.pth`` file for the bank, relative to
            the work dir unless absolute.
        batch_size (int): feature extraction batch size.  Default 16.
        max_per_class (int, optional): cap on single-label images per class.
        seed (int): k-means seed.  Default 0.
    """

    priority = 'VERY_HIGH'

    def __init__(self, bank_file: Optional[str] = None, batch_size: int = 16,
                 max_per_class: Optional[int] = None, seed: int = 0):
        self.bank_file = bank_file
        self.batch_size = batch_size
        self.max_per_class = max_per_class
        self.seed = seed

    def before_train(self, runner) -> None:
        model = unwrap_model(runner.model)
        head = model.decode_head
        if getattr(head, 'prototype_mode', None) != 'frozen_bank':
            raise ValueError('PrototypeBankHook needs a decode head with '
                             "prototype_mode='frozen_bank'")
        if bool(head.bank_ready):
            print_log('prototype bank already present (from checkpoint)',
                      logger='current')
            return
        path = self.bank_file
        if path is not None and not osp.isabs(path):
            path = osp.join(runner.work_dir, path)
        if path is not None and osp.isfile(path):
            banks = torch.load(path, map_location='cpu', weights_only=True)
            print_log(f'prototype bank loaded from {path}', logger='current')
        else:
            dataset = runner.train_dataloader.dataset
            banks = build_prototype_bank(
                model, dataset, class_names=list(
                    dataset.metainfo['classes']),
                batch_size=self.batch_size,
                max_per_class=self.max_per_class, seed=self.seed)
            if path is not None:
                torch.save([b.cpu() for b in banks], path)
                print_log(f'prototype bank saved to {path}',
                          logger='current')
        head.set_prototype_bank(banks)
