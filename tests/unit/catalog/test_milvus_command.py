"""`unifashion catalog engine`: a local Milvus server for `--engine-uri`, run until stopped. In a module of
its own: the server's embedded etcd takes fixed ports, so one runs on a machine at a time (the
catalog tests' server is stopped by then)."""

import socket

import pytest

from unifashion.catalog import milvus as engine

pytestmark = pytest.mark.slow


def test_the_engine_command_runs_a_server_until_stopped(tmp_path):
    import signal
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "unifashion", "catalog", "engine", "--dir", str(tmp_path / "m"), "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        line = ""
        while "Milvus on" not in line:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "the engine command ended before the server started"
        assert f"http://127.0.0.1:{port}" in line
        assert engine._client(f"http://127.0.0.1:{port}").list_collections() == []
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
