"""Real audio hosts in a real JACK graph (jackd, dummy backend, 48 kHz / 256 frames):
the C host against `bbx-net serve --shm`, the Python host with its server in its own
process, each under 100 phones at 60 Hz. From the audio they rendered: a value sent with
`at` changes the output at exactly its sample, and no xrun is the host's doing."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from websockets.sync.client import connect

import bbx_net
from bbx_net import ClockSync, SharedSegment

from conftest import TIMEOUT_SCALE

ROOT = Path(__file__).parent.parent
RATE, PERIOD, FREQ = 48_000, 256, 440.0
SECONDS = 8.0
PHONES, PHONE_RATE, LOAD_SECONDS = 100, 60.0, 5.0
BLOCK_LOG = np.dtype(
    [
        ("first_frame", "<u8"),
        ("start_us", "<u8"),
        ("callback_ns", "<u4"),
        ("events", "<u4"),
        ("late_ns", "<u4"),
        ("reserved", "<u4"),
    ]
)


@pytest.fixture(scope="module")
def jackd() -> Iterator[dict[str, str]]:
    """A private jackd with the dummy backend; yields the environment to reach it."""
    binary = shutil.which("jackd")
    assert binary, "jackd (Debian jackd2) is needed; .ci/run installs it"
    env = dict(
        os.environ, JACK_DEFAULT_SERVER=f"bbx-test-{os.getpid()}", JACK_NO_AUDIO_RESERVATION="1"
    )
    proc = subprocess.Popen(
        [
            binary,
            "-n",
            env["JACK_DEFAULT_SERVER"],
            "-d",
            "dummy",
            "-r",
            str(RATE),
            "-p",
            str(PERIOD),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 15 * TIMEOUT_SCALE
        while time.monotonic() < deadline:
            done = subprocess.run(["jack_lsp"], env=env, capture_output=True, text=True)
            if "system:playback_1" in done.stdout:
                break
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.2)
        else:
            raise AssertionError("jackd did not come up")
        yield env
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def read_until(proc: subprocess.Popen[str], pattern: str, timeout: float = 30.0) -> re.Match[str]:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout * TIMEOUT_SCALE
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        match = re.search(pattern, line)
        if match:
            return match
    raise AssertionError(f"no {pattern!r} in:\n{''.join(seen)}")


def send_at(port: int, code: str, key: str, at_of: Any) -> int:
    """A scripted phone: joins, then sets gain to 1.0 at a time in the future."""
    with connect(f"ws://127.0.0.1:{port}/", open_timeout=10) as ws:
        ws.send(orjson.dumps({"type": "join", "room_code": code, "key": key}).decode())
        welcome = orjson.loads(ws.recv(timeout=10))
        assert welcome["type"] == "welcome", welcome
        at = at_of(welcome)
        ws.send(orjson.dumps({"type": "param", "param": "gain", "value": 1.0, "at": at}).decode())
        time.sleep(0.3)
        return int(at)


def check_change(audio: np.ndarray, starts: np.ndarray, firsts: np.ndarray, at: int) -> int:
    """The sample where gain 0.5 becomes 1.0 must be the one `at` maps to through the
    host's own block starts; returns it."""
    b = int(np.searchsorted(starts, at, side="right")) - 1
    assert 0 <= b < len(starts) - 1, "the change fell outside the recording"
    expected = int(firsts[b]) + (at - int(starts[b])) * RATE // 1_000_000
    assert int(firsts[b]) <= expected < int(firsts[b + 1])
    n = np.arange(len(audio))
    s = np.sin(2 * np.pi * FREQ * n / RATE)
    window = slice(max(0, expected - 4000), min(len(audio), expected + 4000))
    ok = np.abs(s[window]) > 0.3
    gain = audio[window][ok] / s[window][ok]
    idx = n[window][ok]
    before, after = gain[idx < expected], gain[idx >= expected]
    assert len(before) > 100 and len(after) > 100
    assert np.allclose(before, 0.5, atol=0.01), "gain changed before its sample"
    assert np.allclose(after, 1.0, atol=0.01), "gain did not change at its sample"
    # Every sample from `expected` on is at the new gain and every one before it at the
    # old: the edge is exact. (Where |sin| < 0.3, 11 samples around each zero crossing
    # at 440 Hz, the gain cannot be read, so the first readable one may be a few later.)
    assert int(idx[idx >= expected][0]) - expected <= 11
    return expected


def load(port: int, code: str, key: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "bench" / "host_load.py"),
            "127.0.0.1",
            str(port),
            code,
            key,
            str(PHONES),
            str(PHONE_RATE),
            str(LOAD_SECONDS),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )


def finish(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_c_host_applies_at_on_its_sample_with_100_phones(
    jackd: dict[str, str], tmp_path: Path
) -> None:
    exe = tmp_path / "jack_host"
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc
    built = subprocess.run(
        [
            cc,
            "-std=c11",
            "-O2",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-I",
            bbx_net.get_include(),
            str(ROOT / "examples" / "jack_host.c"),
            "-o",
            str(exe),
            "-ljack",
            "-lm",
        ],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr
    name = f"/bbx-net-{os.getpid()}-jack"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bbx_net",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--shm",
            name,
            "--param",
            "gain=0.5:0:1",
            "--param",
            "freq=440:20:2000",
            "--param",
            "x=0:0:1",
            "--max-clients",
            "200",
            "--no-qr",
            "--no-admin",
            "--no-monitor",
            "--capacity",
            "65536",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=jackd,
    )
    procs = [server]
    try:
        m = read_until(server, r"http://127\.0\.0\.1:(\d+)/\?room=(\d+)&key=([\w-]+)")
        port, code, key = int(m.group(1)), m.group(2), m.group(3)
        read_until(server, "Ctrl-C to stop")
        rec = tmp_path / "c.f32"
        host = subprocess.Popen(
            [str(exe), name, str(SECONDS), str(rec)], stdout=subprocess.PIPE, text=True, env=jackd
        )
        procs.append(host)
        read_until(host, r"^ready 48000 256")
        phones = load(port, code, key)
        procs.append(phones)
        time.sleep(1.5)  # the phones are in and sending
        clock = ClockSync(origin_ns=SharedSegment.attach(name).clock_origin_ns)
        at = send_at(port, code, key, lambda welcome: clock.now_us() + 400_000)
        done = read_until(
            host,
            r"done frames (\d+) blocks (\d+) xruns (\d+) host_xruns (\d+) "
            r"worst_callback_us ([\d.]+)",
            SECONDS + 30,
        )
        assert host.wait(10) == 0
        sent = read_until(phones, r"sent (\d+)", 30)
    finally:
        finish(procs)
    print(f"C host: {done.group(0)}; phones sent {sent.group(1)}")
    assert int(sent.group(1)) >= PHONES * PHONE_RATE * LOAD_SECONDS * 0.8
    assert int(done.group(4)) == 0, "an xrun while the host's callback ran long"
    audio = np.fromfile(rec, np.float32)
    log = np.fromfile(str(rec) + ".blocks", BLOCK_LOG)
    starts = log["start_us"].astype(np.int64)
    expected = check_change(audio, starts, log["first_frame"].astype(np.int64), at)
    print(f"gain changed at sample {expected} as scheduled; worst callback {done.group(5)} us")
    assert not Path("/dev/shm", name[1:]).exists()  # the server removed its segment


def test_python_host_with_the_server_process_applies_at_on_its_sample(
    jackd: dict[str, str], tmp_path: Path
) -> None:
    rec = tmp_path / "py"
    host = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "examples" / "jack_client_host.py"),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--seconds",
            str(SECONDS),
            "--record",
            str(rec),
            "--max-clients",
            "200",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=jackd,
    )
    procs = [host]
    try:
        m = read_until(host, r"room (\d+) port (\d+) key ([\w-]+)")
        code, port, key = m.group(1), int(m.group(2)), m.group(3)
        read_until(host, r"^ready 48000 256")
        phones = load(port, code, key)
        procs.append(phones)
        time.sleep(1.5)
        at = send_at(port, code, key, lambda welcome: welcome["server_time"] + 400_000)
        done = read_until(
            host,
            r"done frames (\d+) xruns (\d+) host_xruns (\d+) "
            r"worst_callback_us ([\d.]+)",
            SECONDS + 30,
        )
        assert host.wait(30) == 0
        sent = read_until(phones, r"sent (\d+)", 30)
    finally:
        finish(procs)
    print(f"Python host: {done.group(0)}; phones sent {sent.group(1)}")
    assert int(sent.group(1)) >= PHONES * PHONE_RATE * LOAD_SECONDS * 0.8
    assert int(done.group(3)) == 0, "an xrun while the host's callback ran long"
    audio = np.load(str(rec) + ".npy")
    log = np.load(str(rec) + ".blocks.npy")
    check_change(audio, log[:, 1], log[:, 0], at)


def test_sounddevice_host_plays_through_portaudio_and_meters_back(
    jackd: dict[str, str],
) -> None:
    """examples/sounddevice_host.py on PortAudio's JACK device: the phone sees the
    meter (the callback's peak) follow the gain it sets."""
    import sounddevice  # noqa: F401  (a test dependency; PortAudio from Debian)

    host = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "examples" / "sounddevice_host.py"),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--seconds",
            "6",
            "--device",
            "0",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=jackd,
    )
    try:
        m = read_until(host, r"room (\d+) port (\d+) key ([\w-]+)")
        code, port, key = m.group(1), int(m.group(2)), m.group(3)
        read_until(host, "playing")
        peaks: list[float] = []
        with connect(f"ws://127.0.0.1:{port}/", open_timeout=10) as ws:
            ws.send(orjson.dumps({"type": "join", "room_code": code, "key": key}).decode())
            deadline = time.monotonic() + 4 * TIMEOUT_SCALE
            sent = False
            while time.monotonic() < deadline:
                msg = orjson.loads(ws.recv(timeout=5))
                if msg["type"] != "visualization":
                    continue
                peaks.append(msg["data"][0])
                if len(peaks) == 30 and not sent:
                    ws.send(orjson.dumps({"type": "param", "param": "gain", "value": 0.8}).decode())
                    sent = True
        assert host.wait(30) == 0
    finally:
        finish([host])
    assert len(peaks) > 60, peaks
    assert all(abs(p - 0.2) < 0.01 for p in peaks[5:25]), peaks[:30]
    assert all(abs(p - 0.8) < 0.01 for p in peaks[-10:]), peaks[-10:]
