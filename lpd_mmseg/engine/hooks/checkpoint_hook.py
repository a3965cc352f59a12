"""A checkpoint hook that cannot lose a run.

mmengine's ``CheckpointHook`` deletes the oldest checkpoint (and the
previous best) before it writes the new one, with a plain ``open``/
``write``, and then overwrites ``last_checkpoint`` in place: a kill during
the write leaves a partial file and nothing intact to resume from.  This
subclass keeps the hook's options and file names and changes the order and
the writes:

1. the new checkpoint is written atomically (temporary file in the same
   folder, flush, fsync, rename; see :mod:`lpd_mmseg.engine.atomic_io`);
2. then ``last_checkpoint`` is replaced atomically;
3. only then are older checkpoints and the previous best deleted.

A kill at any moment therefore leaves every checkpoint complete, and
``last_checkpoint`` naming a complete one; at worst an old file that was
due for deletion is left over, and a resumed run deletes it.

Before training it also decides what the runner loads
(:mod:`lpd_mmseg.engine.resume`): a ``--resume`` without a path falls back
to the newest intact checkpoint when ``last_checkpoint`` is missing, empty
or names a missing or damaged file, and a run from iteration 0 is refused
when the work dir already holds checkpoints unless ``restart=True``.
"""
import os.path as osp
import time

from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook
from mmengine.runner import BaseLoop
from mmseg.registry import HOOKS

from ..atomic_io import ATOMIC_BACKEND, atomic_write_text, leftover_partials
from ..resume import (
    ExistingCheckpointsError,
    choose_resume_checkpoint,
    existing_checkpoints,
    move_aside,
    restart_refusal,
)

#: message-hub key: files due for deletion when the last checkpoint was
#: written (deleted by a resumed run if a kill came first).
STALE_KEY = 'lpd_stale_checkpoints'


class _DeferredRemoval:
    """A file backend whose ``remove``/``rmtree`` only note the path."""

    def __init__(self, backend, on_note):
        self._backend = backend
        self._on_note = on_note
        self.paths = []

    def remove(self, path):
        self.paths.append(path)
        self._on_note(self.paths)

    rmtree = remove

    def __getattr__(self, name):
        return getattr(self._backend, name)


@HOOKS.register_module()
class SafeCheckpointHook(CheckpointHook):
    """``CheckpointHook`` with atomic, ordered saving and safe resume.

    Takes every argument of :class:`mmengine.hooks.CheckpointHook`, plus:

    Args:
        restart (bool): allow training from iteration 0 in a work dir that
            already holds checkpoints; they are first moved to
            ``<work_dir>/superseded_<time>/`` (nothing is deleted).
            ``tools/train.py --restart`` sets it.  Default False: such a
            run is refused with a message naming the files.

    Saving is atomic for local folders (the usual case); with a remote
    ``out_dir`` or explicit ``backend_args`` the stock writes are used
    and only the ordering applies.
    """

    def __init__(self, *args, restart: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.restart = restart
        self.atomic = self.backend_args is None and \
            self.file_client_args is None and \
            '://' not in str(self.out_dir or '')
        if self.atomic:
            self.backend_args = dict(backend=ATOMIC_BACKEND)

    # ------------------------------------------------------------ folders
    def _checkpoint_folder(self, runner) -> str:
        """Where checkpoints go (``CheckpointHook.before_train`` rules)."""
        if self.out_dir is None or self.out_dir == runner.work_dir:
            return runner.work_dir
        return osp.join(self.out_dir,
                        osp.basename(runner.work_dir.rstrip(osp.sep)))

    # ------------------------------------------------------------- resume
    def before_run(self, runner) -> None:
        """Choose the checkpoint to resume from, or refuse to overwrite."""
        if not isinstance(getattr(runner, '_train_loop', None), BaseLoop):
            return  # testing or validation only
        folder = self._checkpoint_folder(runner)
        if runner._resume and runner._load_from is None:
            path, notes = choose_resume_checkpoint(runner.work_dir, folder)
            for note in notes:
                runner.logger.warning(note)
            if path is None:
                runner.logger.info(
                    f'--resume: no checkpoint in {folder}; training starts '
                    'at iteration 0')
                runner._resume = False
            else:
                runner.logger.info(f'--resume: resume from {path}')
                runner._load_from = path
            return
        if runner._resume:
            from ...apis.checkpoint import check_checkpoint_file
            check_checkpoint_file(runner._load_from)
            runner.logger.info(f'--resume: resume from {runner._load_from}')
            return
        found = existing_checkpoints(folder)
        if folder != runner.work_dir:
            found += [p for p in existing_checkpoints(runner.work_dir)
                      if osp.basename(p) == 'last_checkpoint']
        if not found:
            return
        if not self.restart:
            raise ExistingCheckpointsError(
                restart_refusal(runner.work_dir, found))
        if is_main_process():
            moved = move_aside(runner.work_dir, found,
                               time.strftime('%Y%m%d_%H%M%S'))
            runner.logger.warning(
                f'restart: moved {len(found)} files of the earlier run to '
                f'{moved}; training starts at iteration 0')

    def before_train(self, runner) -> None:
        super().before_train(runner)
        if not is_main_process():
            return
        for path in sorted({*leftover_partials(self.out_dir),
                            *leftover_partials(runner.work_dir)}):
            self.file_backend.remove(path)
            runner.logger.info(f'removed {path}, the unfinished write of an '
                               'interrupted run')
        best = {getattr(self, 'best_ckpt_path', None),
                *getattr(self, 'best_ckpt_path_dict', {}).values()}
        for path in runner.message_hub.get_info(STALE_KEY, []):
            if path not in best and path != self.last_ckpt:
                self._remove(path)
        runner.message_hub.update_info(STALE_KEY, [])

    # ------------------------------------------------------------- saving
    def _remove(self, path: str) -> None:
        if self.file_backend.isfile(path):
            self.file_backend.remove(path)
        elif self.file_backend.isdir(path):  # deepspeed checkpoints
            self.file_backend.rmtree(path)

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        """Save ``step``, then ``last_checkpoint``, then delete the oldest.

        ``keep_ckpt_ids`` inside the new checkpoint still lists the oldest
        step, so a run resumed after a kill between saving and deleting
        deletes it (``CheckpointHook.before_train`` trims the list).
        """
        hub = runner.message_hub
        stale = []
        if self.max_keep_ckpts > 0 and not (
                self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            ids = list(self.keep_ckpt_ids) + [step]
            hub.update_info('keep_ckpt_ids', ids)
            stale = ids[:-self.max_keep_ckpts]
            self.keep_ckpt_ids.append(step)  # a deque of maxlen max_keep
        filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, filename)
        hub.update_info('last_ckpt', self.last_ckpt)
        runner.save_checkpoint(
            self.out_dir,
            filename,
            self.file_client_args,
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler,
            meta=meta,
            by_epoch=self.by_epoch,
            backend_args=self.backend_args,
            **self.args)
        hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))
        if not is_main_process():
            return
        atomic_write_text(osp.join(runner.work_dir, 'last_checkpoint'),
                          self.last_ckpt)
        for old in stale:
            self._remove(self.file_backend.join_path(
                self.out_dir, self.filename_tmpl.format(old)))

    def _save_best_checkpoint(self, runner, metrics) -> None:
        """The stock logic, with the previous best deleted only after the
        new best and the re-saved last checkpoint are complete."""
        backend = self.file_backend
        deferred = _DeferredRemoval(
            backend, lambda paths: runner.message_hub.update_info(
                STALE_KEY, list(paths)))
        self.file_backend = deferred
        try:
            super()._save_best_checkpoint(runner, metrics)
        finally:
            self.file_backend = backend
        for path in deferred.paths:
            self._remove(path)
        runner.message_hub.update_info(STALE_KEY, [])
