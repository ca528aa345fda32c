"""The files gunicorn workers share their metrics in (PROMETHEUS_MULTIPROC_DIR): a dead worker's
counts are merged into one file per kind, so the directory holds the live workers' files and two.

prometheus_client writes `<kind>_<pid>.db` for each process, and its `mark_process_dead` removes
only live gauges' files: every worker recycled by gunicorn's `max_requests` left its counter and
histogram files behind, and each scrape read them all.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from prometheus_client.mmap_dict import MmapedDict

log = logging.getLogger(__name__)

# `counter_run<master pid>.db`, `histogram_run<…>.db`: the counts of every dead worker of the
# gunicorn run whose master has that pid.
MERGED_PREFIX = "run"
SUMMED_KINDS = ("counter", "histogram")  # summed across processes, so a sum keeps them right
_LOCK = ".lock"  # not *.db: prometheus_client never reads it


@contextlib.contextmanager
def locked(directory: Path, exclusive: bool):
    """Hold the directory's lock: shared while a scrape reads the files, exclusive while
    files are merged, so no scrape counts a worker twice or not at all."""
    descriptor = os.open(directory / _LOCK, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(descriptor)  # releases the lock


def writer_pid(path: Path) -> int | None:
    """prometheus_client names each file `<kind>_<pid>.db` (a gauge's `<kind>_<mode>_<pid>.db`);
    None for the merged files."""
    tail = path.stem.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else None


def merged_run(path: Path) -> int | None:
    """The master pid of the run whose dead workers a merged file holds; None for others."""
    tail = path.stem.rsplit("_", 1)[-1]
    number = tail.removeprefix(MERGED_PREFIX)
    return int(number) if tail.startswith(MERGED_PREFIX) and number.isdigit() else None


def merge_dead_workers(directory: Path, dead: Iterable[int], run: int) -> int:
    """Add the counters and histograms of the processes `dead` to the merged files of the run
    whose master is `run` and remove theirs; returns how many files were merged. Cost: reading
    those files and the merged ones, whose size grows with the label sets, not the workers."""
    dead = set(dead)
    with locked(directory, exclusive=True):
        files = collections.defaultdict(list)
        for path in directory.glob("*.db"):
            kind = path.name.split("_", 1)[0]
            if kind in SUMMED_KINDS and writer_pid(path) in dead:
                files[kind].append(path)
        for kind, paths in files.items():
            _merge(directory / f"{kind}_{MERGED_PREFIX}{run}.db", paths)
    return sum(len(paths) for paths in files.values())


def _merge(target: Path, paths: list[Path]) -> None:
    """Sum the values of `paths` into `target`: written aside, then renamed over it (so a
    crash leaves the old one whole), then `paths` removed, all under the exclusive lock."""
    totals: dict[str, float] = collections.defaultdict(float)
    for path in [target, *paths] if target.exists() else paths:
        try:
            values = list(MmapedDict.read_all_values_from_file(str(path)))
        except Exception as exc:  # a truncated or foreign file: its counts cannot be read
            log.warning("metrics: dropping unreadable %s: %s", path.name, exc)
            continue
        for key, value, _timestamp, _position in values:
            totals[key] += value
    if totals or target.exists():  # else nothing readable to keep
        partial = target.with_name(target.name + ".partial")  # not *.db: never scraped
        partial.unlink(missing_ok=True)
        merged = MmapedDict(str(partial))
        try:
            for key, value in totals.items():
                merged.write_value(key, value, 0.0)
        finally:
            merged.close()
        os.replace(partial, target)
    for path in paths:
        path.unlink(missing_ok=True)
