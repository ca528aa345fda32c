"""Benchmarks, each run as a module from the repository root: `python -m bench.claim`, ...

Each measures its own baseline in the same run. `bench.targets` holds the apps `bench.api`
serves beside the real one.
"""


def scratch_backends(directory: str, postgres: str | None, prefix: str) -> list:
    """(name, url_for(size, variant)): a fresh SQLite file per run under `directory`, and the
    scratch PostgreSQL database when one is given (each run drops and recreates its tables)."""
    backends = [("sqlite", lambda n, i: f"sqlite:///{directory}/{prefix}{n}{i}.db")]
    if postgres:
        backends.append(("postgres", lambda n, i: postgres))
    return backends
