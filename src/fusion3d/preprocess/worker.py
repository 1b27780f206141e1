"""Fresh Python interpreters that run library functions (pickled calls over a pipe).

Why not :mod:`multiprocessing`? Its "spawn" start method re-runs the parent's
main script in the child unless that script is guarded by
``if __name__ == "__main__"``; Snakemake ``script:`` files and ad-hoc scripts are
not, so the child would redo the parent's work. A child started here runs
``python -c`` with only :func:`_serve` and imports nothing of the parent.

A worker takes ``(fn, args, kwargs)`` requests on its stdin and answers
``("ok", result)`` or ``("error", exception)`` on a private copy of its stdout
(C-level prints of ANTs/ITK are redirected to stderr so they cannot corrupt the
stream). ``fn`` must be importable (module level), arguments and results picklable.
"""

from __future__ import annotations

import atexit
import os
import pickle
import subprocess
import sys
from pathlib import Path

_PROTOCOL = pickle.HIGHEST_PROTOCOL


class Worker:
    """One child interpreter serving calls one at a time until :meth:`close`.

    Parameters
    ----------
    env : dict, optional
        Environment overrides for the child (e.g. ITK's thread count: it must be
        in the environment before the child first uses ITK).
    preload : tuple of str
        Modules the child imports at start-up, before the first request (so a
        worker started early has its imports done by the time it is needed).
    """

    def __init__(self, env: dict[str, str] | None = None, preload: tuple[str, ...] = ()):
        child_env = os.environ.copy()
        child_env.update(env or {})
        # The child must import THIS copy of fusion3d (a workflow may put src/ on sys.path).
        root = str(Path(__file__).resolve().parents[2])
        child_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (root, child_env.get("PYTHONPATH", "")) if p
        )
        code = (
            "from fusion3d.preprocess.worker import _serve; "
            f"_serve({tuple(str(m) for m in preload)!r})"
        )
        self._proc = subprocess.Popen(
            [sys.executable, "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=_stderr_target(),
            env=child_env,
        )

    def call(self, fn, /, *args, **kwargs):
        """Run ``fn(*args, **kwargs)`` in the child and return its result (or raise its error)."""
        if self._proc.poll() is not None:
            raise RuntimeError(f"worker process exited with code {self._proc.returncode}")
        try:
            pickle.dump((fn, args, kwargs), self._proc.stdin, protocol=_PROTOCOL)
            self._proc.stdin.flush()
            status, value = pickle.load(self._proc.stdout)
        except (EOFError, BrokenPipeError) as exc:
            code = self._proc.wait()
            raise RuntimeError(f"worker process died (exit code {code})") from exc
        if status == "error":
            raise value
        return value

    def close(self) -> None:
        """Ask the child to exit (end of its input) and wait for it."""
        if self._proc.poll() is None:
            try:
                self._proc.stdin.close()
            except OSError:
                pass
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


def _stderr_target():
    """The parent's ``sys.stderr`` when it is a file (a rule's log, see
    :func:`fusion3d.jobs.script_logging`), so the child's log lines and C-level output
    reach the same log; else ``None`` (the inherited stderr)."""
    try:
        sys.stderr.flush()
        sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return None
    return sys.stderr


def call_in_fresh_process(fn, /, *args, env: dict[str, str] | None = None, **kwargs):
    """Run ``fn(*args, **kwargs)`` once in a new interpreter (environment ``env`` added)."""
    worker = Worker(env=env)
    try:
        return worker.call(fn, *args, **kwargs)
    finally:
        worker.close()


_SHARED: dict[tuple, Worker] = {}


def shared_worker(env: dict[str, str], preload: tuple[str, ...] = ()) -> Worker:
    """A long-lived worker for this environment, started on first use and closed at exit."""
    key = (tuple(sorted(env.items())), tuple(preload))
    worker = _SHARED.get(key)
    if worker is None or worker._proc.poll() is not None:
        worker = _SHARED[key] = Worker(env=env, preload=preload)
    return worker


@atexit.register
def _close_shared() -> None:
    for worker in _SHARED.values():
        worker.close()
    _SHARED.clear()


def _serve(preload: tuple[str, ...] = ()) -> None:
    """Child side: answer pickled requests from stdin until it closes."""
    import importlib
    import logging

    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed (Python or C) now goes to stderr
    sys.stdout = sys.stderr
    # the child's log records (e.g. each preprocessing step with its time) go to its stderr,
    # which is the parent's log file when the parent runs in a rule (see _stderr_target)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s [worker]: %(message)s",
    )
    for name in preload:
        importlib.import_module(name)
    inp = sys.stdin.buffer
    while True:
        try:
            fn, args, kwargs = pickle.load(inp)
        except EOFError:
            break
        try:
            reply = ("ok", fn(*args, **kwargs))
            data = pickle.dumps(reply, protocol=_PROTOCOL)
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to the parent
            try:
                data = pickle.dumps(("error", exc), protocol=_PROTOCOL)
            except Exception:  # an exception that does not pickle
                err = RuntimeError(f"{type(exc).__name__}: {exc}")
                data = pickle.dumps(("error", err), protocol=_PROTOCOL)
        out.write(data)
        out.flush()
