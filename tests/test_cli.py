"""The bbx-net command line: parameter files, flags, and a real serve session."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import websockets

from bbx_net.cli import ParamFileError, build_parser, load_param_file, parse_param_flag
from bbx_net.websocket import ParamSpec

from conftest import TIMEOUT_SCALE


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_json_param_file(tmp_path: Path) -> None:
    """A JSON file declares parameters (value defaults to min) and trigger pads."""
    path = write(
        tmp_path,
        "show.json",
        json.dumps(
            {
                "params": [
                    {"name": "gain", "value": 0.8, "min": 0, "max": 1},
                    {"name": "freq", "min": 20, "max": 2000},
                ],
                "triggers": ["kick", "snare"],
            }
        ),
    )
    params, triggers = load_param_file(path)
    assert params == [ParamSpec("gain", 0.8, 0, 1), ParamSpec("freq", 20, 20, 2000)]
    assert triggers == ["kick", "snare"]


def test_toml_param_file(tmp_path: Path) -> None:
    """A TOML file with [[params]] tables works the same."""
    path = write(
        tmp_path,
        "show.toml",
        'triggers = ["hit"]\n\n[[params]]\nname = "pan"\nvalue = 0.0\nmin = -1.0\nmax = 1.0\n',
    )
    params, triggers = load_param_file(path)
    assert params == [ParamSpec("pan", 0.0, -1.0, 1.0)] and triggers == ["hit"]


@pytest.mark.parametrize(
    ("name", "text", "line", "words"),
    [
        ("bad.json", '{\n  "params": [\n    {"name": "gain",}\n  ]\n}\n', 3, "invalid JSON"),
        ("bad.toml", 'triggers = ["a"]\n[[params]]\nname = \n', 3, "invalid TOML"),
        (
            "range.json",
            '{"params": [\n {"name": "a"},\n {"name": "gain", "value": 5,\n'
            '  "min": 0, "max": 1}\n]}\n',
            3,
            "min <= value <= max",
        ),
        ("field.json", '{"params": [\n {"name": "gain", "vlaue": 1}\n]}\n', 2, "vlaue"),
        ("key.json", '{\n "parms": []\n}\n', 2, "unknown key"),
        ("twice.json", '{"params": [\n {"name": "x"},\n {"name": "x"}]}\n', 2, "twice"),
    ],
)
def test_malformed_param_files_name_the_line(
    tmp_path: Path, name: str, text: str, line: int, words: str
) -> None:
    """Every kind of broken file gives an error with the file, the line and the cause."""
    path = write(tmp_path, name, text)
    with pytest.raises(ParamFileError) as info:
        load_param_file(path)
    message = str(info.value)
    assert words in message
    assert f"line {line}" in message or f"{path}:{line}:" in message, message


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    """A file that does not exist says so."""
    with pytest.raises(ParamFileError, match="cannot read"):
        load_param_file(tmp_path / "nope.json")


def test_param_flags() -> None:
    """--param NAME=VALUE[:MIN:MAX]."""
    assert parse_param_flag("gain=0.5") == ParamSpec("gain", 0.5, 0.0, 1.0)
    assert parse_param_flag("freq=440:20:2000") == ParamSpec("freq", 440, 20, 2000)
    for bad in ("gain", "=1", "gain=x", "gain=1:2", "gain=5:0:1"):
        with pytest.raises(Exception, match="--param"):
            parse_param_flag(bad)


def test_help_documents_every_option() -> None:
    """`bbx-net serve --help` lists every option with a description."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    serve = sub.choices["serve"]  # type: ignore[attr-defined]
    text = serve.format_help()
    for action in serve._actions:
        for flag in action.option_strings:
            assert flag in text
        assert action.help, action.option_strings


def test_cli_reports_a_bad_param_file_and_exits_2(tmp_path: Path) -> None:
    """The CLI prints the file's error (with its line) and exits with status 2."""
    path = write(tmp_path, "bad.json", '{"params": [\n  {"name": 5}\n]}')
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bbx_net",
            "serve",
            "--params",
            str(path),
            "--port",
            "0",
            "--host",
            "127.0.0.1",
        ],
        capture_output=True,
        text=True,
        timeout=60 * TIMEOUT_SCALE,
    )
    assert done.returncode == 2
    assert "bad.json:1" in done.stderr and "name" in done.stderr


def test_serve_end_to_end_and_sigterm_closes_phones(tmp_path: Path) -> None:
    """serve prints code and link; a phone's change reaches the audio side; SIGTERM
    sends closed to the phone and the process exits cleanly."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bbx_net",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--param",
            "gain=0.5",
            "--trigger",
            "kick",
            "--monitor-interval",
            "0.05",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        head = ""
        for _ in range(200):
            line = proc.stdout.readline()
            head += line
            if "Ctrl-C to stop" in line or not line:
                break
        found = re.search(r"http://127\.0\.0\.1:(\d+)/\?room=(\d{4})&key=([\w-]{22})\s", head)
        assert found, head
        port, code = int(found.group(1)), found.group(2)
        assert f"room {code}" in head and "kick" in head

        async def phone() -> dict[str, object]:
            async with websockets.connect(f"ws://127.0.0.1:{port}/") as ws:
                await ws.send(orjson.dumps({"type": "join", "room_code": code}).decode())
                assert orjson.loads(await ws.recv())["type"] == "welcome"
                state = orjson.loads(await ws.recv())
                assert "gain" in [p["name"] for p in state["params"]]
                assert "kick" in state["triggers"]
                await ws.send('{"type": "param", "param": "gain", "value": 0.625}')
                await ws.send('{"type": "ping", "client_time": 1}')
                await ws.recv()
                await asyncio.sleep(0.5)  # a few monitor lines
                proc.send_signal(signal.SIGTERM)
                closed = orjson.loads(await asyncio.wait_for(ws.recv(), 10 * TIMEOUT_SCALE))
                return closed

        closed = asyncio.run(asyncio.wait_for(phone(), 30 * TIMEOUT_SCALE))
        assert closed["type"] == "closed"
        out, err = proc.communicate(timeout=20 * TIMEOUT_SCALE)
        assert proc.returncode == 0, err
        assert "gain=0.625" in out  # the demo audio side applied it
        assert "stopped:" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_urls_put_ipv6_in_brackets_and_numbers_read_plainly() -> None:
    from bbx_net.cli import lan_urls, readable

    assert lan_urls("::1", 8097, "1234") == ["http://[::1]:8097/?room=1234"]
    assert lan_urls("127.0.0.1", 8097, "1234", secure=True) == ["https://127.0.0.1:8097/?room=1234"]
    values = (1840.0, 440.5, 12.25, 0.125, -0.5, 0.0, 0.123456, 2.5e-7)
    assert [readable(v) for v in values] == [
        "1840", "440.5", "12.25", "0.125", "-0.5", "0", "0.1235", "2.5e-07"
    ]  # fmt: skip


def _serve(*flags: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bbx_net", "serve", "--host", "127.0.0.1", "--port", "0", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )


def _join(url: str, code: str, trust: ssl.SSLContext | None = None) -> str:
    """A phone joins room `code` at `url`; the type of the server's first answer."""

    async def phone() -> str:
        async with websockets.connect(url, ssl=trust) as ws:
            await ws.send(orjson.dumps({"type": "join", "room_code": code}).decode())
            return str(orjson.loads(await ws.recv())["type"])

    return asyncio.run(asyncio.wait_for(phone(), 20 * TIMEOUT_SCALE))


def _read_until(proc: subprocess.Popen[str], needle: str, limit: int = 400) -> str:
    assert proc.stdout is not None
    text = ""
    for _ in range(limit):
        line = proc.stdout.readline()
        text += line
        if needle in line or not line:
            break
    return text


def test_a_fixed_room_outlives_its_expiry_and_flags_replace_the_demo_set(tmp_path: Path) -> None:
    """--room/--room-key: the same code and link; when the room expires a new one with
    the same code opens and is announced; --param alone means no demo parameters."""
    key = "poster-key-0123456789"
    poster = tmp_path / "poster.svg"
    proc = _serve(
        "--room", "0042", "--room-key", key, "--expiration", "2", "--param", "gain=0.5",
        "--monitor-interval", "0.1", "--no-qr", "--qr-out", str(poster),
    )  # fmt: skip
    try:
        head = _read_until(proc, "Ctrl-C to stop")
        assert poster.read_text().lstrip().startswith("<?xml")
        assert re.search(r"Projector .*: http://127\.0\.0\.1:\d+/show", head), head
        assert re.search(r"Operator .*: http://127\.0\.0\.1:\d+/admin\?token=[\w-]{22}", head)
        assert "room 0042" in head and f"?room=0042&key={key}" in head, head
        assert "gain 0.5 [0..1]" in head and "freq" not in head
        assert "Trigger pads: (none)" in head
        again = _read_until(proc, f"?room=0042&key={key}")
        assert "room 0042 has ended; a new room is open" in again, again
        port = int(re.search(r"127\.0\.0\.1:(\d+)/", head).group(1))  # type: ignore[union-attr]

        assert _join(f"ws://127.0.0.1:{port}/", "0042") == "welcome"
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20 * TIMEOUT_SCALE)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_https_with_a_certificate_and_a_clear_error_without_one(tmp_path: Path) -> None:
    import trustme

    ca = trustme.CA()
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    issued = ca.issue_cert("127.0.0.1")
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    proc = _serve("--certfile", str(cert), "--keyfile", str(key), "--no-qr", "--no-monitor")
    try:
        head = _read_until(proc, "Ctrl-C to stop")
        found = re.search(r"https://127\.0\.0\.1:(\d+)/\?room=(\d{4})&key=", head)
        assert found, head
        port, code = int(found.group(1)), found.group(2)
        trust = ssl.create_default_context()
        ca.configure_trust(trust)

        assert _join(f"wss://127.0.0.1:{port}/", code, trust) == "welcome"
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20 * TIMEOUT_SCALE)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    done = subprocess.run(
        [sys.executable, "-m", "bbx_net", "serve", "--port", "0", "--certfile", str(key)],
        capture_output=True, text=True, timeout=60 * TIMEOUT_SCALE,
    )  # fmt: skip
    assert done.returncode == 2 and "cannot load the certificate" in done.stderr


def _decode_coloured_qr(text: str) -> list[list[int]]:
    """Back from the coloured terminal QR to modules (1 = dark), two rows per line."""
    rows: list[list[int]] = []
    for line in text.splitlines():
        cells = re.findall(r"\x1b\[(\d+);(\d+)m\u2580", line)
        rows.append([1 if fg == "30" else 0 for fg, _ in cells])
        rows.append([1 if bg == "40" else 0 for _, bg in cells])
    return rows


def test_the_terminal_qr_has_explicit_colours_and_reads_back_exactly(tmp_path: Path) -> None:
    """Black on white whatever the terminal's own colours: decoding the colours gives
    segno's matrix module for module. Without colour (a log file): plain half blocks."""
    import io

    import segno

    from bbx_net.cli import print_qr, save_qr

    url = "http://192.168.1.23:8080/?room=5876&key=abcdefghijklmnopqrstuv"
    out = io.StringIO()
    print_qr(url, out, colour=True)
    want = [[int(bool(v)) for v in r] for r in segno.make(url, error="m").matrix_iter(border=2)]
    got = _decode_coloured_qr(out.getvalue())
    assert got[: len(want)] == want and not any(any(r) for r in got[len(want) :])
    plain = io.StringIO()
    print_qr(url, plain, colour=False)
    assert (
        "\x1b" not in plain.getvalue()
        and len(plain.getvalue().splitlines()) == (len(want) + 1) // 2
    )

    save_qr(url, tmp_path / "qr.svg")
    assert (tmp_path / "qr.svg").read_text().lstrip().startswith("<?xml")
    save_qr(url, tmp_path / "qr.png")
    assert (tmp_path / "qr.png").read_bytes().startswith(b"\x89PNG")
    from bbx_net.errors import BbxNetError

    with pytest.raises(BbxNetError, match=".svg or .png"):
        save_qr(url, tmp_path / "qr.gif")


def test_a_show_file_declares_display_fields_title_and_pad_labels(tmp_path: Path) -> None:
    from bbx_net.cli import load_show_file

    path = write(
        tmp_path,
        "show.toml",
        """title = "Night of Sines"
instruction = "Move together."
triggers = ["snare", {name = "kick", label = "Kick drum"}]

[[params]]
name = "freq"
value = 440.0
min = 20.0
max = 2000.0
label = "Pitch"
unit = "Hz"
log = true
group = "Tone"

[[params]]
name = "voices"
value = 3
min = 1
max = 8
integer = true
""",
    )
    show = load_show_file(path)
    assert show.title == "Night of Sines" and show.instruction == "Move together."
    assert show.triggers == ["snare", "kick"] and show.trigger_labels == {"kick": "Kick drum"}
    freq, voices = show.params
    assert (freq.label, freq.unit, freq.log, freq.group) == ("Pitch", "Hz", True, "Tone")
    assert voices.integer and voices.clamp(4.6) == 5.0 and voices.clamp(99) == 8.0
    assert freq.display() == {"label": "Pitch", "unit": "Hz", "group": "Tone", "log": True}
    for bad, message in (
        ('[[params]]\nname = "f"\nmin = 0.0\nmax = 1.0\nlog = true\n', "log scale"),
        ('[[params]]\nname = "f"\nstep = -1\n', "step"),
        ('[[params]]\nname = "f"\ncolour = "red"\n', "unknown field"),
        ('triggers = [{name = "k", label = 5}]\n', "label"),
        ("title = 5\n", "title"),
    ):
        with pytest.raises(ParamFileError, match=message):
            load_show_file(write(tmp_path, "bad.toml", bad))


def test_self_signed_https_for_this_machine_made_once_and_kept(tmp_path: Path) -> None:
    """--self-signed: a certificate naming 127.0.0.1 (and the LAN addresses), which a
    client that trusts it verifies by address; the next start reuses it."""
    certs = tmp_path / "certs"

    def start() -> tuple[int, str, str]:
        proc = _serve("--self-signed", "--cert-dir", str(certs), "--no-qr", "--no-monitor")
        try:
            head = _read_until(proc, "Ctrl-C to stop")
            found = re.search(r"https://127\.0\.0\.1:(\d+)/\?room=(\d{4})&key=", head)
            assert found and "Self-signed certificate" in head, head
            port, code = int(found.group(1)), found.group(2)
            trust = ssl.create_default_context(cafile=str(certs / "bbx-net-cert.pem"))

            kind = _join(f"wss://127.0.0.1:{port}/", code, trust)
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=20 * TIMEOUT_SCALE)
            assert proc.returncode == 0
            return port, kind, (certs / "bbx-net-cert.pem").read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()

    _, kind, first = start()
    assert kind == "welcome"
    _, kind, second = start()
    assert kind == "welcome" and second == first  # kept: phones are not asked again
    assert (certs / "bbx-net-key.pem").stat().st_mode & 0o077 == 0


def test_log_lines_never_run_into_the_live_line() -> None:
    """With the live line on a terminal, each log record first wipes the line."""
    import io
    import logging

    from bbx_net.cli import _clear_live_line_before_logs

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers = [logging.StreamHandler(out)]
    try:
        _clear_live_line_before_logs(out)
        out.write("gain=0.5 | clients 1")  # the live line, no newline
        logging.getLogger("bbx_net.test").warning("a phone joined")
    finally:
        root.handlers = saved
    assert out.getvalue() == "gain=0.5 | clients 1\r\x1b[2Ka phone joined\n"
