"""`bbx-net serve`: a server with a room, the phone page, a QR code and a demo audio side.

bbx-net serve                       # demo parameters, 0.0.0.0:8080
bbx-net serve --params show.toml    # your parameters and trigger pads
bbx-net serve --param freq=440:20:2000 --trigger kick --port 9000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import socket
import ssl
import sys
import threading
import time
import tomllib
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from . import (
    EVENT_DTYPE,
    BlockClock,
    ClockSync,
    MessageType,
    SharedSegment,
    __version__,
    hash_param_name,
    net_buffer,
)
from ._ring import STATE_SERVING, STATE_STOPPED, NetBufferConsumer
from .errors import BbxNetError
from .websocket import (
    CommandChannel,
    ParamSpec,
    RoomConfig,
    ServerCommand,
    WsServer,
    WsServerConfig,
)
from .websocket import run as run_event_loop

__all__ = [
    "ParamFileError",
    "build_parser",
    "lan_urls",
    "load_param_file",
    "main",
    "parse_param_flag",
]

logger = logging.getLogger(__name__)

DEMO_PARAMS = (
    ParamSpec("gain", 0.8, 0.0, 1.0),
    ParamSpec("freq", 440.0, 20.0, 2000.0),
    ParamSpec("cutoff", 0.5, 0.0, 1.0),
    ParamSpec("pan", 0.0, -1.0, 1.0),
)
DEMO_TRIGGERS = ("kick", "snare")


class ParamFileError(BbxNetError):
    """A parameter file that cannot be used; the message names the file and line."""


# ---- parameters from files and flags --------------------------------------------------


def _line_of(text: str, needle: str) -> int | None:
    for number, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return number
    return None


@dataclass
class ShowFile:
    """What a params file declares."""

    params: list[ParamSpec]
    triggers: list[str]
    trigger_labels: dict[str, str] = field(default_factory=dict)
    title: str | None = None
    instruction: str | None = None


def load_param_file(path: Path) -> tuple[list[ParamSpec], list[str]]:
    """The parameters and trigger names of a params file (see load_show_file)."""
    show = load_show_file(path)
    return show.params, show.triggers


_PARAM_FIELDS = {"name", "value", "min", "max", "label", "unit", "step", "integer", "log", "group"}


def load_show_file(path: Path) -> ShowFile:
    """Reads declared parameters and trigger names from a .json or .toml file.

    JSON: `{"params": [{"name": "gain", "value": 0.8, "min": 0, "max": 1}],
    "triggers": ["kick"]}` (or just the list of params). TOML: `triggers = [...]` and
    one `[[params]]` table per parameter.

    Raises:
        ParamFileError: unreadable, malformed, or an entry is invalid (with its line).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ParamFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    data: Any
    if path.suffix.lower() == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ParamFileError(f"{path}: invalid TOML: {exc}") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ParamFileError(
                f"{path}:{exc.lineno}: invalid JSON: {exc.msg} (line {exc.lineno}, "
                f"column {exc.colno})"
            ) from None
    if isinstance(data, list):
        data = {"params": data}
    if not isinstance(data, dict):
        raise ParamFileError(f"{path}: expected an object with 'params' and 'triggers'")
    unknown = set(data) - {"params", "triggers", "title", "instruction"}
    if unknown:
        key = sorted(unknown)[0]
        raise ParamFileError(
            f"{path}:{_line_of(text, key) or 1}: unknown key {key!r} "
            "(expected 'params', 'triggers', 'title' and 'instruction')"
        )
    for key in ("title", "instruction"):
        v = data.get(key)
        if v is not None and (not isinstance(v, str) or len(v) > 200):
            raise ParamFileError(
                f"{path}:{_line_of(text, key) or 1}: {key!r} must be text of <= 200 characters"
            )
    raw_params = data.get("params", [])
    if not isinstance(raw_params, list):
        raise ParamFileError(f"{path}:{_line_of(text, 'params') or 1}: 'params' must be a list")
    params: list[ParamSpec] = []
    for i, entry in enumerate(raw_params):
        where = f"params[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ParamFileError(
                f"{path}:{_line_of(text, 'params') or 1}: {where} needs a string 'name'"
            )
        name = entry["name"]
        line = _line_of(text, f'"{name}"') or _line_of(text, name) or 1
        extra = set(entry) - _PARAM_FIELDS
        if extra:
            raise ParamFileError(
                f"{path}:{line}: {where} ({name!r}): unknown field {sorted(extra)[0]!r}"
            )
        lo: Any = entry.get("min", 0.0)
        hi: Any = entry.get("max", 1.0)
        value: Any = entry.get("value", lo)
        shown = {k: entry[k] for k in _PARAM_FIELDS - {"name", "value", "min", "max"} if k in entry}
        try:
            params.append(ParamSpec(name, value, lo, hi, **shown))
        except (ValueError, TypeError) as exc:
            raise ParamFileError(f"{path}:{line}: {where} ({name!r}): {exc}") from None
    raw_triggers = data.get("triggers", [])
    triggers: list[str] = []
    labels: dict[str, str] = {}
    bad = f"{path}:{_line_of(text, 'triggers') or 1}: 'triggers' must be a list of names"
    if not isinstance(raw_triggers, list):
        raise ParamFileError(bad)
    for t in raw_triggers:
        if isinstance(t, dict):  # {"name": "kick", "label": "Kick drum"}
            name, label = t.get("name"), t.get("label")
            if set(t) - {"name", "label"} or not isinstance(name, str) or not name:
                raise ParamFileError(bad + " or {name, label} tables")
            if label is not None:
                if not isinstance(label, str) or not label or len(label) > 128:
                    raise ParamFileError(f"{bad}: the label of {name!r} is 1..128 characters")
                labels[name] = label
            t = name
        if not isinstance(t, str) or not t:
            raise ParamFileError(bad)
        triggers.append(t)
    names = [p.name for p in params]
    for name in names:
        if names.count(name) > 1:
            raise ParamFileError(
                f"{path}:{_line_of(text, name) or 1}: parameter {name!r} is declared twice"
            )
    return ShowFile(params, triggers, labels, data.get("title"), data.get("instruction"))


def parse_param_flag(text: str) -> ParamSpec:
    """`NAME=VALUE[:MIN:MAX]` (range 0..1 when omitted) as a ParamSpec.

    Raises:
        argparse.ArgumentTypeError: the flag is malformed.
    """
    name, sep, rest = text.partition("=")
    parts = rest.split(":") if sep else []
    try:
        if not name or len(parts) not in (1, 3):
            raise ValueError("expected NAME=VALUE or NAME=VALUE:MIN:MAX")
        numbers = [float(p) for p in parts]
        value = numbers[0]
        lo, hi = (numbers[1], numbers[2]) if len(numbers) == 3 else (0.0, 1.0)
        return ParamSpec(name, value, lo, hi)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--param {text!r}: {exc}") from None


# ---- network addresses ----------------------------------------------------------------


def lan_addresses() -> list[str]:
    """This machine's IPv4 addresses that phones on the LAN can reach (best effort)."""
    found: list[str] = []
    with contextlib.suppress(OSError):
        # A UDP "connect" sends nothing; it only asks the kernel which source address
        # the default route would use.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))
            found.append(s.getsockname()[0])
    with contextlib.suppress(OSError):
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            found.append(str(info[4][0]))
    lan = [a for a in dict.fromkeys(found) if not a.startswith("127.")]
    return lan or ["127.0.0.1"]


def lan_urls(
    host: str, port: int, code: str, secure: bool = False, key: str | None = None
) -> list[str]:
    """The links to show the audience: every reachable address, with the room code and
    (when given) the room's key, which spares phones that follow the link the typed
    codes' rate limits."""
    scheme = "https" if secure else "http"
    hosts = lan_addresses() if host in ("0.0.0.0", "", "::") else [host]
    query = f"?room={code}" if key is None else f"?room={code}&key={key}"
    return [f"{scheme}://{_url_host(h)}:{port}/{query}" for h in hosts]


def _url_host(host: str) -> str:
    """An IPv6 address in a URL goes in brackets (RFC 3986)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def readable(value: float) -> str:
    """A number as a person reads it: 1840, 440.5, 0.125 (no exponent in the range a
    control uses; at most 4 decimals)."""
    if value != 0 and not 1e-4 <= abs(value) < 1e9:
        return f"{value:.6g}"
    text = f"{value:.4f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def self_signed(directory: Path, hosts: Sequence[str]) -> tuple[Path, Path]:
    """A self-signed certificate for `hosts` (IP addresses and names), kept in
    `directory` and reused while it covers the same hosts (so a phone that accepted it
    once is not asked again). Returns (certfile, keyfile).

    Raises:
        BbxNetError: the `cryptography` package is missing (pip install 'bbx_net[tls]').
    """
    import datetime
    import ipaddress

    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        raise BbxNetError("--self-signed needs cryptography: pip install 'bbx_net[tls]'") from None
    cert_path, key_path = directory / "bbx-net-cert.pem", directory / "bbx-net-key.pem"
    wanted = sorted(set(hosts))
    if cert_path.exists() and key_path.exists():
        with contextlib.suppress(ValueError, OSError):
            old = x509.load_pem_x509_certificate(cert_path.read_bytes())
            san = old.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            have = sorted(
                [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
                + san.get_values_for_type(x509.DNSName)
            )
            fresh = old.not_valid_after_utc > datetime.datetime.now(datetime.UTC)
            if have == wanted and fresh:
                return cert_path, key_path
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for h in wanted:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bbx_net on this machine")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def print_qr(url: str, out: TextIO, colour: bool | None = None) -> None:
    """The link's QR code in the terminal, two rows per line.

    On a terminal (or with `colour`), every cell carries explicit black and white
    colours, so the code reads the same on dark and light terminals; elsewhere (a log
    file) it is plain half blocks.
    """
    try:
        import segno
    except ImportError:
        out.write("  (pip install 'bbx_net[qr]' to show a QR code here)\n")
        return
    rows = [list(r) for r in segno.make(url, error="m").matrix_iter(scale=1, border=2)]
    if len(rows) % 2:
        rows.append([0] * len(rows[0]))
    if colour is None:
        colour = out.isatty()
    chars = {(0, 0): "\u2588", (1, 1): " ", (1, 0): "\u2584", (0, 1): "\u2580"}
    for top, bottom in zip(rows[0::2], rows[1::2], strict=True):
        pairs = list(zip(top, bottom, strict=True))
        if colour:
            # ▀: the upper half in the foreground colour, the lower in the background.
            cells = "".join(f"\x1b[{30 if t else 97};{40 if b else 107}m\u2580" for t, b in pairs)
            out.write("  " + cells + "\x1b[0m\n")
        else:
            out.write("  " + "".join(chars[(t, b)] for t, b in pairs) + "\n")


def save_qr(url: str, path: Path) -> None:
    """The link's QR code as an image for a poster: .svg or .png (by the suffix)."""
    try:
        import segno
    except ImportError:
        raise BbxNetError("--qr-out needs segno: pip install 'bbx_net[qr]'") from None
    if path.suffix.lower() not in (".svg", ".png"):
        raise BbxNetError(f"--qr-out writes .svg or .png, not {path.name!r}")
    segno.make(url, error="m").save(str(path), scale=10, border=4)


# ---- the demo audio side ----------------------------------------------------------------


@dataclass
class AudioMonitor:
    """Drains the ring like an audio callback and keeps what it applied.

    Runs on its own thread at the block rate (sample_rate / block_size), calling the
    consumer's `drain_block`, which runs the C drain with the GIL released.
    """

    consumer: NetBufferConsumer
    server: WsServer
    sample_rate: int = 48_000
    block_size: int = 256
    names: dict[int, str] = field(default_factory=dict)
    values: dict[str, float] = field(default_factory=dict)
    triggers: int = 0
    last_trigger: str = ""
    blocks: int = 0
    late_blocks: int = 0  # blocks that started more than one block after their time
    _stop: threading.Event = field(default_factory=threading.Event)

    def name_of(self, h: int) -> str:
        return self.names.get(h, f"#{h:08x}")

    def run(self) -> None:
        events = np.zeros(256, EVENT_DTYPE)
        period = self.block_size / self.sample_rate
        clock = self.server.clock
        blocks = BlockClock(self.sample_rate, self.block_size)
        next_block = time.perf_counter()
        while not self._stop.is_set():
            start_us = blocks.next_block(clock.now_us())
            n = self.consumer.drain_block(events, start_us, self.sample_rate, self.block_size)
            for ev in events[:n]:
                name = self.name_of(int(ev["param_hash"]))
                if ev["type"] == MessageType.PARAMETER_CHANGE:
                    self.values[name] = float(ev["payload"][0])
                elif ev["type"] == MessageType.TRIGGER:
                    self.triggers += 1
                    self.last_trigger = name
            self.blocks += 1
            next_block += period
            delay = next_block - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            elif -delay > period:
                # A device with two blocks of buffer would have played silence here.
                self.late_blocks += 1
                next_block = time.perf_counter()

    def stop(self) -> None:
        self._stop.set()

    def line(self) -> str:
        values = " ".join(f"{k}={readable(v)}" for k, v in self.values.items())
        st = self.server.stats()
        trig = f"triggers {self.triggers}" + (
            f" (last {self.last_trigger})" if self.last_trigger else ""
        )
        return (
            f"{values} | {trig} | clients {st.clients} | ring {st.ring_len}/"
            f"{st.ring_capacity} dropped {st.ring_dropped} | late blocks "
            f"{self.late_blocks}"
        )


# ---- serve ------------------------------------------------------------------------------


async def serve(args: argparse.Namespace, out: TextIO = sys.stdout) -> None:
    params, triggers = list(DEMO_PARAMS), list(DEMO_TRIGGERS)
    labels: dict[str, str] = {}
    title, instruction = args.title, args.instruction
    if args.params is not None:
        show_file = load_show_file(args.params)
        params, triggers, labels = show_file.params, show_file.triggers, show_file.trigger_labels
        title = title or show_file.title
        instruction = instruction or show_file.instruction
    elif args.param or args.trigger or args.no_demo:
        params, triggers = [], []  # the flags describe the whole set: no demo beside it
    if args.param:
        by_name = {p.name: p for p in params}
        for p in args.param:
            by_name[p.name] = p
        params = list(by_name.values())
    if args.trigger:
        triggers = list(dict.fromkeys([*triggers, *args.trigger]))
    ssl_context = None
    if args.self_signed:
        hosts = lan_addresses() if args.host in ("0.0.0.0", "", "::") else [args.host]
        args.certfile, args.keyfile = self_signed(args.cert_dir, [*hosts, "127.0.0.1", "localhost"])
        out.write(
            f"  Self-signed certificate: {args.certfile}\n"
            "  Phones will warn once that the connection is not private: tap Advanced\n"
            "  (Show details on iPhone) and go on to the site. A certificate for a domain\n"
            "  you own avoids the warning (--certfile/--keyfile).\n"
        )
    if args.certfile:
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            ssl_context.load_cert_chain(args.certfile, args.keyfile)
        except (OSError, ssl.SSLError) as exc:
            raise BbxNetError(f"cannot load the certificate {args.certfile}: {exc}") from None
    config = WsServerConfig(
        bind_addr=(args.host, args.port),
        params=params,
        triggers=triggers,
        room=RoomConfig(
            code_length=args.code_length, expiration=args.expiration, max_clients=args.max_clients
        ),
        ssl_context=ssl_context,
        static_dir=args.static,
        title=title,
        instruction=instruction,
        trigger_labels={k: v for k, v in labels.items() if k in triggers},
        xy_pad=args.xy,
        admin_token=None if args.no_admin else secrets.token_urlsafe(16),
    )
    segment = None
    if args.shm is not None:
        # The audio host is another process (C, C++ or Python): it attaches to this
        # segment by name and drains the ring; this process only serves.
        segment = create_shm(args.shm, args.capacity, out)
        producer, consumer = segment.producer(), segment.consumer()
        viz = segment.viz()
        clock = ClockSync(origin_ns=segment.clock_origin_ns)
    else:
        producer, consumer = net_buffer(args.capacity)
        viz, clock = None, None
    commands = CommandChannel()
    server = WsServer(config, producer, commands, clock=clock, viz=None if viz is None else viz[1])
    code = await commands.create_room(args.room, args.room_key)
    try:
        await server.start()
    except BaseException:
        if segment is not None:
            segment.unlink()
        raise
    if segment is not None:
        segment.server_pid = os.getpid()
        segment.state = STATE_SERVING
    secure = ssl_context is not None

    monitor = AudioMonitor(consumer, server, args.sample_rate, args.block_size)
    for name in [p.name for p in params] + triggers + ["xy"]:
        monitor.names[hash_param_name(name)] = name
    monitor.values.update({p.name: p.value for p in params})
    audio = threading.Thread(target=monitor.run, name="bbx-demo-audio", daemon=True)
    if segment is None:  # with --shm the host drains the ring
        audio.start()

    def announce(code: str) -> None:
        urls = lan_urls(args.host, server.port, code, secure=secure, key=server.room_key(code))
        out.write(f"\nbbx_net {__version__}: room {code}\n\n")
        out.write("  Phones: join on the same network at\n")
        for url in urls:
            out.write(f"    {url}\n")
        out.write("\n")
        if not args.no_qr:
            print_qr(urls[0], out)
        origin = "{0.scheme}://{0.netloc}".format(urllib.parse.urlsplit(urls[0]))
        out.write(f"\n  Projector (room code and QR code, full screen): {origin}/show\n")
        if config.admin_token:
            out.write(
                f"  Operator (keep this link to yourself): {origin}/admin"
                f"?token={config.admin_token}\n"
            )
        server.show(code, urls[0])
        if args.qr_out is not None:
            save_qr(urls[0], args.qr_out)
            out.write(f"  QR code saved to {args.qr_out}\n")

    announce(code)
    described = ", ".join(
        f"{p.name} {readable(p.value)} [{readable(p.min)}..{readable(p.max)}]" for p in params
    )
    out.write(f"\n  Parameters: {described or '(none)'}\n")
    out.write(f"  Trigger pads: {', '.join(triggers) or '(none)'}; XY pad sends 'xy'\n")
    if segment is not None:
        out.write(
            f"  Audio side: another process attaches to shared segment {segment.name}\n"
            f"  (C: bbx_shm_attach; Python: SharedSegment.attach), ring of "
            f"{args.capacity}\n  Ctrl-C to stop.\n\n"
        )
    else:
        out.write(
            f"  Audio side: {args.sample_rate} Hz, {args.block_size}-frame blocks, "
            f"ring of {args.capacity}\n  Ctrl-C to stop.\n\n"
        )
    out.flush()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, commands.try_send, ServerCommand.Shutdown())

    live = out.isatty() and not args.no_monitor
    if live:
        _clear_live_line_before_logs(out)

    async def show() -> None:
        nonlocal code
        while True:
            await asyncio.sleep(args.monitor_interval if live else args.monitor_interval * 10)
            if server.room_key(code) is None:
                # The room expired (or was closed): a new one, announced like the first;
                # with --room it gets the same code and key again.
                if live:
                    out.write("\r\x1b[2K")
                out.write(f"\nroom {code} has ended; ")
                code = await commands.create_room(args.room, args.room_key)
                out.write("a new room is open:\n")
                announce(code)
                out.flush()
            if args.no_monitor:
                continue
            if live:
                out.write("\r\x1b[2K" + monitor.line()[:200])
            else:
                out.write(monitor.line() + "\n")
            out.flush()

    shower = asyncio.create_task(show())
    try:
        await server.run()
    finally:
        shower.cancel()
        monitor.stop()
        if audio.is_alive():
            audio.join(2.0)
        if segment is not None:
            segment.state = STATE_STOPPED
            segment.unlink()
        out.write(f"\nstopped: {monitor.line()}\n")
        out.flush()


def create_shm(name: str, capacity: int, out: TextIO) -> SharedSegment:
    """Creates segment `name`, replacing one left by a server that was killed."""
    try:
        return SharedSegment.create(name, capacity)
    except FileExistsError:
        pass
    try:
        stale = SharedSegment.attach(name)
    except ValueError:
        raise SystemExit(f"bbx-net: {name} exists and is not a bbx_net segment") from None
    owner = stale.owner_pid
    if _pid_alive(owner):
        raise SystemExit(f"bbx-net: {name} is in use by process {owner}")
    out.write(f"  (removed {name}, left by process {owner}, which has ended)\n")
    stale.unlink()
    return SharedSegment.create(name, capacity)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clear_live_line_before_logs(out: TextIO) -> None:
    """Log records (-v) go on their own lines: the live line is wiped before each and
    redrawn on its next refresh."""

    class Handler(logging.StreamHandler):  # type: ignore[type-arg]
        def emit(self, record: logging.LogRecord) -> None:
            with contextlib.suppress(Exception):
                out.write("\r\x1b[2K")
            super().emit(record)

    root = logging.getLogger()
    for h in list(root.handlers):
        if isinstance(h, logging.StreamHandler) and not isinstance(h, Handler):
            root.removeHandler(h)
            handler = Handler(out)
            handler.setFormatter(h.formatter)
            root.addHandler(handler)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bbx-net",
        description="Phones steer a live audio process over WebSocket.",
    )
    parser.add_argument("--version", action="version", version=f"bbx_net {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    s = sub.add_parser(
        "serve",
        help="start a server with a room, the phone page and a demo audio side",
        description="Start a server, create a room, print its code, the LAN links and a "
        "QR code, and show what the audio side receives.",
    )
    s.add_argument(
        "--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0: every interface)"
    )
    s.add_argument(
        "--port",
        type=int,
        default=8080,
        help="TCP port for the page and the WebSocket (default 8080; 0 = any)",
    )
    s.add_argument(
        "--params",
        type=Path,
        metavar="FILE",
        help="parameters and trigger pads from a .json or .toml file (default: a demo set)",
    )
    s.add_argument(
        "--param",
        type=parse_param_flag,
        action="append",
        metavar="NAME=V[:MIN:MAX]",
        help="declare or override a parameter (repeatable), e.g. freq=440:20:2000",
    )
    s.add_argument(
        "--trigger", action="append", metavar="NAME", help="add a trigger pad (repeatable)"
    )
    s.add_argument(
        "--no-admin",
        action="store_true",
        help="no operator view (by default /admin, with a random token printed here)",
    )
    s.add_argument("--title", help="the show's name, at the top of every phone")
    s.add_argument(
        "--xy",
        choices=("first", "last", "off"),
        default="last",
        help="where phones show the XY pad: first (on screen at once), last (default), off",
    )
    s.add_argument("--instruction", help="one line for the audience under the title (what to do)")
    s.add_argument(
        "--no-demo",
        action="store_true",
        help="no demo parameters or pads (they are also left out as soon as --param or "
        "--trigger describes the set without --params)",
    )
    s.add_argument(
        "--shm",
        metavar="NAME",
        help="serve an audio host in another process: the ring lives in POSIX shared "
        "memory NAME (e.g. /my-show), which a C/C++ host maps with bbx_shm_attach and a "
        "Python host with SharedSegment.attach; removed when the server stops",
    )
    s.add_argument(
        "--room",
        metavar="CODE",
        help="use this room code (digits, --code-length long) instead of a random one: "
        "with --room-key, a poster's code and QR code survive restarts",
    )
    s.add_argument(
        "--room-key",
        metavar="KEY",
        help="the room's link key (16-64 of A-Z a-z 0-9 - _) instead of a random one",
    )
    s.add_argument(
        "--static",
        type=Path,
        metavar="DIR",
        help="also serve your own pages from DIR on the same origin (they can import "
        "/bbx-client.js); DIR/index.html replaces the phone page at /",
    )
    s.add_argument("--certfile", type=Path, help="serve https/wss with this certificate (PEM)")
    s.add_argument("--keyfile", type=Path, help="the certificate's private key (PEM)")
    s.add_argument(
        "--self-signed",
        action="store_true",
        help="serve https/wss with a self-signed certificate for this machine's LAN "
        "addresses, made once and kept in --cert-dir (needs bbx_net[tls])",
    )
    s.add_argument(
        "--cert-dir",
        type=Path,
        default=Path.home() / ".cache" / "bbx_net",
        help="where --self-signed keeps its certificate (default ~/.cache/bbx_net)",
    )
    s.add_argument(
        "--capacity", type=int, default=4096, help="ring capacity in messages (default 4096)"
    )
    s.add_argument(
        "--sample-rate",
        type=int,
        default=48_000,
        help="demo audio side's sample rate in Hz (default 48000)",
    )
    s.add_argument(
        "--block-size",
        type=int,
        default=256,
        help="demo audio side's block size in frames (default 256)",
    )
    s.add_argument("--code-length", type=int, default=4, help="digits in the room code (default 4)")
    s.add_argument(
        "--expiration",
        type=float,
        default=24 * 3600.0,
        help="seconds before the room closes itself (default 86400); a new room (the same "
        "code with --room) then opens and is announced",
    )
    s.add_argument("--max-clients", type=int, default=100, help="phones per room (default 100)")
    s.add_argument("--no-qr", action="store_true", help="do not print a QR code")
    s.add_argument(
        "--qr-out",
        type=Path,
        metavar="FILE",
        help="also write the link's QR code to FILE (.svg or .png) for a poster; "
        "rewritten when a new room opens",
    )
    s.add_argument(
        "--no-monitor",
        action="store_true",
        help="do not print the live line of what the audio side receives (values, "
        "triggers, clients, ring fill; 'late blocks' counts blocks the demo audio thread "
        "started more than one block late, where a real device would have played "
        "silence)",
    )
    s.add_argument(
        "--monitor-interval",
        type=float,
        default=0.5,
        metavar="SECONDS",
        help="refresh of the live line (default 0.5 s; 10x that when the output is not a terminal)",
    )
    s.add_argument("-v", "--verbose", action="store_true", help="log connections")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command != "serve":
        parser.print_help()
        return 2
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s: %(message)s",
    )
    for name, value in (
        ("--sample-rate", args.sample_rate),
        ("--block-size", args.block_size),
        ("--capacity", args.capacity),
    ):
        if value < 1:
            parser.error(f"{name} must be positive")
    if not args.monitor_interval > 0:
        parser.error("--monitor-interval must be positive")
    if not 0 <= args.port <= 65535:
        parser.error("--port must be 0..65535")
    if args.keyfile and not args.certfile:
        parser.error("--keyfile needs --certfile")
    if args.self_signed and args.certfile:
        parser.error("--self-signed or --certfile, not both")
    try:
        run_event_loop(serve(args))
    except ParamFileError as exc:
        print(f"bbx-net: {exc}", file=sys.stderr)
        return 2
    except (BbxNetError, ValueError) as exc:
        print(f"bbx-net: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(
            f"bbx-net: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
