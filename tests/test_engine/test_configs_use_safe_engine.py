"""Every shipped config saves atomically and validates mixed sizes."""
import glob
import os.path as osp

import pytest
from mmengine.config import Config

from conftest import REPO

CONFIGS = sorted(
    p for p in glob.glob(osp.join(REPO, 'configs', '**', '*.py'),
                         recursive=True) if '_base_' not in p)


@pytest.mark.parametrize('path', CONFIGS,
                         ids=lambda p: osp.relpath(p, REPO))
def test_checkpoint_hook_and_loops(path):
    cfg = Config.fromfile(path, import_custom_modules=False)
    assert cfg.default_hooks.checkpoint.type == 'SafeCheckpointHook'
    assert cfg.val_cfg.type == 'SizeGroupedValLoop'
    assert cfg.test_cfg.type == 'SizeGroupedTestLoop'
