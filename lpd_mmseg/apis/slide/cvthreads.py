"""Keep OpenCV's worker pool out of slide code.

OpenCV's thread pool does not survive ``fork()``: a process that used it and
then forks (multiprocessing's default start method on Linux: data
generators, DataLoader workers) can hang in the child on a lock the pool
held.  Slide inference runs in processes that do both (the test suite, a
notebook), so its OpenCV calls run single-threaded inside
:func:`opencv_single_threaded`, and the previous setting is restored when
the last caller leaves.
"""
import functools
import threading
from contextlib import contextmanager

import cv2

_lock = threading.Lock()
_depth = 0
_saved = None


@contextmanager
def opencv_single_threaded():
    """Run the enclosed OpenCV calls without OpenCV's thread pool
    (re-entrant and safe to enter from several threads)."""
    global _depth, _saved
    with _lock:
        if _depth == 0:
            _saved = cv2.getNumThreads()
            cv2.setNumThreads(1)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                cv2.setNumThreads(_saved)


def single_threaded(fn):
    """Decorator form of :func:`opencv_single_threaded`."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with opencv_single_threaded():
            return fn(*args, **kwargs)
    return wrapper
