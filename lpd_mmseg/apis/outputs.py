"""Output folders of the tools: never replace a user's files by accident."""
import os.path as osp
from typing import Iterable


def refuse_to_overwrite(out_dir: str, targets: Iterable[str],
                        overwrite: bool, remedy: str) -> None:
    """Raise unless every file a run would write in ``out_dir`` is new.

    Args:
        out_dir (str): the ``--out`` folder (need not exist yet).
        targets (Iterable[str]): paths of the files the run would write.
        overwrite (bool): the user's ``--overwrite``; skips the check.
        remedy (str): what to remove, for the message (``'old files'``).

    Raises:
        NotADirectoryError: ``out_dir`` exists and is not a folder.
        FileExistsError: some targets exist; names up to three of them.
    """
    if osp.exists(out_dir) and not osp.isdir(out_dir):
        raise NotADirectoryError(f"--out '{out_dir}' exists and is not a "
                                 'folder')
    if overwrite or not osp.isdir(out_dir):
        return
    existing = [osp.basename(p) for p in targets if osp.exists(p)]
    if existing:
        shown = ', '.join(existing[:3])
        more = f' and {len(existing) - 3} more' if len(existing) > 3 else ''
        raise FileExistsError(
            f"output folder '{out_dir}' already holds {len(existing)} of the "
            f'files this run would write ({shown}{more}); refusing to '
            'overwrite them. Choose another --out folder, remove the '
            f'{remedy}, or pass --overwrite.')
