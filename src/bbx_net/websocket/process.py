"""The server in its own process: the audio host keeps its GIL to itself.

```python
server = bbx_net.serve_process(WsServerConfig(bind_addr="0.0.0.0:8080"), 4096)
code = server.commands.create_room_threadsafe()
drain = server.consumer.bind_block(events, 48000, 256)   # the audio callback drains
...
server.shutdown()
```

The child process runs the WebSocket server; the message ring, an optional
visualization ring and the server clock's origin live in a POSIX shared-memory
segment that both processes map. Commands are validated and encoded here, on the
caller's thread, and cross over a private socketpair, as do the answers, stats and
listener events. Cleanup holds whatever happens: the segment's name is removed as soon
as the server has mapped it (the memory goes when both processes have gone), a host
that exits or is killed ends the socketpair and with it the server, and a server that
dies is reported (`alive`, `returncode`, `on_exit`, and the commands' futures fail).
"""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import os
import pickle
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from .._clock import ClockSync
from .._ring import NetBufferConsumer, SharedSegment, VizWriter, unlink_segment
from ..errors import BbxNetError
from ._wire import pack, read_frame
from .commands import CommandChannel, CreateRoom, Shutdown
from .config import WsServerConfig
from .session import ClientStats, ParamEvent, ServerStats, TriggerEvent

__all__ = ["ServerProcess", "serve_process"]

logger = logging.getLogger("bbx_net.process")

Listener = Callable[[ParamEvent | TriggerEvent], None]


def serve_process(
    config: WsServerConfig,
    ring_capacity: int = 4096,
    *,
    schedule_capacity: int | None = None,
    viz_capacity: int = 64,
    viz_floats: int = 256,
    command_capacity: int = 256,
    certfile: str | os.PathLike[str] | None = None,
    keyfile: str | os.PathLike[str] | None = None,
    keep_name: bool = False,
    start_timeout: float = 30.0,
    clock_origin_ns: int | None = None,
) -> ServerProcess:
    """Starts the server in a child process; returns once it listens.

    Args:
        config: the server's configuration (it must pickle: no `ssl_context`; give
            `certfile`/`keyfile` instead, which the server process loads).
        ring_capacity: messages the shared ring holds.
        schedule_capacity: as for `net_buffer`.
        viz_capacity: frames of the visualization ring (0: none).
        viz_floats: floats per visualization frame.
        command_capacity: commands that may wait (the `commands` channel's capacity).
        keep_name: keep the segment's name until shutdown, so C code in other
            processes can `bbx_shm_attach` it (a kill -9 of both processes then leaves
            the name behind). By default the name goes as soon as the server mapped it.
        start_timeout: seconds to wait for the server to listen.
        clock_origin_ns: the server clock's origin (a `bbx_monotonic_ns` reading, as
            `SharedSegment.clock_origin_ns` gives it); None starts a new clock.
            Servers given one origin keep one clock: phones of any of them schedule
            on the same timeline (serve_pool does this).

    Raises:
        ValueError: config carries an ssl_context or does not pickle; a capacity is out
            of range.
        BbxNetError: the server process failed to start (its error is in the message).
    """
    if config.ssl_context is not None:
        raise ValueError("serve_process: pass certfile/keyfile instead of ssl_context")
    options = {
        "config": config,
        "certfile": None if certfile is None else os.fspath(certfile),
        "keyfile": None if keyfile is None else os.fspath(keyfile),
    }
    try:
        pickle.dumps(options)
    except Exception as exc:
        raise ValueError(f"serve_process: the config must pickle ({exc})") from exc
    name = f"/bbx-net-{os.getpid()}-{secrets.token_hex(6)}"
    ours, theirs = socket.socketpair()
    try:
        # The child learns the name first: if this process dies before the segment
        # is handed over, the child's end of the socketpair closes and it removes it.
        proc = subprocess.Popen(
            [sys.executable, "-m", "bbx_net.websocket._child", str(theirs.fileno()), name],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
        )
    finally:
        theirs.close()
    try:
        segment = SharedSegment.create(
            name,
            ring_capacity,
            schedule_capacity,
            viz_capacity,
            viz_floats,
            clock_origin_ns,
        )
    except BaseException:
        ours.close()
        proc.kill()
        proc.wait()
        raise
    try:
        ours.sendall(pack("start", options))
        ours.settimeout(start_timeout)
        first = read_frame(ours)
    except (OSError, TimeoutError) as exc:
        first = ("failed", f"no answer within {start_timeout} s ({exc})")
    except BaseException:
        _abandon(proc, ours, name)
        raise
    if first is None or first[0] != "ready":
        _abandon(proc, ours, name)
        why = "it exited" if first is None else first[1]
        raise BbxNetError(f"the server process did not start: {why}")
    ours.settimeout(None)
    if not keep_name:
        segment.unlink()
    return ServerProcess(proc, ours, segment, first[1], command_capacity, keep_name)


def _abandon(proc: subprocess.Popen[bytes], sock: socket.socket, name: str) -> None:
    sock.close()
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    unlink_segment(name)


class ServerProcess:
    """The audio host's handle on a server running in its own process.

    Attributes:
        consumer: drains the shared ring (audio thread; `bind_block` for Python
            callbacks, `ring_address` for C).
        viz: writes visualization frames to the phones (audio thread), or None.
        clock: the server's clock, read in this process.
        commands: a CommandChannel whose commands go to the server process (the same
            API as in-process: `try_send`, `send_threadsafe`, `await send`,
            `create_room_threadsafe`, `await create_room`).
        port: the server's TCP port.
        pid: the server process's id.
        segment_name: the shared segment's name (removed once the server mapped it,
            unless `keep_name`).
    """

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        sock: socket.socket,
        segment: SharedSegment,
        port: int,
        command_capacity: int,
        keep_name: bool,
    ) -> None:
        self._proc = proc
        self._sock = sock
        self._segment = segment
        self._keep_name = keep_name
        self.consumer: NetBufferConsumer = segment.consumer()
        viz = segment.viz()
        self.viz: VizWriter | None = None if viz is None else viz[0]
        self.clock = ClockSync(origin_ns=segment.clock_origin_ns)
        self.port = port
        self.pid = proc.pid
        self.segment_name = segment.name
        self.commands = CommandChannel(command_capacity)
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()  # guards the fields below
        self._ids = itertools.count(1)
        self._pending: dict[int, concurrent.futures.Future[Any]] = {}
        self._listeners: list[Listener] = []
        self._exit_callbacks: list[Callable[[int], None]] = []
        self._wake = threading.Event()
        self._exited = threading.Event()
        self._stopped_cleanly = False
        self._link_closed = False
        self.events_dropped = 0  # listener events the server dropped (host not reading)
        self._reader = threading.Thread(target=self._read, name="bbx-net-link-in", daemon=True)
        self._writer = threading.Thread(target=self._write, name="bbx-net-link-out", daemon=True)
        self._reader.start()
        self._writer.start()
        self.commands.bind(self._wake.set)

    # ---- state --------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        """False once the server process has ended (for whatever reason)."""
        return not self._exited.is_set()

    @property
    def returncode(self) -> int | None:
        """The server process's exit code once it ended (negative: killed by signal)."""
        return self._proc.returncode if self._exited.is_set() else None

    def on_exit(self, callback: Callable[[int], None]) -> None:
        """Calls `callback(returncode)` when the server process ends (on a helper
        thread; at once if it has ended already)."""
        with self._lock:
            if not self._exited.is_set():
                self._exit_callbacks.append(callback)
                return
        callback(self._proc.returncode)

    def wait(self, timeout: float | None = None) -> int | None:
        """Waits for the server process to end; its return code, or None on timeout."""
        if not self._exited.wait(timeout):
            return None
        return self._proc.returncode

    # ---- what the in-process server offers ----------------------------------------------

    def stats(self, timeout: float = 5.0) -> ServerStats:
        result: ServerStats = self._call("stats", (), timeout)
        return result

    def client_stats(self, timeout: float = 5.0) -> list[ClientStats]:
        result: list[ClientStats] = self._call("client_stats", (), timeout)
        return result

    def param_values(self, timeout: float = 5.0) -> dict[str, float]:
        result: dict[str, float] = self._call("param_values", (), timeout)
        return result

    def rooms(self, timeout: float = 5.0) -> list[str]:
        result: list[str] = self._call("rooms", (), timeout)
        return result

    def room_key(self, code: str, timeout: float = 5.0) -> str | None:
        result: str | None = self._call("room_key", (str(code),), timeout)
        return result

    def show(self, code: str | None, link: str | None = None, timeout: float = 5.0) -> None:
        """Puts room `code` on the projector page (see WsServer.show)."""
        self._call("show", (code, link), timeout)

    def add_listener(self, listener: Listener) -> None:
        """Calls `listener(event)` for every accepted param/trigger, on a helper thread
        of this process (events cross the process boundary, in order)."""
        with self._lock:
            first = not self._listeners
            self._listeners.append(listener)
        if first:
            self._send(pack("listen", True))

    def remove_listener(self, listener: Listener) -> None:
        with self._lock:
            self._listeners.remove(listener)
            last = not self._listeners
        if last:
            self._send(pack("listen", False))

    # ---- stopping -----------------------------------------------------------------------

    def shutdown(self, timeout: float = 10.0) -> int:
        """Closes every phone cleanly and ends the server process (killing it after
        `timeout` seconds); returns its exit code."""
        if self.alive:
            self.commands.try_send(Shutdown())
            if not self._exited.wait(timeout):
                logger.warning(
                    "server process %d did not stop in %s s: killing it", self.pid, timeout
                )
                self._proc.kill()
                self._exited.wait(timeout)
        self._close_link()
        return self._proc.wait()

    close = shutdown

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # ---- the link -----------------------------------------------------------------------

    def _call(self, name: str, args: tuple[Any, ...], timeout: float) -> Any:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._lock:
            if self._exited.is_set():
                raise BbxNetError(self._death())
            ident = next(self._ids)
            self._pending[ident] = future
        self._send(pack("call", ident, name, args))
        return future.result(timeout)

    def _send(self, frame: bytes) -> None:
        with self._send_lock:
            try:
                self._sock.sendall(frame)
            except OSError:
                pass  # the reader sees the end of the stream and reports it

    def _write(self) -> None:
        """Ships the channel's commands, in order (a thread: try_send never blocks).

        After the server process ended, CreateRoom fails at once with BbxNetError and
        other commands are dropped (there is no one to apply them)."""
        while not self._link_closed:
            self._wake.wait(0.5)
            self._wake.clear()
            for command in self.commands.drain():
                if self._exited.is_set():
                    if isinstance(command, CreateRoom) and not command.response.done():
                        command.response.set_exception(BbxNetError(self._death()))
                elif isinstance(command, CreateRoom):
                    with self._lock:
                        if self._exited.is_set():
                            command.response.set_exception(BbxNetError(self._death()))
                            continue
                        ident = next(self._ids)
                        self._pending[ident] = command.response
                    self._send(pack("create_room", ident, command.code, command.key))
                else:
                    self._send(pack("cmd", command))

    def _read(self) -> None:
        sock = self._sock
        while True:
            try:
                frame = read_frame(sock)
            except Exception:
                logger.exception("bad frame from the server process")
                frame = None
            if frame is None:
                break
            kind = frame[0]
            if kind == "reply":
                _, ident, ok, value = frame
                with self._lock:
                    future = self._pending.pop(ident, None)
                if future is None or future.done():
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(_error(*value))
            elif kind == "event":
                with self._lock:
                    listeners = list(self._listeners)
                for listener in listeners:
                    try:
                        listener(frame[1])
                    except Exception:
                        logger.exception("listener failed")
            elif kind == "stopped":
                self._stopped_cleanly = True
                self.events_dropped = frame[1]
        self._finish()

    def _finish(self) -> None:
        """The server process ended: collect it, fail what waits, tell the host."""
        try:
            self._proc.wait(10.0)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._keep_name:
            unlink_segment(self.segment_name)
        with self._lock:
            self._exited.set()
            pending, self._pending = self._pending, {}
            callbacks, self._exit_callbacks = self._exit_callbacks, []
        for future in pending.values():
            if not future.done():
                future.set_exception(BbxNetError(self._death()))
        self._wake.set()  # the writer fails what waits in the channel
        if not self._stopped_cleanly:
            logger.error("%s", self._death())
        for callback in callbacks:
            try:
                callback(self._proc.returncode)
            except Exception:
                logger.exception("on_exit callback failed")

    def _death(self) -> str:
        code = self._proc.returncode
        how = "stopped" if self._stopped_cleanly else "died"
        return f"the server process {self.pid} {how} (exit code {code})"

    def _close_link(self) -> None:
        self._link_closed = True
        self._wake.set()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        deadline = time.monotonic() + 5.0
        self._reader.join(max(0.0, deadline - time.monotonic()))
        self._writer.join(max(0.0, deadline - time.monotonic()))
        self._sock.close()


def _error(kind: str, message: str) -> Exception:
    """The server's exception, rebuilt on this side (its type when it is a plain one)."""
    types: dict[str, type[Exception]] = {
        "ValueError": ValueError,
        "TypeError": TypeError,
        "KeyError": KeyError,
        "BbxNetError": BbxNetError,
    }
    return types.get(kind, BbxNetError)(message)
