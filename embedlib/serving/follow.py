"""The served version and its hot swap: load beside the old index, verify, switch one reference.

A request takes ``follower.current`` once and uses that snapshot to the end, so requests in
flight finish on the old index while the new one is loaded; the old index is freed when the
last of them ends. A load or verification that fails leaves the old version served and is
reported by ``status()`` (``/health``). Memory: two indexes (plus the Parquet being read)
during a swap.
"""
from __future__ import annotations

import datetime as _dt
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from embedlib import integrity, manifest
from embedlib.config import ServeConfig
from embedlib.log import get_logger
from embedlib.serving.index import EmbeddingIndex, index_options
from embedlib.serving.precomputed import PrecomputedNeighbors
from embedlib.serving.vectors import read_embeddings

log = get_logger(__name__)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class ServedVersion:
    """One loaded version: the index and what /health and the version header say of it."""

    index: EmbeddingIndex
    version: str | None
    location: str
    loaded_at: str
    manifest: manifest.Manifest | None = None
    max_id_length: int = 0
    neighbors: PrecomputedNeighbors | None = None  # the version's precomputed top K, if any

    @classmethod
    def of(cls, index: EmbeddingIndex, version: str | None, location: str = "",
           manifest_: manifest.Manifest | None = None,
           neighbors: PrecomputedNeighbors | None = None) -> ServedVersion:
        longest = max(map(len, index.ids)) if len(index) else 0
        return cls(index, version, location, _now(), manifest_, longest, neighbors)


def load_version(m: manifest.Manifest, cfg: ServeConfig) -> ServedVersion:
    """The index of manifest ``m``, its row count and fingerprint checked against it, and its
    precomputed neighbours when the manifest names them."""
    ids, vectors = read_embeddings(m.location)
    integrity.check(f"version {m.dt} ({m.side}) at {m.location}", m.n_rows, m.fingerprint,
                    len(ids), integrity.fingerprint_like(m.fingerprint, ids, vectors))
    index = EmbeddingIndex(ids, vectors, **index_options(cfg))
    neighbors = PrecomputedNeighbors.load(m.neighbors, index) if m.neighbors else None
    return ServedVersion.of(index, m.dt, m.location, m, neighbors)


class VersionFollower:
    """Holds the served version and swaps it for the newest manifest on reload.

    Parameters
    ----------
    current : ServedVersion
        What is served until a reload succeeds.
    cfg : ServeConfig
        ``side``, ``follow`` and ``poll_seconds``, and the index options of new versions.
    root : str or None
        The manifests folder (``manifest.manifest_root``); None: nothing to reload from.
    signal_path : path or None
        A file shared by the worker processes of one service: an admin reload in one worker
        writes it, the others see it change within a second and reload too.
    """

    def __init__(self, current: ServedVersion, cfg: ServeConfig, root: str | None = None,
                 signal_path: Path | None = None):
        self.cfg, self.root = cfg, root
        self.signal_path = Path(signal_path) if signal_path else None
        self._current = current
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failed: manifest.Manifest | None = None
        self._failures, self._retry_at = 0, 0.0  # of _failed: polls retry it with backoff
        self._signal_seen = self._read_signal()
        self.last_error: dict | None = None
        self.last_check_at: str | None = None
        self.last_success_at: str | None = None
        self.reloads = 0

    @property
    def current(self) -> ServedVersion:
        return self._current

    def reload(self, retry_failed: bool = True) -> dict:
        """Swap to the newest manifest when it is newer than the served one (a rerun of the
        served dt is newer), or fall back to the newest one left when the served version was
        unregistered (its dt has no manifest any more).

        Returns {"version", "changed", "error"}; a failure keeps the served version.
        ``retry_failed=False`` (polling) skips a manifest that failed to load until its
        backoff has passed (poll_seconds, doubled at each failure, at most 64 times).
        Any exception is caught: it is logged, kept as ``last_error`` and the service says
        ``degraded`` in /health until a check succeeds.
        """
        if self.root is None:
            raise manifest.ManifestError("this service serves a path, not the registry: "
                                         "there are no manifests to reload from")
        with self._lock:
            self.last_check_at = _now()
            newest = None
            try:
                newest = manifest.latest_manifest(self.root, self.cfg.side)
                why = self._why_load(newest)
                if why is None:
                    self._checked()
                    return self._outcome(changed=False)
                if newest == self._failed and not retry_failed and time.monotonic() < self._retry_at:
                    return self._outcome(changed=False)
                log.log(logging.WARNING if why == "unregistered" else logging.INFO,
                        "%s: loading version %s from %s", self._reason(why), newest.dt, newest.location)
                loaded = load_version(newest, self.cfg)
            except Exception as exc:  # noqa: BLE001 - any failure keeps the served version
                self._fail(newest, exc)
                return self._outcome(changed=False)
            self._current = loaded  # one reference assignment: the swap
            self._checked()
            self.reloads += 1
            log.info("now serving version %s (%d rows)", loaded.version, len(loaded.index))
            return self._outcome(changed=True)

    def _checked(self) -> None:
        self._failed, self._failures, self.last_error = None, 0, None
        self.last_success_at = self.last_check_at

    def _fail(self, newest: manifest.Manifest | None, exc: BaseException) -> None:
        self._failures = self._failures + 1 if newest == self._failed else 1
        self._failed = newest
        backoff = self.cfg.poll_seconds * 2 ** min(self._failures - 1, 6)
        self._retry_at = time.monotonic() + backoff
        self.last_error = {"at": self.last_check_at, "message": f"{type(exc).__name__}: {exc}"[:2000],
                           "failures": self._failures}
        log.error("reload failed (%d times; next poll retry in %.0f s), still serving %s: %s: %s",
                  self._failures, backoff, self._current.version, type(exc).__name__, exc)

    def _why_load(self, newest: manifest.Manifest) -> str | None:
        """"newer", "unregistered" (the served dt has no manifest left) or None: keep serving.
        Never an older version while the served one is registered: no rollback."""
        served = self._current.manifest
        if served is None or newest.key > served.key:
            return "newer"
        if newest.key < served.key and served.dt not in manifest.list_dts(self.root, self.cfg.side):
            return "unregistered"
        return None

    def _reason(self, why: str) -> str:
        if why == "unregistered":
            return f"version {self._current.version} was unregistered, falling back"
        return "newer version"

    def _outcome(self, changed: bool) -> dict:
        return {"version": self._current.version, "changed": changed, "error": self.last_error}

    def request_reload_everywhere(self) -> dict:
        """An admin reload: this process now, the other workers through the signal file."""
        if self.signal_path is not None:
            stamp = _now()
            temp = self.signal_path.with_suffix(f".{threading.get_ident()}.tmp")
            temp.write_text(stamp)
            temp.replace(self.signal_path)
            self._signal_seen = stamp
        return self.reload()

    def _read_signal(self) -> str | None:
        try:
            return self.signal_path.read_text() if self.signal_path else None
        except FileNotFoundError:
            return None

    def start(self) -> None:
        """Poll in a daemon thread: every poll_seconds (follow: latest), and the signal file."""
        if self.root is None or (self.cfg.follow != "latest" and self.signal_path is None):
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="version-follower", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        tick = min(self.cfg.poll_seconds, 1.0) if self.signal_path else self.cfg.poll_seconds
        waited = 0.0
        while not self._stop.wait(tick):
            waited += tick
            try:
                signal = self._read_signal()
                if signal != self._signal_seen:
                    self._signal_seen = signal
                    self.reload()
                elif self.cfg.follow == "latest" and waited >= self.cfg.poll_seconds:
                    waited = 0.0
                    self.reload(retry_failed=False)
            except Exception as exc:  # noqa: BLE001 - the poll goes on; /health says degraded
                self.last_error = {"at": _now(), "message": f"poll: {type(exc).__name__}: {exc}"[:2000]}
                log.exception("version poll failed; polling goes on")

    def status(self) -> dict:
        """What /health says of the served version and of following: ``status`` is
        ``degraded`` while the last check failed or the poll thread has stopped."""
        served = self._current
        polling = self._thread is not None and not self._stop.is_set()
        stopped = polling and not self._thread.is_alive()
        return {"status": "degraded" if self.last_error or stopped else "ok",
                "version": served.version, "loaded_at": served.loaded_at,
                "location": served.location, "follow": self.cfg.follow,
                "poll_seconds": self.cfg.poll_seconds, "poll_thread": "stopped" if stopped else
                ("running" if polling else "off"), "last_check_at": self.last_check_at,
                "last_success_at": self.last_success_at, "last_reload_error": self.last_error,
                "reloads": self.reloads}
