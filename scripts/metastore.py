"""Start and stop a local Hive metastore service (thrift) from pyspark's own jars.

The server is org.apache.hadoop.hive.metastore.HiveMetaStore from hive-metastore-2.3.10.jar
in pyspark's jars/ folder: nothing to download. Its backing store is a Derby database in
DIR/derby (the schema is created on the first start), its warehouse DIR/warehouse. It
listens on 127.0.0.1 only, on a free port (or --port), in a process group of its own.

  .venv/bin/python scripts/metastore.py start --dir /tmp/hms   # prints thrift://127.0.0.1:PORT
  .venv/bin/python jobs/run_pipeline.py --conf conf/local.yaml --dt 2024-01-10 \\
      --set spark.hive_metastore_uris=thrift://127.0.0.1:PORT
  .venv/bin/python scripts/metastore.py status --dir /tmp/hms  # the URI, exit 1 if not running
  .venv/bin/python scripts/metastore.py stop --dir /tmp/hms

`start` returns once the port accepts connections (5-30 s on an idle machine; minutes on a
busy one), or after --timeout seconds (300) fails with the end of DIR/metastore.log.
DIR/metastore.json records the process id, port and URI; `stop` ends the whole process
group (SIGTERM, then SIGKILL after 20 s) and removes that file. Another `start` on the same
DIR while one runs prints its URI and starts nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyspark

JARS = Path(pyspark.__file__).parent / "jars"
SERVER_CLASS = "org.apache.hadoop.hive.metastore.HiveMetaStore"
# hive.async.log.enabled=false: Hive's async log4j appender needs the LMAX disruptor, which
# pyspark does not ship (without it the server dies at start).
HIVE_SITE = """<?xml version="1.0"?>
<configuration>
  <property><name>javax.jdo.option.ConnectionURL</name>
    <value>jdbc:derby:;databaseName={derby};create=true</value></property>
  <property><name>datanucleus.schema.autoCreateAll</name><value>true</value></property>
  <property><name>hive.metastore.schema.verification</name><value>false</value></property>
  <property><name>hive.async.log.enabled</name><value>false</value></property>
  <property><name>hive.metastore.warehouse.dir</name><value>{warehouse}</value></property>
</configuration>
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def state(folder: Path) -> dict | None:
    """What metastore.json records, if that server still runs."""
    path = folder / "metastore.json"
    if not path.is_file():
        return None
    info = json.loads(path.read_text())
    return info if alive(info["pid"]) else None


def start(folder: Path, port: int | None = None, timeout: float = 300) -> dict:
    """Start the server on ``folder`` (or find the one running there); its metastore.json."""
    folder = folder.resolve()
    running = state(folder)
    if running:
        return running
    conf = folder / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "hive-site.xml").write_text(HIVE_SITE.format(derby=folder / "derby", warehouse=folder / "warehouse"))
    port = port or free_port()
    # Derby writes derby.log in its system home.
    cmd = ["java", "-Xmx512m", f"-Dderby.system.home={folder}",
           "-cp", f"{conf}{os.pathsep}{JARS}/*", SERVER_CLASS, "-p", str(port)]
    with (folder / "metastore.log").open("w") as out:
        proc = subprocess.Popen(cmd, cwd=folder, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    info = {"pid": proc.pid, "port": port, "uri": f"thrift://127.0.0.1:{port}", "folder": str(folder)}
    (folder / "metastore.json").write_text(json.dumps(info))
    deadline = time.monotonic() + timeout
    while not listening(port):
        ended = proc.poll()
        if ended is not None or time.monotonic() > deadline:
            stop(folder)
            tail = (folder / "metastore.log").read_text(errors="replace")[-3000:]
            why = f"it ended with exit code {ended}" if ended is not None else f"not listening after {timeout:g} s"
            raise RuntimeError(f"the metastore did not start on port {port} ({why}); "
                               f"end of {folder / 'metastore.log'}:\n{tail}")
        time.sleep(0.5)
    return info


def stop(folder: Path, timeout: float = 20) -> bool:
    """Stop the server of ``folder`` and its process group; False when none was recorded."""
    path = folder.resolve() / "metastore.json"
    if not path.is_file():
        return False
    pid = json.loads(path.read_text())["pid"]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + timeout
        while alive(pid) and time.monotonic() < deadline:
            try:  # our child when started by this process: reap it
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            time.sleep(0.2)
    path.unlink()
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("start", "stop", "status"))
    parser.add_argument("--dir", required=True, type=Path, help="the server's folder (Derby, warehouse, log)")
    parser.add_argument("--port", type=int, help="port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--timeout", type=float, default=300,
                        help="seconds to wait for the port (default 300: minutes on a busy machine)")
    args = parser.parse_args(argv)
    if args.action == "start":
        try:
            print(start(args.dir, args.port, args.timeout)["uri"])
        except RuntimeError as exc:
            print(exc, file=sys.stderr)
            return 2
        return 0
    if args.action == "stop":
        return 0 if stop(args.dir) else 1
    running = state(args.dir.resolve())
    print(running["uri"] if running else "not running")
    return 0 if running else 1


if __name__ == "__main__":
    sys.exit(main())
