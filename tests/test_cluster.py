"""A real cluster: a Spark standalone master and two workers on 127.0.0.1, the pipeline
submitted to it with the `make package` zip, and the same two dts run in local mode to
compare with. The cluster run's tables are in the test run's Hive metastore service
(scripts/metastore.py), as on a real cluster; the local run's in an embedded one.

The driver and the executors run a Python that cannot import embedlib from the checkout
(the venv's interpreter with -S: its .pth files, among them the editable install's finder,
are never read), so the run proves that the zip alone carries the library. Every process the
test starts is stopped by its process id (its process group), also when the test fails.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pyspark
import pytest

from embedlib.sample_data import SampleSpec, write_sample
from embedlib.serving.backend import cupy_status
from tests.helpers import (
    assert_same_versions,
    build_package,
    embedlib_lines,
    outcome,
    package_code_version,
    pipeline_sets,
    spark_submit,
    tables_of,
)

SPARK_HOME = Path(pyspark.__file__).parent
SPARK_CLASS = SPARK_HOME / "bin" / "spark-class"
DTS = ("2024-01-09", "2024-01-10")
WORKERS = 2
# Nothing binds another address than 127.0.0.1; the daemons' own JVMs stay small.
LOCALHOST = {"SPARK_LOCAL_IP": "127.0.0.1", "SPARK_DAEMON_MEMORY": "256m"}
# No REST submission server: it would take the fixed port 6066.
MASTER_OPTS = {"SPARK_MASTER_OPTS": "-Dspark.master.rest.enabled=false"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen) -> None:
    """Stop a daemon and what it started (its own process group: executors, Python workers)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    try:  # children left behind after the daemon itself ended
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def wait_for_line(proc: subprocess.Popen, log: Path, pattern: str, timeout: float = 120) -> re.Match:
    """The first match of ``pattern`` in a daemon's log; fails when the daemon ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(pattern, log.read_text(errors="replace"))
        if found:
            return found
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    pytest.fail(f"no {pattern!r} in {log} (exit code {proc.poll()}):\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    return build_package(tmp_path_factory.mktemp("dist") / "embedlib.zip")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """spark://127.0.0.1:<port> of a standalone master with WORKERS workers (1 core, 1g each)."""
    folder = tmp_path_factory.mktemp("cluster")
    env = {**os.environ, **LOCALHOST, **MASTER_OPTS, "SPARK_HOME": str(SPARK_HOME)}
    started: list[subprocess.Popen] = []

    def start(name: str, *args: str) -> tuple[subprocess.Popen, Path]:
        log = folder / f"{name}.log"
        with log.open("w") as out:
            proc = subprocess.Popen([str(SPARK_CLASS), *args], cwd=folder, env=env, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        started.append(proc)
        return proc, log

    try:
        port = free_port()
        master, log = start("master", "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                            "--port", str(port), "--webui-port", str(free_port()))
        url = f"spark://127.0.0.1:{port}"
        wait_for_line(master, log, re.escape(f"Starting Spark master at {url}"))
        for i in range(WORKERS):
            worker, log = start(f"worker{i}", "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
                                "--webui-port", "0", "--cores", "1", "--memory", "1g",
                                "--work-dir", str(folder / f"work{i}"), url)
            wait_for_line(worker, log, "Successfully registered with master")
        yield url
    finally:
        for proc in reversed(started):
            stop(proc)


@pytest.fixture(scope="module")
def zip_only_python(tmp_path_factory, package) -> Path:
    """The venv's Python that finds its dependencies but not the checkout's embedlib.

    -S: no site module, so no .pth file runs (the editable install's finder is one); the
    venv's site-packages come in as a plain path instead. -s: no user site either. Checked
    here: without the zip ``import embedlib`` fails, with it embedlib comes from the zip.
    """
    folder = tmp_path_factory.mktemp("python")
    wrapper = folder / "python"
    site_packages = sysconfig.get_paths()["purelib"]
    wrapper.write_text('#!/bin/sh\n'
                       f'PYTHONPATH="${{PYTHONPATH:+$PYTHONPATH:}}{site_packages}" '
                       f'PYTHONNOUSERSITE=1 exec {sys.executable} -s -S "$@"\n')
    wrapper.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def run(code: str, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(wrapper), "-c", code], cwd=folder, env={**env, **extra},
                              capture_output=True, text=True)
    without = run("import embedlib")
    assert without.returncode == 1 and "No module named 'embedlib'" in without.stderr
    deps = run("import numpy, scipy, pandas, pyarrow, gensim, yaml, pyspark")
    assert deps.returncode == 0, deps.stderr
    with_zip = run("import embedlib.steps.build_neighbors, embedlib; print(embedlib.__file__)",
                   PYTHONPATH=str(package))
    assert with_zip.returncode == 0 and with_zip.stdout.startswith(str(package)), with_zip.stderr
    return wrapper


def pipeline_run(package: Path, workdir: Path, sample: Path, python: Path, master: str,
                 *submit_args: str, sets=()) -> subprocess.CompletedProcess:
    """jobs/run_pipeline.py over DTS under spark-submit; gensim made repeatable (one worker,
    a fixed PYTHONHASHSEED), so both runs train the same vectors. The corpus folder is one
    that every "host" sees: they are all this one."""
    workdir.mkdir()
    return spark_submit(package, workdir, "run_pipeline", "--from", DTS[0], "--to", DTS[-1],
                        sets=[*pipeline_sets(workdir, sample), f"train.corpus_dir={workdir / 'corpus'}", *sets],
                        master=master, python=python, submit_args=("--driver-memory", "1g", *submit_args),
                        env={**LOCALHOST, "PYTHONHASHSEED": "0"}, timeout=600)


@pytest.mark.slow
def test_pipeline_on_a_standalone_cluster_matches_local_mode(cluster, package, zip_only_python, tmp_path,
                                                             metastore_service):
    write_sample(SampleSpec(n_events=8000, n_users=150, n_items=120, n_clusters=4, days=3, end_date=DTS[-1]),
                 tmp_path / "sample")
    on_cluster = pipeline_run(package, tmp_path / "cluster", tmp_path / "sample", zip_only_python, cluster,
                              "--conf", "spark.executor.memory=768m", "--conf", "spark.executor.cores=1",
                              "--conf", "spark.driver.host=127.0.0.1",
                              "--conf", "spark.driver.bindAddress=127.0.0.1",
                              sets=[f"spark.hive_metastore_uris={metastore_service}", "tables.database=on_cluster"])
    assert on_cluster.returncode == 0, outcome(on_cluster)
    log = embedlib_lines(on_cluster, "INFO")
    assert any(f" on {cluster}, warehouse" in line for line in log)
    # The executors' tasks (other JVMs and Pythons) told the driver what they scored with.
    backend = "numpy" if cupy_status()[0] is None else "cupy"  # serve.backend=auto
    assert sum("neighbour index:" in line and f"used {backend} on " in line for line in log) == len(DTS)
    local = pipeline_run(package, tmp_path / "local", tmp_path / "sample", zip_only_python, "local[2]")
    assert local.returncode == 0, outcome(local)

    versions = assert_same_versions(tables_of(on_cluster), tables_of(local), DTS)
    for dt in DTS:
        for side in ("item", "context"):
            assert versions[dt][side]["code_version"] == package_code_version(package)
    assert versions[DTS[-1]]["item"]["parent_dt"] == DTS[0]  # the second dt is aligned to the first
