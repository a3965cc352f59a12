import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from lpd_mmseg import compat


def _needs_placeholder():
    if compat.has_compiled_mmcv_ops():
        pytest.skip('full mmcv with compiled ops is installed')


def test_mmseg_imports_and_mmengine_reports_no_full_mmcv():
    _needs_placeholder()
    import mmseg.models  # noqa: F401
    from mmengine.utils.dl_utils import mmcv_full_available
    assert mmcv_full_available() is False


def test_pure_python_ops_work_with_placeholder():
    _needs_placeholder()
    import torch.nn.functional as F
    from mmcv.ops import point_sample
    feats = torch.arange(16.).reshape(1, 1, 4, 4)
    points = torch.tensor([[[0.125, 0.125], [0.875, 0.625]]])
    out = point_sample(feats, points, align_corners=False)
    grid = points[:, :, None, :] * 2 - 1
    expected = F.grid_sample(feats, grid, align_corners=False)[..., 0]
    assert torch.allclose(out, expected)
    # pixel centres hit exact values
    assert out[0, 0, 0].item() == pytest.approx(0.0)


def test_compiled_op_raises_clear_error():
    _needs_placeholder()
    from mmcv.ops import nms
    with pytest.raises(compat.MissingCompiledOpError,
                       match="'nms'.*full\\s+mmcv"):
        nms(torch.rand(3, 4), torch.rand(3), 0.5)


def test_placeholder_is_not_installed_over_real_ext(monkeypatch):
    monkeypatch.setattr(compat, 'has_compiled_mmcv_ops', lambda: True)
    assert compat.install_mmcv_ext_placeholder() is False


def test_import_order_in_fresh_interpreter(repo_root):
    # Stock mmseg tools import mmseg.registry before the config's
    # custom_imports bring in lpd_mmseg.
    code = ('import mmseg.registry; import lpd_mmseg; import mmseg.models; '
            'from mmseg.registry import MODELS; '
            "print(MODELS.get('LPDHead').__name__)")
    out = subprocess.run([sys.executable, '-c', code], cwd=repo_root,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == 'LPDHead'


def _mmengine_like_checkpoint(path):
    from mmengine.logging import MessageHub
    hub = MessageHub.get_instance('test_compat_hub')
    hub.update_scalar('train/loss', 1.5)
    hub.update_scalar('train/loss', np.float32(0.5))
    hub.update_info('iter', 7)
    torch.save(
        dict(
            meta=dict(seed=np.int64(3), iter=np.int32(7), lr=np.float64(1e-3),
                      dtype=np.dtype('float32'), hist=np.arange(4)),
            message_hub=hub.state_dict(),
            state_dict={'w': torch.ones(2)}), path)


def test_mmengine_checkpoint_loads_with_weights_only(tmp_path):
    path = tmp_path / 'ckpt.pth'
    _mmengine_like_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)
    buffer = ckpt['message_hub']['log_scalars']['train/loss']
    assert buffer.mean() == pytest.approx(1.0)
    assert ckpt['meta']['seed'] == 3


class _RunsCode:
    def __reduce__(self):
        return (os.system, (f'touch {self.marker}', ))


def test_code_running_pickle_is_refused(tmp_path):
    marker = tmp_path / 'pwned'
    evil = _RunsCode()
    evil.marker = str(marker)
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'x': evil}, path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    assert not marker.exists()


def test_getattr_only_for_history_buffer(tmp_path):
    from mmengine.logging.history_buffer import HistoryBuffer
    assert compat._history_buffer_getattr(
        HistoryBuffer, 'mean') is HistoryBuffer.mean
    with pytest.raises(pickle.UnpicklingError):
        compat._history_buffer_getattr(HistoryBuffer, '__init__')
    with pytest.raises(pickle.UnpicklingError):
        compat._history_buffer_getattr(os, 'system')

    class _GetattrInit:
        def __reduce__(self):
            return (getattr, (HistoryBuffer, '__init__'))

    path = tmp_path / 'getattr.pth'
    torch.save({'x': _GetattrInit()}, path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)


def test_version_check_names_package_and_range(monkeypatch):
    def fake(names):
        if names[0] == 'mmengine':
            return 'mmengine', '0.9.0'
        if names[0] == 'mmsegmentation':
            return None, None
        return names[0], '2.1.0'

    monkeypatch.setattr(compat, '_installed_version', fake)
    with pytest.raises(compat.IncompatibleEnvironmentError) as info:
        compat.check_versions()
    message = str(info.value)
    assert 'mmengine==0.9.0' in message and '>=0.10.0,<0.11.0' in message
    assert 'mmsegmentation is not installed' in message
    assert 'mmcv' not in message.replace('mmcv_', '').split('mmengine')[0]


def test_version_check_passes_here():
    compat.check_versions()


def test_weighted_label_count_by_hand():
    import torch

    from lpd_mmseg.compat import weighted_label_count
    label = torch.tensor([[[0, 1], [255, 1]]])
    weight = torch.tensor([2.0, 0.5])
    # labelled: 2 + 0.5 + 0.5; one ignored pixel adds 1 without
    # avg_non_ignore
    assert float(weighted_label_count(label, weight, 255, True)) == 3.0
    assert float(weighted_label_count(label, weight, 255, False)) == 4.0


def test_class_weights_with_ignored_pixels_match_torch():
    """mmseg's CrossEntropyLoss with class_weight and a 255 label (it
    raised IndexError before the compat fix) gives torch's weighted mean
    over the labelled pixels."""
    import torch
    import torch.nn.functional as F
    from mmseg.registry import MODELS

    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 4)
    label = torch.randint(0, 3, (2, 4, 4))
    label[0, :2] = 255
    loss = MODELS.build(dict(type='CrossEntropyLoss', class_weight=[
        2.0, 1.0, 0.5], avg_non_ignore=True))
    expected = F.cross_entropy(logits, label, weight=torch.tensor(
        [2.0, 1.0, 0.5]), ignore_index=255)
    assert torch.allclose(loss(logits, label, ignore_index=255), expected)
