"""A bounded closed-loop HTTP load on the lookup service, for its tests and benchmark.

Each of ``concurrency`` clients (coroutines of one asyncio loop) holds one keep-alive
connection and sends its next request when the previous answer is in, until the fixed list
of requests is used up or the deadline passes. It talks to loopback addresses only.
"""
from __future__ import annotations

import asyncio
import http.client
import itertools
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from embedlib import manifest
from embedlib.serving.limits import VERSION_HEADER

LOOPBACK = ("127.0.0.1", "::1", "localhost")


@dataclass
class LoadResult:
    """Per answered request: start and latency (s), status (0: no answer), version header, body."""

    seconds: float
    starts: list = field(default_factory=list)
    latencies: list = field(default_factory=list)
    statuses: list = field(default_factory=list)
    versions: list = field(default_factory=list)
    bodies: list = field(default_factory=list)
    errors: list = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(1 for s in self.statuses if s != 200)

    def summary(self) -> dict:
        """requests/s and latency percentiles in milliseconds."""
        ms = np.asarray(self.latencies) * 1000
        pct = {f"p{str(q).replace('.', '_')}_ms": round(float(np.percentile(ms, q)), 2)
               for q in (50, 99, 99.9)} if len(ms) else {}
        return {"requests": len(self.statuses), "failed": self.failed,
                "qps": round(len(self.statuses) / self.seconds, 1), **pct}


def closed_loop(port: int, requests: list, concurrency: int, host: str = "127.0.0.1",
                max_seconds: float = 300.0, keep_bodies: bool = False,
                until: threading.Event | None = None) -> LoadResult:
    """Send ``requests`` ((method, path, body bytes or None), ...) from ``concurrency`` clients,
    until they are used up, ``max_seconds`` have passed or ``until`` is set.

    The clients are coroutines of one asyncio loop on raw keep-alive connections, not
    threads: the load generator's own cost per request stays small (no GIL handover
    between client threads, no email-module header parsing), so the latencies measured are
    the server's and the network's, not the client's queueing."""
    if host not in LOOPBACK:
        raise ValueError(f"load tests target loopback only, not {host!r}")
    return asyncio.run(_closed_loop(host, port, requests, concurrency, max_seconds, keep_bodies, until))


async def _closed_loop(host: str, port: int, requests: list, concurrency: int, max_seconds: float,
                       keep_bodies: bool, until: threading.Event | None) -> LoadResult:
    next_request = itertools.count()
    deadline = time.perf_counter() + max_seconds
    started = time.perf_counter()
    result = LoadResult(0.0)

    async def client() -> None:
        conn = None
        while time.perf_counter() < deadline and not (until is not None and until.is_set()):
            j = next(next_request)
            if j >= len(requests):
                break
            method, path, body = requests[j]
            t0 = time.perf_counter()
            try:
                conn = conn or await asyncio.wait_for(asyncio.open_connection(host, port), 60)
                conn[1].write(_request_bytes(method, path, body, host))
                status, headers, data = await asyncio.wait_for(_response(conn[0]), 60)
                version = headers.get(VERSION_HEADER.lower())
                if headers.get("connection") == "close":
                    conn = _close(conn)
            except (OSError, EOFError, ValueError, asyncio.TimeoutError) as exc:
                conn = _close(conn)
                status, version, data = 0, None, repr(exc).encode()
            result.starts.append(t0)
            result.latencies.append(time.perf_counter() - t0)
            result.statuses.append(status)
            result.versions.append(version)
            result.bodies.append((j, data) if keep_bodies or status != 200 else None)
            if status != 200:
                result.errors.append(data[:300])
        _close(conn)

    await asyncio.gather(*(client() for _ in range(concurrency)))
    result.seconds = time.perf_counter() - started
    return result


def _request_bytes(method: str, path: str, body: bytes | None, host: str) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return (head + "\r\n").encode("latin-1") + (body or b"")


async def _response(reader: asyncio.StreamReader) -> tuple[int, dict, bytes]:
    """(status, headers with lower-case names, body) of one HTTP/1.1 answer: a
    Content-Length body, a chunked one, or one that ends with the connection."""
    line = await reader.readline()
    if not line:
        raise EOFError("the server closed the connection")
    status = int(line.split()[1])
    headers = {}
    while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        return status, headers, await reader.readexactly(int(headers["content-length"]))
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while size := int((await reader.readline()).split(b";")[0], 16):
            chunks.append(await reader.readexactly(size))
            await reader.readline()
        await reader.readline()
        return status, headers, b"".join(chunks)
    headers["connection"] = "close"
    return status, headers, await reader.read()


def _close(conn: tuple | None) -> None:
    """Close a (reader, writer) connection if there is one; None, the client's next connection."""
    if conn is not None:
        conn[1].close()


def wait_until_up(port: int, host: str = "127.0.0.1", timeout: float = 120.0,
                  proc=None) -> dict:
    """GET /health until it answers (or ``proc``, a server subprocess, exits)."""
    import json

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode}")
        try:
            conn = http.client.HTTPConnection(host, port, timeout=5)
            conn.request("GET", "/health")
            body = json.loads(conn.getresponse().read())
            conn.close()
            return body
        except (OSError, http.client.HTTPException, ValueError):
            time.sleep(0.2)
    raise TimeoutError(f"no answer on {host}:{port} within {timeout} s")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def thread_server(app, port: int) -> tuple:
    """(uvicorn.Server, thread) serving ``app`` on 127.0.0.1:port in this process."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until_up(port)
    return server, thread


def write_version(root: str, dt: str, folder, ids, vectors: np.ndarray, side: str = "item",
                  **manifest_fields) -> manifest.Manifest:
    """A version without Spark, for tests and benchmarks: ``folder``/part-0.parquet with
    (id, vector) and its manifest under ``root`` (fields overridable, e.g. a wrong n_rows)."""
    from pathlib import Path

    import pyarrow as pa
    import pyarrow.parquet as pq

    from embedlib import integrity

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    dim = vectors.shape[1]
    values = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).ravel())
    column = pa.FixedSizeListArray.from_arrays(values, dim).cast(pa.list_(pa.float32()))
    pq.write_table(pa.table({"id": pa.array(list(ids), pa.string()), "vector": column}),
                   folder / "part-0.parquet")
    fields = dict(dt=dt, side=side, location=str(folder), n_rows=len(ids),
                  fingerprint=integrity.rows_fingerprint(ids, vectors), dim=dim,
                  created_at="2024-01-01T00:00:00")
    return write_manifest(root, manifest.Manifest(**{**fields, **manifest_fields}))


def write_manifest(root: str, m: manifest.Manifest) -> manifest.Manifest:
    """``m`` under the local manifests folder ``root`` (as registry.register would)."""
    from pathlib import Path

    target = Path(root) / m.side / m.file_name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(m.to_json())
    return m


def write_neighbors(folder, index, k: int, metric: str | None = None, ids=None) -> dict:
    """The exact top ``k`` of every id of ``index``, or of ``ids`` only (exclude_self, as
    jobs/build_neighbors.py computes them) in ``folder``/part-0.parquet; the
    ``Manifest.neighbors`` that names them."""
    from pathlib import Path

    import pyarrow as pa
    import pyarrow.parquet as pq

    from embedlib.steps.build_neighbors import neighbors_batch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    queries = list(index.ids if ids is None else ids)
    result = index.topk(queries, k=k, metric=metric, exclude_self=True)
    pq.write_table(pa.Table.from_batches([neighbors_batch(result)]), folder / "part-0.parquet")
    return {"location": str(folder), "k": k, "metric": metric or index.metric, "n_rows": len(queries)}
