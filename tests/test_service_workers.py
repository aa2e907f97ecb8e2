"""scripts/serve.py with two uvicorn worker processes: each loads the index, and an admin
reload taken by one worker reaches the other (the shared reload signal)."""
import http.client
import json
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from embedlib.serving.loadtest import free_port, wait_until_up, write_version
from tests.helpers import REPO

IDS = [f"i{j}" for j in range(100)]


def fresh_get(port: int, path: str) -> tuple[int, dict]:
    """On a new connection, so that either worker may take it."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET" if path != "/admin/reload" else "POST", path)
    response = conn.getresponse()
    body = json.loads(response.read())
    conn.close()
    return response.status, body


@pytest.mark.slow
def test_two_workers_both_serve_and_both_reload(tmp_path):
    root, port = str(tmp_path / "_manifests"), free_port()
    rng = np.random.default_rng(0)
    write_version(root, "2024-01-01", tmp_path / "v1", IDS, rng.standard_normal((100, 8)))
    conf = tmp_path / "serve.yaml"
    conf.write_text(yaml.safe_dump({"serve": {"manifests": root, "workers": 2, "port": port,
                                              "backend": "numpy", "batch_wait_ms": 1}}))
    proc = subprocess.Popen([sys.executable, "scripts/serve.py", "--conf", str(conf)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until_up(port, proc=proc)
        pids = set()
        for _ in range(200):  # bounded: until both workers have answered
            pids.add(fresh_get(port, "/health")[1]["pid"])
            if len(pids) == 2:
                break
        assert len(pids) == 2
        write_version(root, "2024-01-02", tmp_path / "v2", IDS, rng.standard_normal((100, 8)))
        status, outcome = fresh_get(port, "/admin/reload")
        assert status == 200 and outcome["version"] == "2024-01-02"
        end, answers = time.monotonic() + 30, []
        while time.monotonic() < end:  # every worker on the new version within seconds
            answers = [fresh_get(port, "/health")[1] for _ in range(20)]
            if all(a["version"] == "2024-01-02" for a in answers):
                break
            time.sleep(0.2)
        assert {a["version"] for a in answers} == {"2024-01-02"}
        assert {a["reloads"] for a in answers} == {1}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
