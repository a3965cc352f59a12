"""Which checkpoint a resumed run starts from, and what a new run may
overwrite.

Pure functions over a work dir; :class:`~lpd_mmseg.engine.hooks.
SafeCheckpointHook` applies them before the runner loads anything.

Rules (``--resume`` without a path):

1. ``last_checkpoint`` names an intact file: resume from it, or from an
   intact ``iter_<N>.pth`` with a higher ``N`` (a run killed between
   renaming its new checkpoint into place and updating the record).
2. ``last_checkpoint`` is missing or empty, or names a file that is missing,
   empty or truncated: resume from the newest intact ``iter_<N>.pth`` /
   ``epoch_<N>.pth`` in the work dir (highest ``N``), saying why.
3. Checkpoints exist but none is intact: refuse, listing them.
4. No checkpoint at all: start at iteration 0 (nothing can be lost).

A checkpoint whose pickle is not on the allow-list is never skipped
quietly: :class:`~lpd_mmseg.apis.UnsafeCheckpointError` stops the run.
``best_*.pth`` files hold no optimizer state and are not resumed from.
"""
import os
import os.path as osp
import re
from typing import List, Optional, Tuple

LAST_CHECKPOINT = 'last_checkpoint'
_STEP_NAME = re.compile(r'^(iter|epoch)_(\d+)\.pth$')
_ANY_CHECKPOINT = re.compile(r'^(iter|epoch|best)_.*\.pth$')


class ResumeError(RuntimeError):
    """No checkpoint of the work dir can be resumed from."""


class ExistingCheckpointsError(RuntimeError):
    """A run from iteration 0 would overwrite an earlier run's
    checkpoints."""


def resumable_checkpoints(folder: str) -> List[str]:
    """``iter_<N>.pth`` / ``epoch_<N>.pth`` in ``folder``, newest (highest
    ``N``) first."""
    if not osp.isdir(folder):
        return []
    found = []
    for name in os.listdir(folder):
        match = _STEP_NAME.match(name)
        path = osp.join(folder, name)
        if match and osp.isfile(path):
            found.append((int(match.group(2)), osp.getmtime(path), path))
    return [p for _, _, p in sorted(found, reverse=True)]


def existing_checkpoints(folder: str) -> List[str]:
    """Every checkpoint file (``iter_*``, ``epoch_*``, ``best_*``) and the
    ``last_checkpoint`` record in ``folder``, sorted by name."""
    if not osp.isdir(folder):
        return []
    return sorted(
        osp.join(folder, n) for n in os.listdir(folder)
        if (_ANY_CHECKPOINT.match(n) or n == LAST_CHECKPOINT)
        and osp.isfile(osp.join(folder, n)))


def read_last_checkpoint(work_dir: str) -> Tuple[Optional[str], str]:
    """The path named by ``work_dir/last_checkpoint`` (None when the file
    is missing or empty) and a note on what was found."""
    record = osp.join(work_dir, LAST_CHECKPOINT)
    if not osp.isfile(record):
        return None, f'{record} does not exist'
    with open(record, encoding='utf-8', errors='replace') as f:
        named = f.read().strip()
    if not named:
        return None, f'{record} is empty'
    return named, f'{record} names {named}'


def _step_of(path: str) -> Optional[int]:
    match = _STEP_NAME.match(osp.basename(path))
    return int(match.group(2)) if match else None


def _first_intact(paths: List[str], notes: List[str],
                  damaged: List[str]) -> Optional[str]:
    """The first of ``paths`` that is a complete checkpoint; damaged ones
    are noted."""
    from ..apis.checkpoint import CorruptCheckpointError, check_checkpoint_file
    for path in paths:
        if osp.abspath(path) in damaged:
            continue
        try:
            check_checkpoint_file(path)
            return path
        except CorruptCheckpointError as e:
            notes.append(str(e))
            damaged.append(osp.abspath(path))
    return None


def _named_checkpoint(work_dir: str, folder: str, notes: List[str],
                      damaged: List[str]) -> Optional[str]:
    """The intact file ``last_checkpoint`` names, else None (noted)."""
    from ..apis.checkpoint import CorruptCheckpointError, check_checkpoint_file
    named, note = read_last_checkpoint(work_dir)
    if named is None:
        if resumable_checkpoints(folder):
            notes.append(note)
        return None
    if not osp.isabs(named) and not osp.exists(named):
        # a relative path is relative to where training ran; try the
        # checkpoint folder too (the work dir may have been moved)
        named = osp.join(folder, osp.basename(named))
    try:
        check_checkpoint_file(named)
        return named
    except FileNotFoundError:
        notes.append(f'{note}, which does not exist')
    except CorruptCheckpointError as e:
        notes.append(str(e))
        damaged.append(osp.abspath(named))
    return None


def choose_resume_checkpoint(work_dir: str, folder: Optional[str] = None
                             ) -> Tuple[Optional[str], List[str]]:
    """Apply the module's rules; returns ``(path or None, notes)``.

    ``folder`` holds the checkpoints (default: ``work_dir``, which always
    holds ``last_checkpoint``).  ``notes`` explain every fallback (for the
    log).  Raises :class:`ResumeError` (rule 3) or
    :class:`~lpd_mmseg.apis.UnsafeCheckpointError`.
    """
    folder = folder or work_dir
    notes, damaged = [], []
    candidates = resumable_checkpoints(folder)
    named = _named_checkpoint(work_dir, folder, notes, damaged)
    if named is not None:
        step = _step_of(named)
        newer = [p for p in candidates
                 if step is not None and _step_of(p) > step]
        path = _first_intact(newer, notes, damaged)
        if path is None:
            return named, notes
        notes.append(f'{path} is complete and newer than {named}, which '
                     'last_checkpoint names (the run ended before it '
                     'updated the record): resuming from the newer one')
        return path, notes
    path = _first_intact(candidates, notes, damaged)
    if path is not None:
        notes.append(f'resuming from the newest intact checkpoint {path}')
        return path, notes
    if damaged:
        raise ResumeError(
            f'cannot resume: no intact checkpoint in {folder}.\n  ' +
            '\n  '.join(notes) + '\nResume from another file with --resume '
            'PATH, or start over with --restart (the damaged files are '
            'moved aside, not deleted).')
    return None, notes


def restart_refusal(work_dir: str, found: List[str]) -> str:
    """The message refusing to train from iteration 0 over ``found``."""
    shown = ', '.join(osp.basename(p) for p in found[:8])
    more = f' and {len(found) - 8} more' if len(found) > 8 else ''
    return (
        f'{work_dir} already holds checkpoints of an earlier run ({shown}'
        f'{more}); training from iteration 0 would overwrite them. Pass '
        '--resume to continue that run, --restart to start over (the old '
        "files are first moved to a 'superseded_<time>' folder in the work "
        'dir), or choose another --work-dir.  With a stock MMSeg '
        'tools/train.py: --cfg-options default_hooks.checkpoint.restart='
        'True.')


def move_aside(work_dir: str, found: List[str], stamp: str) -> str:
    """Move ``found`` into ``work_dir/superseded_<stamp>/``; returns that
    folder."""
    folder = osp.join(work_dir, f'superseded_{stamp}')
    os.makedirs(folder, exist_ok=True)
    for path in found:
        os.replace(path, osp.join(folder, osp.basename(path)))
    return folder
