import pytest

from lpd_mmseg.apis.schedule import schedule_options, warmup_iters


@pytest.mark.parametrize('iters, warm', [(1, 1), (9, 1), (20, 2), (300, 30),
                                         (600, 50), (18700, 50)])
def test_warmup_is_a_tenth_capped_at_50(iters, warm):
    assert warmup_iters(iters) == warm


def test_schedule_options_for_200_iterations():
    assert schedule_options(200) == [
        'train_cfg.max_iters=200', 'param_scheduler.0.end=20',
        'param_scheduler.1.begin=20', 'param_scheduler.1.end=200']


def test_schedule_refuses_no_iterations():
    with pytest.raises(ValueError, match='iters must be >= 1, got 0'):
        schedule_options(0)
