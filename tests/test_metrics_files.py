"""Merging dead gunicorn workers' metrics files: a scrape reads the same sums from fewer files."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest, multiprocess
from prometheus_client.mmap_dict import MmapedDict, mmap_key

from partner_api.web import metrics_files

HELP = "HTTP requests answered."


def write(path: Path, values: dict[tuple[str, str], float]) -> None:
    """A file as prometheus_client writes it: (sample name, route) → value."""
    data = MmapedDict(str(path))
    for (sample, route), value in values.items():
        key = mmap_key("partner_api_http_requests", sample, ["route"], [route], HELP)
        data.write_value(key, value, 0.0)
    data.close()


def scrape(directory: Path) -> bytes:
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(directory))
    return generate_latest(registry)


def test_dead_workers_files_are_merged_and_the_sums_do_not_change(tmp_path):
    total = "partner_api_http_requests_total"
    write(tmp_path / "counter_101.db", {(total, "/a"): 3, (total, "/b"): 1})
    write(tmp_path / "counter_102.db", {(total, "/a"): 4})
    write(tmp_path / "counter_103.db", {(total, "/c"): 2})  # alive: left alone
    before = scrape(tmp_path)
    assert b'partner_api_http_requests_total{route="/a"} 7.0' in before

    assert metrics_files.merge_dead_workers(tmp_path, [101], run=7) == 1
    assert metrics_files.merge_dead_workers(tmp_path, [102], run=7) == 1  # into the same file
    assert sorted(p.name for p in tmp_path.glob("*.db")) == ["counter_103.db", "counter_run7.db"]
    assert scrape(tmp_path) == before
    assert metrics_files.merged_run(tmp_path / "counter_run7.db") == 7
    assert metrics_files.writer_pid(tmp_path / "counter_run7.db") is None


def test_an_unreadable_file_is_dropped_and_the_merged_counts_kept(tmp_path):
    total = "partner_api_http_requests_total"
    write(tmp_path / "counter_101.db", {(total, "/a"): 3})
    metrics_files.merge_dead_workers(tmp_path, [101], run=7)
    (tmp_path / "counter_102.db").write_bytes(b"\xff" * 64)  # not a metrics file
    metrics_files.merge_dead_workers(tmp_path, [102], run=7)
    assert [p.name for p in tmp_path.glob("*.db")] == ["counter_run7.db"]
    assert b'partner_api_http_requests_total{route="/a"} 3.0' in scrape(tmp_path)
