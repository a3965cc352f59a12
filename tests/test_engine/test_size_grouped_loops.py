"""Splitting val/test batches of mixed image sizes."""
import torch

from lpd_mmseg.engine.loops import grouped_step, size_groups, split_by_size


def test_size_groups_keep_first_appearance_order():
    assert size_groups([(3, 4), (5, 5), (3, 4), (1, 1)]) == [[0, 2], [1],
                                                             [3]]
    assert size_groups([]) == []


def _batch(shapes):
    return dict(inputs=[torch.full((3, *s), float(i))
                        for i, s in enumerate(shapes)],
                data_samples=[f'sample{i}' for i in range(len(shapes))])


def test_one_size_is_not_split():
    assert split_by_size(_batch([(8, 8), (8, 8)])) is None


def test_mixed_sizes_run_per_group_in_original_order():
    batch = _batch([(8, 8), (6, 10), (8, 8), (6, 10), (4, 4)])
    calls = []

    def step(sub):
        shapes = {tuple(t.shape) for t in sub['inputs']}
        assert len(shapes) == 1  # what the data preprocessor asserts
        calls.append(sub['data_samples'])
        return [f'pred-{s}' for s in sub['data_samples']]

    out = grouped_step(step, batch)
    assert out == [f'pred-sample{i}' for i in range(5)]
    assert calls == [['sample0', 'sample2'], ['sample1', 'sample3'],
                     ['sample4']]


def test_tta_batches_split_per_image_across_views():
    # inputs[view][image], as TestTimeAug collates them
    views = [[torch.zeros(3, 8, 8), torch.zeros(3, 6, 10)],
             [torch.zeros(3, 8, 8), torch.zeros(3, 6, 10)]]
    batch = dict(inputs=views, data_samples=[['a0', 'b0'], ['a1', 'b1']])
    parts = split_by_size(batch)
    assert [idx for idx, _ in parts] == [[0], [1]]
    first = parts[0][1]
    assert first['data_samples'] == [['a0'], ['a1']]
    assert [v[0].shape[1:] for v in first['inputs']] == [(8, 8), (8, 8)]
