"""`make run`'s script: serves API and dispatcher, Ctrl-C stops both, a failed start fails."""

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

from harness.net import free_port
from partner_api.config import ROOT


def run_script(tmp_path, port):
    """Start scripts/run.sh in its own process group, its output going to tmp_path/run.log."""
    (tmp_path / "home").mkdir(exist_ok=True)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path / "home"),  # where gunicorn would put its control socket
        "PORT": str(port),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'run.sqlite3'}",
    }
    with open(tmp_path / "run.log", "w") as log:
        return subprocess.Popen(
            ["bash", "scripts/run.sh"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def test_run_serves_the_api_prints_a_key_and_ctrl_c_stops_everything(tmp_path):
    port = free_port()
    process = run_script(tmp_path, port)
    log = tmp_path / "run.log"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/partner/me", timeout=1)
            except urllib.error.HTTPError as error:
                assert error.code == 401
                if "dispatcher polling every" in log.read_text():
                    break  # both processes are up
            except OSError:
                pass
            time.sleep(0.2)
        else:
            raise AssertionError(f"API and dispatcher never both started:\n{log.read_text()}")
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C does to the foreground group
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    output = log.read_text()
    assert process.returncode == 0, output
    assert "Demo API key (shown once, store it now): vc_" in output
    assert f"http://127.0.0.1:{port}/api/v1/partner/docs" in output
    assert "dispatcher stopped" in output
    # No control socket (~/.gunicorn/gunicorn.ctl) that a second `make run` would take over.
    assert list((tmp_path / "home").iterdir()) == []
    leftovers = subprocess.run(["pgrep", "-g", str(process.pid)], capture_output=True)
    assert leftovers.stdout == b""


def test_run_fails_when_the_port_is_taken(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        process = run_script(tmp_path, taken.getsockname()[1])
        try:
            process.wait(timeout=90)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
    output = (tmp_path / "run.log").read_text()
    assert process.returncode != 0, output
    assert "stopped unexpectedly" in output
