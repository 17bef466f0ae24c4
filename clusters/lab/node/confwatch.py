"""containerd's CNI conf dir watcher (``cni_conf_syncer.go``), on raw inotify.

containerd uses fsnotify, which maps inotify events to Create (IN_CREATE, and IN_MOVED_TO), Write
(IN_MODIFY), Remove (IN_DELETE), Rename (IN_MOVED_FROM) and Chmod (IN_ATTRIB), and the syncer
ignores Create and Chmod. So ``echo … > f`` reloads (its Write), ``rm`` and ``mv`` out reload,
but ``mv`` *into* the dir and ``touch`` of a new file do not: the change waits for the next
Write/Remove/Rename. This module reproduces exactly that mapping; IN_CLOSE_WRITE is not watched,
because fsnotify does not report it either (``touch`` of an existing file must stay a no-op).
Removing or renaming the watched dir itself stops the syncer (containerd ≥ 2.1 then exits).
"""

from __future__ import annotations

import ctypes
import enum
import logging
import os
import select
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_IGNORED = 0x00008000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
WATCH_MASK = (
    IN_MODIFY
    | IN_ATTRIB
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CREATE
    | IN_DELETE
    | IN_DELETE_SELF
    | IN_MOVE_SELF
)
_EVENT = struct.Struct("iIII")

_libc = ctypes.CDLL(None, use_errno=True)


class Op(enum.Enum):
    """fsnotify's event ops."""

    CREATE = "CREATE"
    WRITE = "WRITE"
    REMOVE = "REMOVE"
    RENAME = "RENAME"
    CHMOD = "CHMOD"


@dataclass(frozen=True)
class Event:
    name: str
    """File name inside the dir ("" for the dir itself)."""
    op: Op
    reloaded: bool
    """Whether containerd's syncer would reload on this event."""

    def __str__(self) -> str:
        """fsnotify's ``Event.String()`` shape, as containerd logs it."""
        return f'{self.op.value:<13} "{self.name}"'


def classify(mask: int) -> Op | None:
    """fsnotify's ``newEvent`` mapping of one inotify mask (first matching op)."""
    if mask & (IN_CREATE | IN_MOVED_TO):
        return Op.CREATE
    if mask & (IN_DELETE | IN_DELETE_SELF):
        return Op.REMOVE
    if mask & IN_MODIFY:
        return Op.WRITE
    if mask & (IN_MOVE_SELF | IN_MOVED_FROM):
        return Op.RENAME
    if mask & IN_ATTRIB:
        return Op.CHMOD
    return None


class ConfWatcher:
    """Watches one conf dir on a daemon thread and calls ``reload(event)`` as containerd would.

    ``on_dir_gone()`` is called when the dir itself is removed or renamed; the watcher stops.
    ``history`` lists every event seen, reloaded or ignored, so tests can wait for an event to
    have been *processed* instead of sleeping.
    """

    def __init__(
        self,
        directory: Path,
        reload: Callable[[Event], None],
        on_dir_gone: Callable[[], None] | None = None,
    ):
        self.directory = directory
        self._reload = reload
        self._on_dir_gone = on_dir_gone
        self._fd = -1
        self._stop_r, self._stop_w = -1, -1
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._history: list[Event] = []

    @property
    def history(self) -> list[Event]:
        with self._lock:
            return list(self._history)

    def start(self) -> None:
        fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        if _libc.inotify_add_watch(fd, str(self.directory).encode(), WATCH_MASK) < 0:
            err = ctypes.get_errno()
            os.close(fd)
            raise OSError(err, f"inotify_add_watch({self.directory}): {os.strerror(err)}")
        self._fd = fd
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._loop, name=f"confwatch-{self.directory}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is None:
            return
        os.write(self._stop_w, b"x")
        self._thread.join(timeout=5)
        for fd in (self._fd, self._stop_r, self._stop_w):
            os.close(fd)
        self._thread = None
        self._fd = -1

    def _loop(self) -> None:
        while True:
            ready, _, _ = select.select([self._fd, self._stop_r], [], [])
            if self._stop_r in ready:
                return
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                continue
            if self._handle(data):
                return

    def _handle(self, data: bytes) -> bool:
        """Process a batch of raw events; True when the dir is gone and watching must end."""
        offset = 0
        while offset < len(data):
            _wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
            raw_name = data[offset + _EVENT.size : offset + _EVENT.size + length]
            offset += _EVENT.size + length
            name = raw_name.rstrip(b"\0").decode(errors="replace")
            if mask & IN_IGNORED:
                continue
            op = classify(mask)
            if op is None:
                continue
            if not name and op in (Op.REMOVE, Op.RENAME):
                log.error("cni conf dir is removed, stop watching")
                self._record(Event(name, op, reloaded=False))
                if self._on_dir_gone is not None:
                    self._on_dir_gone()
                return True
            reload = op not in (Op.CREATE, Op.CHMOD)
            event = Event(name, op, reloaded=reload)
            if reload:
                log.debug("receiving change event from cni conf dir: %s", event)
                try:
                    self._reload(event)
                except Exception:
                    log.exception("reload after %s failed", event)
            else:
                log.debug("ignore event from cni conf dir: %s", event)
            self._record(event)
        return False

    def _record(self, event: Event) -> None:
        with self._lock:
            self._history.append(event)
