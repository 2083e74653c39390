"""What every cnnfeat command does at start-up: logging, and TensorFlow's native start-up lines kept off the screen.

TensorFlow's C++ core writes its start-up messages (absl's "All log messages
before absl::InitializeLog() ...", oneDNN and CPU-feature notices, "Could not
find cuda drivers", and on every CPU-only machine ``E0000 ... failed call to
cuInit``) straight to file descriptor 2, before and regardless of Python's
logging. ``TF_CPP_MIN_LOG_LEVEL`` silences only some of them, so a command
that is not verbose also routes descriptor 2 through a filter thread that drops
exactly those lines and passes everything else (Python warnings, errors, the
progress bar) through unchanged. The command-line entry points do this; the
library touches the process's streams only when asked, by :func:`quiet_tensorflow`
(a library that replaced its host's descriptor 2 unasked would hide other programs'
lines too).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import logging
import os
import re
import sys
import threading
from collections.abc import Sequence

__all__ = ["is_startup_noise", "parse_command", "plain_text", "quiet_ray", "quiet_tensorflow", "setup"]

#: native log lines of TensorFlow/XLA/absl that say nothing a user can act on
_NOISE = re.compile(
    rb"^(?:"
    rb"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|[IW]\d{4} [\d:. ]+\s+\d+ [\w.+-]+:\d+\] .*"  # absl/glog INFO and WARNING lines
    rb"|E\d{4} [\d:. ]+\s+\d+ [\w.+-]+:\d+\] failed call to cuInit.*"  # no GPU on this machine: not an error
    rb"|To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags\."
    # Ray Data always passes an actor pool's constructor arguments through the object store, which
    # the driver holds for the whole run
    rb"|\[[\d:, -]+ E \d+ \d+\] core_worker\.cc:\d+: Actor with class name: .* has constructor arguments in the object store .*"
    rb")\r?$"
)
#: the first bytes of every noise line; a partial line that starts so is held back until it is complete
_NOISE_FIRST = (b"I", b"W", b"E", b"T", b"[")

_installed = False


def is_startup_noise(line: bytes | str) -> bool:
    """Whether one line of stderr is TensorFlow's native start-up noise."""
    raw = line.encode() if isinstance(line, str) else line
    return bool(_NOISE.match(raw.rstrip(b"\n")))


def parse_command(parser: argparse.ArgumentParser, argv: Sequence[str] | None, prog: str | None) -> argparse.Namespace:
    """A command's arguments (``prog``: how ``cnnfeat <command>`` names it), with logging set up by ``-v``."""
    if prog:
        parser.prog = prog
    args = parser.parse_args(argv)
    setup(getattr(args, "verbose", False))
    return args


def plain_text(docstring: str | None) -> str:
    """A module docstring as ``--help`` shows it: without reStructuredText's ````literal```` and ``::`` markup.

    >>> plain_text("Run ``cnnfeat benchmark``. Examples::")
    'Run cnnfeat benchmark. Examples:'
    """
    return re.sub(r"::$", ":", (docstring or "").replace("``", ""), flags=re.MULTILINE)


def setup(verbose: bool = False) -> None:
    """Configure logging for a command; unless ``verbose``, keep TensorFlow's start-up noise off stderr.

    Call it first in a command's ``main``, before anything imports TensorFlow. It sets
    ``TF_CPP_MIN_LOG_LEVEL=3`` only where the user has not set it, and filters descriptor
    2 (once per process) so that the native lines that setting does not reach are dropped.
    """
    for stream in (sys.stdout, sys.stderr):  # a file name that is not UTF-8 is printed escaped, never a crash
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not verbose:
        quiet_tensorflow()


def quiet_tensorflow() -> None:
    """Keep TensorFlow's start-up lines (oneDNN, CUDA, cuInit, CPU features) off this process's stderr.

    For library use, where cnnfeat does not touch stderr unless asked: call it before anything
    imports TensorFlow. It sets ``TF_CPP_MIN_LOG_LEVEL=3`` where the user has not set it, and
    filters descriptor 2 of the process (once) for the native lines that setting does not reach;
    everything else on stderr passes. The commands call it unless ``-v`` is given.

    >>> import cnnfeat
    >>> cnnfeat.quiet_tensorflow()  # doctest: +SKIP
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # e.g. tf.function retracing notices while fine-tuning
    _filter_stderr()


def quiet_ray(verbose: bool = False) -> None:
    """Keep Ray's own informational log lines (cluster start, dataset plans) off a command's stderr."""
    if not verbose:
        for name in ("ray", "ray.data"):
            logging.getLogger(name).setLevel(logging.ERROR)


def _filter_stderr() -> None:
    global _installed
    # only a command's own process, whose stderr is still the real one (not a test runner's capture)
    if _installed or sys.stderr is not sys.__stderr__:
        return
    try:
        if sys.stderr is not None:
            sys.stderr.flush()
        original = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
    except (OSError, AttributeError, ValueError):  # no descriptor 2 (an embedded interpreter): nothing to filter
        return
    _installed = True
    thread = threading.Thread(target=_pump, args=(read_end, original), name="cnnfeat-stderr-filter", daemon=True)
    thread.start()

    def restore() -> None:  # at exit: hand descriptor 2 back, let the pump drain the pipe, then stop
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        with contextlib.suppress(OSError):
            os.dup2(original, 2)
        thread.join(timeout=5)

    atexit.register(restore)


def _pump(read_end: int, out: int) -> None:
    pending = b""
    while True:
        try:
            chunk = os.read(read_end, 65536)
        except OSError:
            chunk = b""
        if not chunk:
            if pending and not is_startup_noise(pending):
                _write(out, pending)
            os.close(read_end)
            return
        pending += chunk
        *lines, pending = pending.split(b"\n")
        kept = b"".join(line + b"\n" for line in lines if not is_startup_noise(line))
        # a progress bar redraws with \r and no newline: pass a partial line on unless it may be noise
        if pending and pending[:1] not in _NOISE_FIRST:
            kept, pending = kept + pending, b""
        if kept:
            _write(out, kept)


def _write(fd: int, data: bytes) -> None:
    with contextlib.suppress(OSError):
        while data:
            data = data[os.write(fd, data) :]
