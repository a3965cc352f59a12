"""Hand-computed checks of the confusion matrix, both background protocols
and the TissueIoUMetric evaluator."""
import math
import os
import warnings

import numpy as np
import pytest
import torch
from mmengine.structures import PixelData
from mmseg.registry import METRICS
from mmseg.structures import SegDataSample
from PIL import Image

import lpd_mmseg  # noqa: F401  (registers TissueIoUMetric)
from lpd_mmseg.datasets.palette import BCSS_CLASSES, BCSS_PALETTE
from lpd_mmseg.evaluation import (
    TissueIoUMetric,
    confusion_matrix,
    tissue_metrics,
)

# Two tissue classes (0, 1) and background (2).
GT = np.array([[0, 0, 0, 1],
               [0, 0, 1, 1],
               [2, 2, 1, 1]])
PRED = np.array([[0, 0, 1, 1],
                 [0, 2, 1, 1],
                 [0, 2, 1, 0]])
# (gt, pred) pairs, row by row:
#   (0,0) (0,0) (0,1) (1,1) | (0,0) (0,2) (1,1) (1,1) | (2,0) (2,2) (1,1) (1,0)
# gt 0: 3x pred 0, 1x pred 1, 1x pred 2  -> [3, 1, 1]
# gt 1: 1x pred 0, 4x pred 1             -> [1, 4, 0]
# gt 2: 1x pred 0, 1x pred 2             -> [1, 0, 1]
CONF = np.array([[3, 1, 1],
                 [1, 4, 0],
                 [1, 0, 1]])

# 'count' (all 12 pixels):
#   class 0: TP 3, FN 2, FP 2 (col 0 = 3+1+1) -> IoU 3/7, Dice 6/10
#   class 1: TP 4, FN 1, FP 1                 -> IoU 4/6, Dice 8/10
#   bg     : TP 1, FN 1, FP 1                 -> IoU 1/3, Dice 2/4
#   mIoU (tissue only) = (3/7 + 2/3) / 2 = 23/42, mDice = 0.7
#   FwIoU = 5/12*3/7 + 5/12*2/3 + 2/12*1/3 = 43/84, aAcc = 8/12
COUNT = dict(IoU=[3 / 7, 2 / 3], Dice=[0.6, 0.8], mIoU=23 / 42, mDice=0.7,
             FwIoU=43 / 84, aAcc=8 / 12, background_IoU=1 / 3,
             background_Dice=0.5)
# 'ignore' (gt row 2 dropped, 10 pixels):
#   class 0: TP 3, FN 2 (incl. the pixel predicted as bg), FP 1 (col 0 over
#            the kept rows = 3+1) -> IoU 3/6, Dice 6/9
#   class 1: TP 4, FN 1, FP 1     -> IoU 4/6, Dice 8/10
#   mIoU = (1/2 + 2/3) / 2 = 7/12, mDice = (2/3 + 4/5) / 2 = 11/15
#   FwIoU = 5/10*1/2 + 5/10*2/3 = 7/12, aAcc = 7/10
IGNORE = dict(IoU=[0.5, 2 / 3], Dice=[2 / 3, 0.8], mIoU=7 / 12, mDice=11 / 15,
              FwIoU=7 / 12, aAcc=0.7)

CLASSES = BCSS_CLASSES
PALETTE = [list(rgb) for rgb in BCSS_PALETTE]


def assert_scores(scores, expected):
    for key, value in expected.items():
        np.testing.assert_allclose(scores[key], value, rtol=0, atol=1e-12,
                                   err_msg=key)


# ------------------------------------------------------------ confusion
def test_confusion_matrix_by_hand():
    conf = confusion_matrix(PRED, GT, num_classes=3)
    assert conf.dtype == np.int64 and conf.shape == (3, 3)
    np.testing.assert_array_equal(conf, CONF)


def test_confusion_matrix_accepts_tensors_and_any_int_dtype():
    conf = confusion_matrix(torch.from_numpy(PRED),
                            GT.astype(np.uint8), num_classes=3)
    np.testing.assert_array_equal(conf, CONF)


def test_confusion_matrix_skips_ignore_index_and_out_of_range_gt():
    gt = GT.copy()
    gt[0, 0] = 255  # a (0, 0) pair disappears
    gt[2, 3] = 7  # a (1, 0) pair: gt outside 0..2 is skipped too
    expected = CONF.copy()
    expected[0, 0] -= 1
    expected[1, 0] -= 1
    np.testing.assert_array_equal(confusion_matrix(PRED, gt, 3), expected)
    gt[0, 1] = -1  # custom ignore value
    expected[0, 0] -= 1
    np.testing.assert_array_equal(
        confusion_matrix(PRED, gt, 3, ignore_index=-1), expected)


@pytest.mark.parametrize('bad', [-1, 3])
def test_confusion_matrix_rejects_pred_out_of_range(bad):
    pred = PRED.copy()
    pred[1, 1] = bad
    with pytest.raises(ValueError, match='outside the 3 classes'):
        confusion_matrix(pred, GT, 3)


def test_confusion_matrix_rejects_bad_inputs():
    with pytest.raises(ValueError, match='same shape'):
        confusion_matrix(PRED, GT[:, :3], 3)
    with pytest.raises(ValueError, match='integer'):
        confusion_matrix(PRED.astype(float), GT, 3)
    with pytest.raises(ValueError, match='num_classes'):
        confusion_matrix(PRED, GT, 0)


# -------------------------------------------------------------- scores
def test_count_protocol_by_hand():
    scores = tissue_metrics(CONF, num_tissue_classes=2, background='count')
    assert_scores(scores, COUNT)
    np.testing.assert_array_equal(scores['gt_pixels'], [5, 5])
    assert scores['background_gt_pixels'] == 2
    assert scores['num_pixels'] == 12
    assert scores['background'] == 'count'


def test_ignore_protocol_by_hand():
    scores = tissue_metrics(CONF, num_tissue_classes=2, background='ignore')
    assert_scores(scores, IGNORE)
    np.testing.assert_array_equal(scores['gt_pixels'], [5, 5])
    assert scores['background_gt_pixels'] == 2
    assert scores['num_pixels'] == 10
    assert 'background_IoU' not in scores


def test_tissue_on_background_only_hurts_under_count():
    # Predicting background's pixels as class 0 (the (2,0) entry) costs
    # class 0 under 'count' only; class 1 is never predicted on background.
    count = tissue_metrics(CONF, 2, 'count')
    ignore = tissue_metrics(CONF, 2, 'ignore')
    assert count['IoU'][0] < ignore['IoU'][0]
    assert count['IoU'][1] == ignore['IoU'][1]
    # Moving that pixel to a correct background prediction changes nothing
    # under 'ignore' and raises class 0 back under 'count'.
    fixed = CONF.copy()
    fixed[2, 0], fixed[2, 2] = 0, 2
    assert tissue_metrics(fixed, 2, 'ignore')['IoU'][0] == 0.5
    assert tissue_metrics(fixed, 2, 'count')['IoU'][0] == 3 / 6


def test_predicted_background_on_tissue_is_a_miss_in_both():
    only_miss = np.array([[1, 0, 1],  # one class-0 pixel predicted as bg
                          [0, 2, 0],
                          [0, 0, 0]])
    for protocol in ('count', 'ignore'):
        scores = tissue_metrics(only_miss, 2, protocol)
        assert scores['IoU'][0] == 0.5
        assert scores['Dice'][0] == 2 / 3


def test_absent_class_is_nan_and_left_out_of_means():
    # 3 tissue classes; class 2 has no gt and no prediction, class 1 has no
    # gt but is predicted once (IoU 0, kept in the mean).
    conf = np.array([[2, 1, 0, 0],
                     [0, 0, 0, 0],
                     [0, 0, 0, 0],
                     [0, 0, 0, 3]])
    for protocol in ('count', 'ignore'):
        scores = tissue_metrics(conf, 3, protocol)
        assert math.isnan(scores['IoU'][2]) and math.isnan(scores['Dice'][2])
        assert scores['IoU'][1] == 0.0
        # IoU_0 = 2/3, Dice_0 = 4/5
        assert scores['mIoU'] == pytest.approx((2 / 3 + 0) / 2, abs=1e-12)
        assert scores['mDice'] == pytest.approx((4 / 5 + 0) / 2, abs=1e-12)
    # FwIoU counts only rows with gt: 'count' 3/6*2/3 + 3/6*1 = 5/6.
    assert tissue_metrics(conf, 3, 'count')['FwIoU'] == pytest.approx(5 / 6)
    assert tissue_metrics(conf, 3, 'ignore')['FwIoU'] == pytest.approx(2 / 3)


def test_empty_matrix_gives_nan_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        scores = tissue_metrics(np.zeros((3, 3), np.int64), 2, 'count')
    for key in ('mIoU', 'mDice', 'FwIoU', 'aAcc'):
        assert math.isnan(scores[key])


def test_tissue_metrics_rejects_bad_inputs():
    with pytest.raises(ValueError, match='background'):
        tissue_metrics(CONF, 2, background='exclude')
    with pytest.raises(ValueError, match=r'\(3, 3\)'):
        tissue_metrics(CONF[:2], 2)
    with pytest.raises(ValueError, match=r'\(4, 4\)'):
        tissue_metrics(CONF, 3)
    with pytest.raises(ValueError, match='negative'):
        tissue_metrics(-CONF, 2)


# -------------------------------------------------------------- metric
def to_five_classes(labels):
    """Map the 2-tissue example onto BCSS indices: 0->TUM, 1->STR, 2->BACK."""
    return np.array([0, 1, 4])[labels]


def make_sample(pred, gt=None, img_path='data/test/img/a.png'):
    sample = SegDataSample()
    sample.pred_sem_seg = PixelData(data=torch.as_tensor(pred)[None])
    if gt is not None:
        sample.gt_sem_seg = PixelData(data=torch.as_tensor(gt)[None])
    sample.set_metainfo(dict(img_path=img_path))
    return sample.to_dict()


def make_metric(**kwargs):
    metric = TissueIoUMetric(**kwargs)
    metric.dataset_meta = dict(classes=CLASSES, palette=PALETTE)
    return metric


@pytest.mark.parametrize('protocol,expected', [('count', COUNT),
                                               ('ignore', IGNORE)])
def test_metric_end_to_end(protocol, expected):
    metric = make_metric(background=protocol)
    metric.process({}, [make_sample(to_five_classes(PRED),
                                    to_five_classes(GT))])
    result = metric.evaluate(1)
    # LYM and NEC have neither gt nor prediction: NaN, out of the means,
    # so the means equal the 2-class hand computation.
    for key in ('mIoU', 'mDice', 'FwIoU', 'aAcc'):
        assert result[key] == round(expected[key] * 100, 2), key
    assert result['IoU.TUM'] == round(expected['IoU'][0] * 100, 2)
    assert result['Dice.STR'] == round(expected['Dice'][1] * 100, 2)
    assert math.isnan(result['IoU.LYM']) and math.isnan(result['Dice.NEC'])
    if protocol == 'count':
        assert result['IoU.BACK'] == 33.33 and result['Dice.BACK'] == 50.0
        assert result['mIoU'] == 54.76  # 23/42
    else:
        assert 'IoU.BACK' not in result
        assert result['mIoU'] == 58.33  # 7/12
    assert metric.results == []  # evaluate() resets the state


def test_metric_logs_protocol_and_table(capsys):
    from mmengine.logging import MMLogger
    MMLogger.get_instance('test_metric_log', log_level='INFO')
    metric = make_metric(background='ignore')
    metric.process({}, [make_sample(to_five_classes(PRED),
                                    to_five_classes(GT))])
    metric.evaluate(1)
    out = capsys.readouterr()
    text = out.out + out.err
    assert 'background protocol: ignore (WSSS-Tissue/MLPS)' in text
    assert 'excluded (2 pixels)' in text
    assert 'TUM' in text and 'Dice' in text


def test_accumulating_batches_equals_one_matrix():
    rng = np.random.default_rng(0)
    gts = [rng.integers(0, 5, (6, 7)) for _ in range(5)]
    preds = [rng.integers(0, 5, (6, 7)) for _ in range(5)]
    gts[1][0, :] = 255
    metric = make_metric()
    batches = [[0, 1], [2], [3, 4]]
    for batch in batches:
        metric.process({}, [
            make_sample(preds[i], gts[i], f'img/{i}.png') for i in batch
        ])
    assert len(metric.results) == 5  # one small matrix per sample
    result = metric.evaluate(5)
    big = confusion_matrix(np.concatenate(preds), np.concatenate(gts), 5)
    np.testing.assert_array_equal(
        sum(confusion_matrix(p, g, 5) for p, g in zip(preds, gts)), big)
    scores = tissue_metrics(big, 4, 'count')
    assert result['mIoU'] == round(scores['mIoU'] * 100, 2)
    assert result['FwIoU'] == round(scores['FwIoU'] * 100, 2)
    assert result['aAcc'] == round(scores['aAcc'] * 100, 2)


def test_metric_drops_padded_samples_by_size():
    # A distributed sampler may repeat samples; evaluate(size) keeps the
    # first `size` per-sample results.
    metric = make_metric()
    sample = make_sample(to_five_classes(PRED), to_five_classes(GT))
    metric.process({}, [sample])
    metric.process({}, [make_sample(np.zeros((3, 4), np.int64),
                                    to_five_classes(GT), 'img/pad.png')])
    assert metric.evaluate(1)['mIoU'] == 54.76


def test_metric_writes_palette_pngs(tmp_path):
    out = tmp_path / 'preds'  # created by the metric
    metric = make_metric(output_dir=str(out))
    pred = to_five_classes(PRED)
    metric.process({}, [
        make_sample(pred, to_five_classes(GT), 'data/test/img/x.tif'),
        make_sample(pred[::-1].copy(), to_five_classes(GT), 'other/y.png')
    ])
    metric.evaluate(2)
    assert sorted(os.listdir(out)) == ['x.png', 'y.png']
    image = Image.open(out / 'x.png')
    assert image.mode == 'P'
    np.testing.assert_array_equal(np.array(image), pred)
    assert image.getpalette()[:15] == [v for rgb in PALETTE for v in rgb]
    np.testing.assert_array_equal(np.array(Image.open(out / 'y.png')),
                                  pred[::-1])
    # A second pass of the same metric may rewrite its own files.
    metric.process({}, [make_sample(pred, to_five_classes(GT), 'a/x.png')])
    metric.evaluate(1)


def test_metric_never_overwrites_foreign_files(tmp_path):
    (tmp_path / 'x.png').write_bytes(b'not ours')
    (tmp_path / 'keep.txt').write_text('unrelated')
    metric = make_metric(output_dir=str(tmp_path))
    metric.process({}, [make_sample(PRED, GT, 'img/z.png')])  # new file ok
    with pytest.raises(FileExistsError, match='x.png'):
        metric.process({}, [make_sample(PRED, GT, 'img/x.png')])
    assert (tmp_path / 'x.png').read_bytes() == b'not ours'


def test_metric_rejects_duplicate_basenames(tmp_path):
    metric = make_metric(output_dir=str(tmp_path))
    with pytest.raises(ValueError, match='two images'):
        metric.process({}, [
            make_sample(PRED, GT, 'a/same.png'),
            make_sample(PRED, GT, 'b/same.png')
        ])


def test_metric_format_only_needs_no_gt(tmp_path):
    metric = make_metric(output_dir=str(tmp_path), format_only=True)
    metric.process({}, [make_sample(to_five_classes(PRED), None, 'i/q.png')])
    assert metric.results == []
    assert metric.compute_metrics([]) == {}
    assert os.listdir(tmp_path) == ['q.png']


def test_metric_errors():
    with pytest.raises(ValueError, match='background'):
        TissueIoUMetric(background='exclude')
    with pytest.raises(ValueError, match='output_dir'):
        TissueIoUMetric(format_only=True)
    with pytest.raises(ValueError, match='keep_results'):
        TissueIoUMetric(keep_results=False)
    metric = make_metric()
    with pytest.raises(ValueError, match='no masks'):
        metric.process({}, [make_sample(PRED, None)])
    with pytest.raises(ValueError, match=r'a\.png.*same shape'):
        metric.process({}, [make_sample(PRED, GT[:, :3])])
    with pytest.raises(ValueError, match='outside the 5 classes'):
        metric.process({}, [make_sample(PRED + 3, GT)])
    mismatched = TissueIoUMetric(num_tissue_classes=3)
    mismatched.dataset_meta = dict(classes=CLASSES, palette=PALETTE)
    with pytest.raises(ValueError, match='does not match'):
        mismatched.process({}, [make_sample(PRED, GT)])


def test_metric_without_dataset_meta_uses_num_tissue_classes():
    metric = TissueIoUMetric(num_tissue_classes=2, background='ignore')
    metric.process({}, [make_sample(PRED, GT)])
    result = metric.evaluate(1)
    assert result['mIoU'] == 58.33 and result['IoU.class0'] == 50.0


def test_metric_accepts_data_elements():
    sample = SegDataSample()
    sample.pred_sem_seg = PixelData(data=torch.as_tensor(PRED)[None])
    sample.gt_sem_seg = PixelData(data=torch.as_tensor(GT)[None])
    metric = TissueIoUMetric(num_tissue_classes=2)
    metric.process({}, [sample])
    assert metric.evaluate(1)['aAcc'] == 66.67


def test_registry_builds_metric_with_test_py_out_keys(tmp_path):
    metric = METRICS.build(dict(type='TissueIoUMetric'))
    assert isinstance(metric, TissueIoUMetric)
    assert metric.background == 'count' and metric.ignore_index == 255
    # tools/test.py --out DIR adds these two keys to the evaluator config.
    metric = METRICS.build(
        dict(type='TissueIoUMetric', background='ignore',
             output_dir=str(tmp_path / 'out'), keep_results=True))
    assert os.path.isdir(tmp_path / 'out')


def test_metric_output_needs_palette(tmp_path):
    metric = TissueIoUMetric(output_dir=str(tmp_path))
    metric.dataset_meta = dict(classes=CLASSES)
    with pytest.raises(ValueError, match='palette'):
        metric.process({}, [make_sample(PRED, GT)])


def test_metric_rejects_bad_num_tissue_classes():
    for bad in (0, -2, 2.0, True):
        with pytest.raises(ValueError, match='num_tissue_classes'):
            TissueIoUMetric(num_tissue_classes=bad)
