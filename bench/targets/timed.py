"""A WSGI wrapper for `bench/api.py`: the thread CPU each answer costs inside the app.

gunicorn serves `bench.targets.timed:app`, which imports the app named by TIMED_APP
(`module:attribute`).
Each worker keeps its (answers, CPU nanoseconds) in its own 16-byte file under TIMED_APP_DIR,
written through mmap, so counting adds no system call per answer beyond the two clock reads.
bench.api sums the files before and after a round: of the CPU an answer costs gunicorn's
processes, this is the app's part (Flask, the view, the database driver); the rest is gunicorn
and the kernel (parsing, sockets), the same work for every app.
"""

import importlib
import mmap
import os
import struct
import time
from pathlib import Path


def _load(name: str):
    module, attribute = name.split(":")
    return getattr(importlib.import_module(module), attribute)


_inner = _load(os.environ["TIMED_APP"]) if "TIMED_APP" in os.environ else None  # bench.api
_DIR = Path(os.environ.get("TIMED_APP_DIR", "."))  # imports this module only for read_totals
_COUNTERS = struct.Struct("=QQ")  # answers, CPU nanoseconds
_totals = {}  # pid -> [answers, nanoseconds, mmap]: a worker opens its file on its first answer


def app(environ, start_response):
    started = time.thread_time_ns()
    result = _inner(environ, start_response)
    try:
        body = b"".join(result)  # the body is produced inside the app
    finally:
        if hasattr(result, "close"):  # as a WSGI server must (PEP 3333): teardown runs here
            result.close()
    spent = time.thread_time_ns() - started
    totals = _totals.get(os.getpid()) or _open()
    totals[0] += 1
    totals[1] += spent
    _COUNTERS.pack_into(totals[2], 0, totals[0], totals[1])
    return [body]


def _open() -> list:
    with open(_DIR / str(os.getpid()), "w+b") as file:
        file.write(bytes(_COUNTERS.size))
        file.flush()
        counters = mmap.mmap(file.fileno(), _COUNTERS.size)
    totals = _totals[os.getpid()] = [0, 0, counters]
    return totals


def read_totals(directory: Path) -> tuple[int, int]:
    """(answers, CPU nanoseconds) so far, summed over the workers' files."""
    answers = nanoseconds = 0
    for path in directory.iterdir():
        data = path.read_bytes()
        if len(data) == _COUNTERS.size:
            count, spent = _COUNTERS.unpack(data)
            answers, nanoseconds = answers + count, nanoseconds + spent
    return answers, nanoseconds
