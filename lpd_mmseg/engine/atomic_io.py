"""Crash-safe file writes for checkpoints and their bookkeeping.

A file written with :func:`atomic_write_bytes` either has its complete new
content or is left as it was: the bytes go to a hidden temporary file in the
same folder (``.<name>.<pid>.partial``), are flushed and fsynced, and the
temporary file is then renamed over the target (a rename within one file
system is atomic on POSIX and Windows).  The folder is fsynced as well, so
the rename itself survives a power cut.

:class:`AtomicLocalBackend` is mmengine's local file backend with this
``put``; :class:`~lpd_mmseg.engine.hooks.SafeCheckpointHook` selects it so
that ``Runner.save_checkpoint`` writes atomically.
"""
import os
import os.path as osp
from typing import List

from mmengine.fileio import LocalBackend, register_backend

#: ``backend_args`` that select :class:`AtomicLocalBackend`.
ATOMIC_BACKEND = 'lpd_atomic_local'
PARTIAL_SUFFIX = '.partial'


def partial_name(path: str) -> str:
    """The temporary file used while ``path`` is written."""
    folder, name = osp.split(osp.abspath(path))
    return osp.join(folder, f'.{name}.{os.getpid()}{PARTIAL_SUFFIX}')


def fsync_folder(folder: str) -> None:
    """Persist a rename in ``folder`` (a no-op where folders cannot be
    opened, as on Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Replace ``path`` by ``data`` all at once (see the module doc)."""
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = partial_name(path)
    try:
        with open(tmp, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if osp.lexists(tmp):
            os.remove(tmp)
        raise
    fsync_folder(folder)


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode('utf-8'))


def leftover_partials(folder: str) -> List[str]:
    """Temporary files of interrupted atomic writes in ``folder``."""
    if not osp.isdir(folder):
        return []
    return sorted(
        osp.join(folder, n) for n in os.listdir(folder)
        if n.startswith('.') and n.endswith(PARTIAL_SUFFIX))


@register_backend(ATOMIC_BACKEND)
class AtomicLocalBackend(LocalBackend):
    """mmengine's local backend whose writes are atomic."""

    def put(self, obj: bytes, filepath) -> None:
        atomic_write_bytes(str(filepath), obj)

    def put_text(self, obj: str, filepath, encoding: str = 'utf-8') -> None:
        atomic_write_bytes(str(filepath), obj.encode(encoding))
