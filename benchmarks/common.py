"""Shared helpers of the benchmark scripts."""
import datetime
import json
import os
import os.path as osp
import platform
import subprocess
import sys
from typing import List

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
RESULTS = osp.join(REPO, 'benchmarks', 'results')


def environment() -> dict:
    import torch
    info = dict(
        date=datetime.datetime.now().isoformat(timespec='seconds'),
        python=platform.python_version(),
        torch=torch.__version__,
        cpu_count=os.cpu_count(),
        cpu=platform.processor() or platform.machine(),
        torch_threads=torch.get_num_threads(),
        cuda=torch.cuda.get_device_name(0)
        if torch.cuda.is_available() else None)
    try:
        import mmengine
        import mmseg
        info.update(mmseg=mmseg.__version__, mmengine=mmengine.__version__)
    except ImportError:
        pass
    return info


def command_line() -> str:
    return 'python ' + ' '.join(
        [osp.relpath(sys.argv[0], REPO)] + sys.argv[1:])


def write_json(path: str, payload: dict) -> None:
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(payload, f, indent=2, sort_keys=False)
    os.replace(tmp, path)


def run_python(args: List[str], log_path: str) -> None:
    """Run a repo script in a subprocess, output to ``log_path``."""
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep +
               os.environ.get('PYTHONPATH', ''))
    os.makedirs(osp.dirname(osp.abspath(log_path)), exist_ok=True)
    with open(log_path, 'w') as log:
        result = subprocess.run([sys.executable] + args, cwd=REPO, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        with open(log_path) as f:
            tail = f.read()[-3000:]
        raise RuntimeError(f'{args[0]} failed ({result.returncode}); log '
                           f'{log_path}:\n{tail}')


def reset_peak_rss() -> bool:
    """Reset this process's peak-RSS mark (Linux ``clear_refs`` 5).

    A child process inherits its parent's high-water mark through fork and
    exec, so a fresh process alone does not give a clean peak."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


def _status_mb(field: str) -> float:
    """A ``/proc/self/status`` memory field (e.g. ``VmRSS``) in MiB, or -1
    where the file is unavailable."""
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(field + ':'):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return -1.0


def current_rss_mb() -> float:
    """Resident memory of this process now, in MiB (0 if unknown)."""
    return max(_status_mb('VmRSS'), 0.0)


def peak_rss_mb() -> float:
    """Peak resident memory of this process since start or the last
    :func:`reset_peak_rss`, in MiB."""
    peak = _status_mb('VmHWM')
    if peak >= 0:
        return peak
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
