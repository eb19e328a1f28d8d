"""The examples and the README's API block stop cleanly: phones get `closed`, exit 0."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import websockets

from conftest import TIMEOUT_SCALE

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_basic_server_closes_its_phones_and_exits_0(sig: signal.Signals) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "basic_server.py"), "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        found = re.search(r"Room code: (\d+) \(port (\d+)\)", line)
        assert found, line
        code, port = found.group(1), int(found.group(2))

        async def phone() -> dict[str, object]:
            async with websockets.connect(f"ws://127.0.0.1:{port}/") as ws:
                await ws.send(orjson.dumps({"type": "join", "room_code": code}).decode())
                assert orjson.loads(await ws.recv())["type"] == "welcome"
                proc.send_signal(sig)
                while True:
                    msg = orjson.loads(await asyncio.wait_for(ws.recv(), 10 * TIMEOUT_SCALE))
                    if msg["type"] == "closed":
                        return msg

        assert asyncio.run(asyncio.wait_for(phone(), 30 * TIMEOUT_SCALE))["type"] == "closed"
        _, err = proc.communicate(timeout=20 * TIMEOUT_SCALE)
        assert proc.returncode == 0, err
        assert "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_run_returns_the_result_and_lets_other_errors_through() -> None:
    from bbx_net.websocket import run

    async def fine() -> int:
        return 7

    async def broken() -> None:
        raise ValueError("boom")

    assert run(fine()) == 7
    with pytest.raises(ValueError, match="boom"):
        run(broken())
