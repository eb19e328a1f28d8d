"""Audio hosts under load, in a real JACK graph (private jackd, dummy backend).

    python bench/bench_host.py [--seconds 6] [--hosts c,py-in,py-in-tuned,py-process]

Hosts (examples/): the C callback (jack_host.c, server `bench/host_server.py` in its
own process over a shared segment); the Python callback (jack_client_host.py) with the
server in a thread of its process, the same with `tune_python_host()`, and with the
server in its own process (`serve_process`). Loads (bench/host_load.py, its own
process): 0, 100 and 300 phones at 60 Hz, one room each, and one room of 100 phones at
60 Hz whose updates echo to each other. Beside every run, a C probe client in the same
graph (jack_host.c without a ring) measures what the graph itself does.

Per cell: the host's callback duration p50/p99/max, its lateness (cycle start to
callback entry) p99/max, xruns and those caused by the host (an xrun while its own
callback ran past half the period), events lost (sent by phones, never drained), and
the probe's lateness p99/max. The first second of each run is left out (start-up).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import bbx_net

ROOT = Path(__file__).parent.parent
RATE, PERIOD = 48_000, 256
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
LOADS = [
    ("0 phones", 0, False),
    ("100 phones", 100, False),
    ("300 phones", 300, False),
    ("1 room of 100, echo", 100, True),
]
HOSTS = {
    "c": "C callback, server process",
    "py-in": "Python callback, server in process",
    "py-in-tuned": "Python, in process + tune_python_host",
    "py-process": "Python callback, serve_process",
}


def read_until(proc: subprocess.Popen[str], pattern: str, timeout: float) -> re.Match[str]:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if m := re.search(pattern, line):
            return m
    raise RuntimeError(f"no {pattern!r} in {''.join(seen)}")


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def start_jackd() -> tuple[subprocess.Popen[str], dict[str, str]]:
    env = dict(os.environ, JACK_DEFAULT_SERVER=f"bbx-bench-{os.getpid()}")
    jackd = subprocess.Popen(
        [
            "jackd",
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
        stderr=subprocess.DEVNULL,
        text=True,
    )
    for _ in range(100):
        out = subprocess.run(["jack_lsp"], env=env, capture_output=True, text=True).stdout
        if "system:playback_1" in out:
            return jackd, env
        time.sleep(0.2)
    raise RuntimeError("jackd did not start")


def cell(
    host: str, n: int, echo: bool, seconds: float, env: dict[str, str], exe: Path, tmp: Path
) -> dict[str, Any]:
    total = seconds + 3.0
    rooms_file = tmp / "rooms.json"
    rooms_file.unlink(missing_ok=True)
    n_rooms = 1 if echo or n == 0 else n
    procs: list[subprocess.Popen[str]] = []
    try:
        if host == "c":
            name = f"/bbx-bench-{os.getpid()}"
            server = subprocess.Popen(
                [
                    sys.executable,
                    str(ROOT / "bench" / "host_server.py"),
                    name,
                    str(n_rooms),
                    str(rooms_file),
                ],
                stdout=subprocess.PIPE,
                text=True,
                env=env,
            )
            procs.append(server)
            for _ in range(300):
                if rooms_file.exists() and rooms_file.stat().st_size:
                    break
                time.sleep(0.05)
            rec = tmp / "host.f32"
            proc = subprocess.Popen(
                [str(exe), name, str(total), str(rec)], stdout=subprocess.PIPE, text=True, env=env
            )
        else:
            rec = tmp / "host"
            cmd = [
                sys.executable,
                str(ROOT / "examples" / "jack_client_host.py"),
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--seconds",
                str(total),
                "--record",
                str(rec),
                "--rooms",
                str(n_rooms),
                "--rooms-out",
                str(rooms_file),
                "--max-clients",
                "400",
            ]
            if host.startswith("py-in"):
                cmd.append("--in-process")
            if host == "py-in-tuned":
                cmd.append("--tune")
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
        procs.append(proc)
        read_until(proc, r"^ready ", 60)
        probe = subprocess.Popen(
            [str(exe), "-", str(total), str(tmp / "probe.f32")],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        procs.append(probe)
        read_until(probe, r"^ready ", 30)
        port = json.loads(rooms_file.read_text())["port"]
        load = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "bench" / "host_load.py"),
                "127.0.0.1",
                str(port),
                f"@{rooms_file}",
                "-",
                str(n),
                "60",
                str(seconds),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(load)
        sent = int(read_until(load, r"sent (\d+)", seconds + 120).group(1))
        done = read_until(proc, r"done frames .* xruns (\d+) host_xruns (\d+)", total + 60)
        read_until(probe, r"^done", 30)
    finally:
        for p in reversed(procs):
            stop(p)
    skip = RATE // PERIOD  # the first second
    if host == "c":
        log = np.fromfile(str(rec) + ".blocks", BLOCK_LOG)
        dur, late, events = log["callback_ns"], log["late_ns"], log["events"]
    else:
        timing = np.load(str(rec) + ".timing.npy")
        dur, late, events = timing[:, 0], timing[:, 1], timing[:, 2]
    probe_log = np.fromfile(str(tmp / "probe.f32") + ".blocks", BLOCK_LOG)
    us = lambda a: np.asarray(a[skip:], np.float64) / 1000.0  # noqa: E731
    d, lt, pl = us(dur), us(late), us(probe_log["late_ns"])
    return {
        "dur": (np.median(d), np.percentile(d, 99), d.max()),
        "late": (np.percentile(lt, 99), lt.max()),
        "xruns": int(done.group(1)),
        "host_xruns": int(done.group(2)),
        "lost": sent - int(np.sum(events)),
        "sent": sent,
        "probe": (np.percentile(pl, 99), pl.max()),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=6.0, help="load seconds per cell")
    ap.add_argument("--hosts", default=",".join(HOSTS))
    args = ap.parse_args()
    if not shutil.which("jackd"):
        sys.exit("needs jackd (Debian jackd2)")
    tmp = Path(tempfile.mkdtemp(prefix="bbx-bench-host-"))
    exe = tmp / "jack_host"
    subprocess.run(
        [
            shutil.which("cc") or "gcc",
            "-std=c11",
            "-O2",
            "-I",
            bbx_net.get_include(),
            str(ROOT / "examples" / "jack_host.c"),
            "-o",
            str(exe),
            "-ljack",
            "-lm",
        ],
        check=True,
    )
    jackd, env = start_jackd()
    rows = []
    try:
        for host in args.hosts.split(","):
            for label, n, echo in LOADS:
                print(f"measuring {HOSTS[host]}, {label}...", file=sys.stderr, flush=True)
                rows.append((HOSTS[host], label, cell(host, n, echo, args.seconds, env, exe, tmp)))
    finally:
        jackd.terminate()
        jackd.wait(10)
    print(
        f"\n48 kHz / {PERIOD} frames (period {PERIOD / RATE * 1e3:.2f} ms), "
        f"{args.seconds:.0f} s of load per cell; times in ms\n"
    )
    print(
        "| host | load | callback p50 / p99 / max | lateness p99 / max | xruns (host's) "
        "| events lost | probe lateness p99 / max |"
    )
    print("|---|---|---|---|---|---|---|")
    for host, label, r in rows:
        d, lt, p = r["dur"], r["late"], r["probe"]
        print(
            f"| {host} | {label} | {d[0] / 1e3:.3f} / {d[1] / 1e3:.3f} / {d[2] / 1e3:.2f} "
            f"| {lt[0] / 1e3:.2f} / {lt[1] / 1e3:.2f} | {r['xruns']} ({r['host_xruns']}) "
            f"| {r['lost']} of {r['sent']} | {p[0] / 1e3:.2f} / {p[1] / 1e3:.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
