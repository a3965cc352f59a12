from mmengine.hooks import Hook
from mmengine.model import BaseTTAModel, is_model_wrapper
from mmseg.registry import DATASETS, HOOKS

from ...apis.checkpoint import check_checkpoint_matches


def unwrap_model(model):
    """The segmentor inside DDP / TTA wrappers."""
    while is_model_wrapper(model) or isinstance(model, BaseTTAModel):
        model = model.module
    return model


def dataset_classes(dataset_cfg) -> tuple:
    """Class names a dataset config will have, without building it."""
    while dataset_cfg.get('type') in ('RepeatDataset', 'ConcatDataset'):
        inner = dataset_cfg.get('dataset') or dataset_cfg.get('datasets')[0]
        dataset_cfg = inner
    metainfo = dataset_cfg.get('metainfo') or {}
    if 'classes' in metainfo:
        return tuple(metainfo['classes'])
    cls = dataset_cfg['type']
    if isinstance(cls, str):
        cls = DATASETS.get(cls)
    meta = getattr(cls, 'METAINFO', {}) if cls is not None else {}
    return tuple(meta.get('classes', ()))


def check_head_matches_dataset(head, dataset_cfg, split: str) -> None:
    """Raise ``ValueError`` when the head's class count is not the data
    set's number of tissue classes (its classes minus the background)."""
    from ...models.decode_heads import LPDHead
    classes = dataset_classes(dataset_cfg)
    if not classes or not isinstance(head, LPDHead):
        return
    expected = len(classes) - 1
    if head.num_classes != expected:
        raise ValueError(
            f'{type(head).__name__}.num_classes={head.num_classes} but the '
            f'{split} data set ({dataset_cfg.get("type")}) has {len(classes)}'
            f' classes {classes}, i.e. {expected} tissue classes plus '
            f'background; set model.decode_head.num_classes={expected}')


@HOOKS.register_module()
class LPDConfigCheckHook(Hook):
    """Start-up checks that turn silent mistakes into clear errors.

    - before anything runs: an ``LPDHead`` and the data sets must agree on
      the number of classes (other heads, e.g. a second-stage model trained
      on pseudo-masks, are not checked);
    - before testing a checkpoint (``load_from``, as set by
      ``tools/test.py CONFIG CKPT``): every parameter of the model must be in
      the checkpoint with the same shape, and nothing else, because mmengine
      would otherwise load what fits and only warn.
    """

    priority = 'HIGHEST'

    def before_test(self, runner) -> None:
        checkpoint = getattr(runner, '_load_from', None)
        if checkpoint:
            check_checkpoint_matches(unwrap_model(runner.model), checkpoint)

    def before_run(self, runner) -> None:
        model = unwrap_model(runner.model)
        head = getattr(model, 'decode_head', None)
        if head is None:
            return
        for split in ('train', 'val', 'test'):
            loader = runner.cfg.get(f'{split}_dataloader')
            if loader and loader.get('dataset'):
                check_head_matches_dataset(head, loader['dataset'], split)
