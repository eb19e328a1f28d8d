"""The phone page and the browser client in real headless Chromium (Playwright).

Chromium comes from Debian (`apt-get install chromium`, done by .ci/run); Playwright
drives that executable, it never downloads a browser. A screenshot of the phone page
is saved to test-artifacts/phone.png.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from playwright.sync_api import Browser, Page, WebSocketRoute, expect, sync_playwright

from bbx_net import MessageType, hash_param_name, net_buffer
from bbx_net.websocket import (
    CommandChannel,
    ParamSpec,
    RoomConfig,
    ServerCommand,
    WsServer,
    WsServerConfig,
)

from conftest import TIMEOUT_SCALE

T = TypeVar("T")
ARTIFACTS = Path(__file__).parent.parent / "test-artifacts"
WAIT_MS = int(10_000 * TIMEOUT_SCALE)
CHROMIUM = (
    os.environ.get("BBX_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class ThreadServer:
    """A WsServer on its own event-loop thread, as an audio host would run it."""

    def __init__(self, port: int = 0, **config: Any) -> None:
        self.stopped = False
        config.setdefault(
            "params", [ParamSpec("gain", 0.5, 0.0, 1.0), ParamSpec("freq", 440.0, 20.0, 2000.0)]
        )
        config.setdefault("triggers", ["kick"])
        self.producer, self.consumer = net_buffer(4096)
        self.commands = CommandChannel()
        self.server = WsServer(
            WsServerConfig(bind_addr=("127.0.0.1", port), **config), self.producer, self.commands
        )
        self.loop = asyncio.new_event_loop()
        started = threading.Event()

        def main() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(self.server.start())
            started.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=main, daemon=True)
        self.thread.start()
        assert started.wait(10 * TIMEOUT_SCALE)
        self.code = self.commands.create_room_threadsafe(timeout=10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}/"

    def call(self, fn: Callable[[], T]) -> T:
        """Runs fn on the server's loop thread and returns its result."""
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                fut.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                fut.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return fut.result(10 * TIMEOUT_SCALE)

    def received(self, param: str, timeout: float = 10.0) -> list[float]:
        """Values of `param` the audio side drained from the ring within `timeout`."""
        wanted = hash_param_name(param)
        values: list[float] = []
        deadline = time.monotonic() + timeout * TIMEOUT_SCALE
        while time.monotonic() < deadline:
            m = self.consumer.try_pop()
            if m is None:
                if values:
                    break
                time.sleep(0.02)
                continue
            if m.type == MessageType.PARAMETER_CHANGE and m.param_hash == wanted:
                values.append(m.value)
        return values

    def crash(self) -> None:
        """The server vanishes without a goodbye (power cut, network gone)."""

        def cut() -> None:
            for c in list(self.server._connections):
                c.abort()
            assert self.server._server is not None
            self.server._server.close()

        self.call(cut)
        self.stop()

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(20)
        # The pages are still open and may reconnect while the server stops: let the
        # connections made meanwhile (refused at once) finish closing before the loop.
        asyncio.run_coroutine_threadsafe(asyncio.sleep(0.1), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless, driven by Playwright."""
    assert CHROMIUM, "chromium is required for the browser tests (.ci/run installs it)"
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


# Tests take `server` before `page`: pytest tears fixtures down in reverse, so the page
# closes before its server stops, and no reconnect of a still-open page races the stop.
@pytest.fixture
def server() -> Iterator[ThreadServer]:
    s = ThreadServer()
    yield s
    s.stop()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 390, "height": 844}, has_touch=True)
    p = context.new_page()
    p.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    p.on("pageerror", lambda exc: errors.append(str(exc)))
    yield p
    context.close()
    assert errors == [], errors


def open_joined(page: Page, server: ThreadServer, code: str | None = None) -> None:
    page.goto(f"{server.url}?room={code or server.code}")
    expect(page.get_by_test_id("control-screen")).to_be_visible()
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "connected")


def drag_slider_to(page: Page, name: str, fraction: float) -> None:
    box = page.get_by_test_id(f"slider-{name}").bounding_box()
    assert box is not None
    page.mouse.click(box["x"] + box["width"] * fraction, box["y"] + box["height"] / 2)


# ---- tests -----------------------------------------------------------------------------


def test_join_by_code_and_a_slider_reaches_the_audio_side(server: ThreadServer, page: Page) -> None:
    """Type the code, join, move a slider: the value is drained from the ring."""
    page.goto(server.url)
    page.get_by_test_id("code").fill(server.code)
    page.get_by_test_id("join").click()
    expect(page.get_by_test_id("slider-gain")).to_be_visible()
    drag_slider_to(page, "gain", 0.9)
    values = server.received("gain")
    assert values and 0.8 < values[-1] <= 1.0
    shown = float(page.get_by_test_id("value-gain").text_content() or "nan")
    assert abs(shown - values[-1]) < 0.01


def test_a_link_with_the_room_key_joins_where_typed_codes_are_throttled(
    server: ThreadServer, page: Page
) -> None:
    """This address spent its failed joins: the code alone is refused, the link's key
    (sent by the page) still joins."""
    from websockets.sync.client import connect

    with connect(f"ws://127.0.0.1:{server.server.port}/") as ws:
        for _ in range(11):
            ws.send('{"type": "join", "room_code": "nope"}')
            reply = ws.recv(timeout=10)
        assert '"RATE_LIMITED"' in str(reply)
    page.goto(f"{server.url}?room={server.code}")
    expect(page.get_by_test_id("join-error")).to_contain_text("Too many wrong codes")
    page.goto("about:blank")  # the refused page is gone before the linked one opens
    key = server.call(lambda: server.server.room_key(server.code))
    page.goto(f"{server.url}?room={server.code}&key={key}")
    expect(page.get_by_test_id("control-screen")).to_be_visible()
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "connected")


class Away:
    """Routes the page's WebSockets through Playwright: while `on`, every connection
    the page opens is closed at once (the phone is out of range)."""

    def __init__(self, page: Page) -> None:
        self.on = False
        page.route_web_socket(re.compile(".*"), self._route)

        self.held: list[WebSocketRoute] | None = None  # a list: attempts hang instead
        self.log: list[str] = []  # "open n", "closed by page n", in order

    def _route(self, ws: WebSocketRoute) -> None:
        n = len([e for e in self.log if e.startswith("open")])
        self.log.append(f"open {n}")
        if self.on and self.held is not None:
            ws.on_close(lambda code, reason: self.log.append(f"closed by page {n}"))
            self.held.append(ws)  # neither refused nor answered: still in flight
        elif self.on:
            ws.close()
        else:
            server = ws.connect_to_server()

            def closed(code: int | None, reason: str | None) -> None:
                # A handler replaces Playwright's forwarding of the page's close.
                self.log.append(f"closed by page {n}")
                server.close(code=code, reason=reason)

            ws.on_close(closed)

    def leave(self, server: ThreadServer) -> None:
        """Out of range: the phone's connection drops and cannot come back."""
        self.on = True
        server.call(lambda: [c.abort() for c in list(server.server._connections)])


def test_a_phone_back_after_a_server_restart_is_told_the_room_ended(
    server: ThreadServer, page: Page
) -> None:
    """The server dies (no goodbye) and comes back on the same port with new rooms: the
    phone's reconnect gets INVALID_ROOM and the page says so on the join form, where
    the new code works; never a banner stuck on "Reconnecting"."""
    open_joined(page, server)
    port = server.server.port
    server.crash()
    restarted = ThreadServer(port=port)
    try:
        expect(page.get_by_test_id("join-screen")).to_be_visible()
        expect(page.get_by_test_id("join-error")).to_contain_text("This room has ended")
        expect(page.get_by_test_id("reconnecting")).to_be_hidden()
        page.get_by_test_id("code").fill(restarted.code)
        page.get_by_test_id("join").click()
        expect(page.get_by_test_id("status")).to_have_attribute("data-state", "connected")
    finally:
        page.goto("about:blank")  # no reconnect races the server's stop
        restarted.stop()


def test_a_room_that_expired_while_the_phone_was_away_ends_clearly(page: Page) -> None:
    server = ThreadServer(room=RoomConfig(expiration=4.0))
    try:
        away = Away(page)
        open_joined(page, server)
        away.leave(server)
        expect(page.get_by_test_id("reconnecting")).to_be_visible()
        deadline = time.monotonic() + 20 * TIMEOUT_SCALE
        while server.call(lambda: server.server.stats().rooms) > 0:
            assert time.monotonic() < deadline, "the room did not expire"
            time.sleep(0.2)
        away.on = False
        page.evaluate("window.bbxClient._wake()")  # as when the phone's screen turns on
        expect(page.get_by_test_id("join-error")).to_contain_text("This room has ended")
        expect(page.get_by_test_id("join-screen")).to_be_visible()
    finally:
        page.goto("about:blank")  # no reconnect races the server's stop
        server.stop()


def test_slider_moves_made_offline_are_marked_and_sent_on_reconnect(
    server: ThreadServer, page: Page
) -> None:
    away = Away(page)
    open_joined(page, server)
    away.leave(server)
    expect(page.get_by_test_id("reconnecting")).to_be_visible()
    page.evaluate("""() => {
        const s = document.querySelector('[data-testid="slider-gain"]');
        s.value = 250; s.dispatchEvent(new Event("input"));  // positions 0..1000
        setTimeout(() => { s.value = 875; s.dispatchEvent(new Event("input")); }, 100);
    }""")
    expect(page.get_by_test_id("unsent")).to_contain_text("1 change will be sent")
    assert server.received("gain", timeout=0.5) == []
    away.on = False
    page.evaluate("window.bbxClient._wake()")
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "connected")
    assert server.received("gain") == [pytest.approx(0.875)]  # the latest value only
    expect(page.get_by_test_id("value-gain")).to_have_text("0.875")
    expect(page.get_by_test_id("unsent")).to_have_text("")


def test_a_wake_up_ends_the_attempt_in_flight_before_the_next(
    server: ThreadServer, page: Page
) -> None:
    """The phone wakes while a reconnect attempt still hangs: that attempt is ended
    before a new one opens (a late join of the old one would take the seat back from
    the new connection, and with it what the new one flushed), and the change made
    offline reaches the server once."""
    away = Away(page)
    open_joined(page, server)
    away.held = []
    away.leave(server)
    deadline = time.monotonic() + 10 * TIMEOUT_SCALE
    while not away.held and time.monotonic() < deadline:
        page.wait_for_timeout(50)  # lets Playwright run the route handler
    assert away.held, "no reconnect attempt"
    page.evaluate("""() => {
        const s = document.querySelector('[data-testid="slider-gain"]');
        s.value = 625; s.dispatchEvent(new Event("input"));
    }""")
    expect(page.get_by_test_id("unsent")).to_contain_text("1 change will be sent")
    hung = away.log[-1]  # "open n" of the attempt in flight
    away.on = False
    page.evaluate("window.bbxClient._wake()")
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "connected")
    assert server.received("gain") == [pytest.approx(0.625)]
    n = hung.split()[1]
    after = away.log[away.log.index(hung) + 1 :]
    assert after[0] == f"closed by page {n}", away.log  # ended before the next opened
    assert f"open {int(n) + 1}" in after
    expect(page.get_by_test_id("unsent")).to_have_text("")


def test_host_broadcast_moves_the_slider(server: ThreadServer, page: Page) -> None:
    """BroadcastParam from the host sets the slider on the page."""
    open_joined(page, server)
    server.commands.send_threadsafe(ServerCommand.BroadcastParam("gain", 0.25))
    expect(page.get_by_test_id("value-gain")).to_have_text("0.250")
    assert page.get_by_test_id("slider-gain").input_value() == "250"  # position of 1000


def test_two_pages_see_each_others_updates(browser: Browser, server: ThreadServer) -> None:
    """A change on one phone moves the slider on the other."""
    ctx = browser.new_context(viewport={"width": 390, "height": 844})
    try:
        a, b = ctx.new_page(), ctx.new_page()
        for p in (a, b):
            p.set_default_timeout(WAIT_MS)
            open_joined(p, server)
        drag_slider_to(a, "freq", 0.5)
        expect(a.get_by_test_id("value-freq")).not_to_have_text("440")
        expected = a.get_by_test_id("value-freq").text_content()
        expect(b.get_by_test_id("value-freq")).to_have_text(expected or "?")
    finally:
        ctx.close()


def test_trigger_pad_and_xy_pad_reach_the_ring(server: ThreadServer, page: Page) -> None:
    """Tapping a pad and the XY pad send triggers (the XY one with coordinates)."""
    open_joined(page, server)
    page.get_by_test_id("pad-kick").click()
    box = page.get_by_test_id("xy").bounding_box()
    assert box is not None
    page.mouse.click(box["x"] + box["width"] * 0.25, box["y"] + box["height"] * 0.25)
    got: dict[int, Any] = {}
    deadline = time.monotonic() + 10 * TIMEOUT_SCALE
    while len(got) < 2 and time.monotonic() < deadline:
        m = server.consumer.try_pop()
        if m is None:
            time.sleep(0.02)
        elif m.type == MessageType.TRIGGER:
            got[m.param_hash] = m
    assert hash_param_name("kick") in got
    xy = got[hash_param_name("xy")]
    assert xy.x == pytest.approx(0.25, abs=0.05) and xy.y == pytest.approx(0.75, abs=0.05)


def test_room_closed_screen(server: ThreadServer, page: Page) -> None:
    """CloseRoom shows the closed screen."""
    code = server.commands.create_room_threadsafe(timeout=10)
    open_joined(page, server, code)
    server.commands.send_threadsafe(ServerCommand.CloseRoom(code))
    expect(page.get_by_test_id("closed-screen")).to_be_visible()
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "closed")


def test_wrong_code_says_so_and_the_retry_works(server: ThreadServer, page: Page) -> None:
    """A wrong code shows an error on the join screen; the right one then joins."""
    page.goto(server.url)
    wrong = "0000" if server.code != "0000" else "0001"
    page.get_by_test_id("code").fill(wrong)
    page.get_by_test_id("join").click()
    expect(page.get_by_test_id("join-error")).to_contain_text("No room with that code")
    expect(page.get_by_test_id("join-screen")).to_be_visible()
    page.get_by_test_id("code").fill(server.code)
    page.get_by_test_id("join").click()
    expect(page.get_by_test_id("control-screen")).to_be_visible()


def test_reconnects_with_the_same_node_id(server: ThreadServer, page: Page) -> None:
    """The server drops the socket; the page reconnects and keeps its node id."""
    open_joined(page, server)
    node = page.evaluate("window.bbxClient.nodeId")
    assert node

    def drop() -> None:
        for c in list(server.server._connections):
            if c.peer is not None and c.peer.node_str == node:
                c.abort()

    server.call(drop)
    page.wait_for_function("() => window.bbxClient.isReconnecting || !window.bbxClient.isConnected")
    page.wait_for_function("() => window.bbxClient.isConnected")
    assert page.evaluate("window.bbxClient.nodeId") == node
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "connected")


def test_server_down_shows_reconnecting(page: Page, browser: Browser) -> None:
    """When the server goes away the page says reconnecting…, not a blank page."""
    lonely = ThreadServer()
    try:
        open_joined(page, lonely)
    finally:
        lonely.crash()
    expect(page.get_by_test_id("reconnecting")).to_be_visible()
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "reconnecting")


def test_joining_while_the_server_is_down_shows_reconnecting(page: Page) -> None:
    """A phone that opens the page and joins just as the server dies sees reconnecting…,
    and the client keeps retrying with growing delays."""
    lonely = ThreadServer()
    page.goto(lonely.url)
    page.get_by_test_id("code").fill(lonely.code)
    lonely.crash()
    page.get_by_test_id("join").click()
    expect(page.get_by_test_id("reconnecting")).to_be_visible()
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "reconnecting")
    page.evaluate("() => { window.bbxClient.reconnectDelay = 50; }")
    page.wait_for_function("() => window.bbxClient._attempts >= 3")
    assert not page.evaluate("window.bbxClient.isConnected")


def test_to_server_time_agrees_with_the_server_clock(server: ThreadServer, page: Page) -> None:
    """After the join's burst of pings, toServerTime(now) is within 2 ms of the server
    clock, and the server's own estimate of this phone (from the same exchanges, which
    the page reports in its pings) agrees with the page's."""
    open_joined(page, server)
    page.wait_for_function("() => window.bbxClient.clock.samples >= 20")
    clock = server.server.clock
    errors = []
    for _ in range(5):
        before = clock.now_us()
        estimate = page.evaluate("window.bbxClient.toServerTime(performance.now())")
        after = clock.now_us()
        # The page read its clock somewhere between `before` and `after`.
        error = max(0, before - estimate, estimate - after)
        errors.append(error)
    assert min(errors) < 2_000, errors
    deadline = time.monotonic() + 10 * TIMEOUT_SCALE
    while True:
        (stats,) = server.call(server.server.client_stats)
        if stats.clock_offset_us is not None and stats.reported_offset_us is not None:
            if abs(stats.clock_offset_us - stats.reported_offset_us) < 1_000:
                break
        assert time.monotonic() < deadline, stats
        time.sleep(0.2)
    assert stats.round_trip_us is not None and stats.clock_error_us is not None
    assert page.evaluate(
        "window.bbxClient.toLocalTime(window.bbxClient.toServerTime(1234.5))"
    ) == pytest.approx(1234.5)


def test_phone_viewport_layout_and_screenshot(server: ThreadServer, page: Page) -> None:
    """At 390×844: no horizontal scroll, every control ≥ 44 px tall; screenshot saved."""
    open_joined(page, server)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    heights = page.evaluate("""() => [...document.querySelectorAll(
        '#control-screen input, #control-screen button, #xy')]
        .map(el => [el.dataset.testid || el.id, el.getBoundingClientRect().height])""")
    assert heights and all(h >= 44 for _, h in heights), heights
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "phone.png"), full_page=True)
    page.goto(server.url)  # the join screen too
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    for testid in ("code", "join"):
        box = page.get_by_test_id(testid).bounding_box()
        assert box is not None and box["height"] >= 44
    page.screenshot(path=str(ARTIFACTS / "phone-join.png"))


def test_page_files_are_served_with_their_types(server: ThreadServer, page: Page) -> None:
    """The page, the client module, the manifest and the worker come from the package."""
    for path, ctype in (
        ("/", "text/html"),
        ("/bbx-client.js", "text/javascript"),
        ("/manifest.webmanifest", "application/manifest+json"),
        ("/sw.js", "text/javascript"),
        ("/icon.svg", "image/svg+xml"),
    ):
        response = page.request.get(server.url.rstrip("/") + path)
        assert response.status == 200 and response.headers["content-type"].startswith(ctype)
    assert page.request.get(server.url + "../etc/passwd").status == 404


def test_the_projector_page_shows_the_code_qr_and_phones_and_follows_a_new_room(
    browser: Browser, server: ThreadServer
) -> None:
    """/show at 1280x800: the shown room's code in big digits, its QR code (segno's
    SVG) and link, the number of phones joined; a new room replaces it live."""
    from websockets.sync.client import connect

    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    try:
        page.goto(f"{server.url}show")
        expect(page.get_by_test_id("status")).to_contain_text("No room is shown")
        link = f"{server.url}?room={server.code}&key=abc"
        server.call(lambda: server.server.show(server.code, link))
        expect(page.get_by_test_id("code")).to_have_text(server.code)
        expect(page.get_by_test_id("link")).to_have_text(link)
        expect(page.locator("#qr svg")).to_be_visible()
        box = page.locator("#qr svg").bounding_box()
        assert box is not None and box["width"] >= 400 and box["height"] >= 400  # scaled up
        expect(page.get_by_test_id("phones")).to_have_text("0 phones joined")
        size = page.locator("#code").evaluate("el => parseFloat(getComputedStyle(el).fontSize)")
        assert size >= 120  # readable from the back of the room
        with connect(f"ws://127.0.0.1:{server.server.port}/") as ws:
            ws.send(f'{{"type": "join", "room_code": "{server.code}"}}')
            assert '"welcome"' in str(ws.recv(timeout=10))
            expect(page.get_by_test_id("phones")).to_have_text("1 phone joined")
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "projector.png"))
        new = server.commands.create_room_threadsafe(timeout=10)
        server.call(lambda: server.server.show(new, f"{server.url}?room={new}"))
        expect(page.get_by_test_id("code")).to_have_text(new)
        expect(page.get_by_test_id("phones")).to_have_text("0 phones joined")
    finally:
        context.close()


SHOW_PARAMS = [
    ParamSpec("gain", 0.5, 0.0, 1.0, label="Volume", group="Mix"),
    ParamSpec("freq", 440.0, 20.0, 2000.0, label="Pitch", unit="Hz", log=True, group="Tone"),
    ParamSpec("voices", 3, 1, 8, label="Voices", integer=True, group="Tone"),
    ParamSpec("pan", 0.0, -1.0, 1.0, step=0.25, group="Mix"),
]
LONG_PAD = "a_really_long_trigger_name_that_would_overflow_its_pad"


@pytest.fixture
def show_server() -> Iterator[ThreadServer]:
    s = ThreadServer(
        params=SHOW_PARAMS,
        triggers=["kick", LONG_PAD],
        title="Night of Sines",
        instruction="Move the sliders together and listen.",
        trigger_labels={"kick": "Kick drum"},
    )
    yield s
    s.stop()


def swipe(page: Page, x0: float, y0: float, x1: float, y1: float, steps: int = 12) -> None:
    """A one-finger touch swipe, as the phone's touchscreen sends it (CDP)."""
    cdp = page.context.new_cdp_session(page)
    try:
        for i in range(steps + 1):
            kind = "touchStart" if i == 0 else "touchMove"
            x, y = x0 + (x1 - x0) * i / steps, y0 + (y1 - y0) * i / steps
            cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": [{"x": x, "y": y}]})
            page.wait_for_timeout(16)
        cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    finally:
        cdp.detach()


@pytest.mark.parametrize("size", [(390, 844), (1280, 800)], ids=["phone", "desktop"])
def test_the_page_shows_the_hosts_metadata_title_and_groups(
    show_server: ThreadServer, page: Page, size: tuple[int, int]
) -> None:
    """Labels, units, integer and log sliders, groups in order, title, instruction and
    pad labels, as the host declared them; long names wrap; screenshots saved."""
    width, height = size
    page.set_viewport_size({"width": width, "height": height})
    open_joined(page, show_server)
    expect(page.get_by_test_id("title")).to_have_text("Night of Sines")
    assert page.title() == "Night of Sines"
    expect(page.get_by_test_id("instruction")).to_have_text("Move the sliders together and listen.")
    assert page.locator(".group h2").all_text_contents() == ["Mix", "Tone"]
    expect(page.locator("label[for='param-freq']")).to_have_text("Pitch")
    expect(page.get_by_test_id("value-freq")).to_have_text("440 Hz")
    expect(page.get_by_test_id("value-voices")).to_have_text("3")
    expect(page.get_by_test_id("pad-kick")).to_have_text("Kick drum")
    # The log slider: its middle is the geometric mean of 20 and 2000 Hz.
    drag_slider_to(page, "freq", 0.5)
    values = show_server.received("freq")
    assert values and 150 < values[-1] < 260, values
    drag_slider_to(page, "voices", 0.6)
    voices = show_server.received("voices")
    assert voices and voices[-1] == round(voices[-1])  # whole numbers only
    drag_slider_to(page, "pan", 0.6)
    pans = show_server.received("pan")
    assert pans and (pans[-1] / 0.25) == pytest.approx(round(pans[-1] / 0.25))  # on its steps
    long_pad = page.get_by_test_id(f"pad-{LONG_PAD}")
    assert long_pad.evaluate("b => b.scrollWidth <= b.clientWidth + 1")
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    header = page.get_by_test_id("header").bounding_box()
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    assert header is not None and page.get_by_test_id("header").bounding_box() == header
    page.evaluate("window.scrollTo(0, 0)")
    ARTIFACTS.mkdir(exist_ok=True)
    name = "phone-show.png" if width < 600 else "desktop-show.png"
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def test_the_header_stays_visible_and_a_vertical_swipe_on_a_slider_scrolls(
    show_server: ThreadServer, page: Page
) -> None:
    """At 390x844 with touch: an upward swipe that starts on a slider scrolls the page
    and does not move the slider; the header stays at the top; a horizontal drag does
    move it."""
    open_joined(page, show_server)
    track = page.get_by_test_id("track-pan").bounding_box()
    assert track is not None
    x, y = track["x"] + track["width"] * 0.8, track["y"] + track["height"] / 2
    swipe(page, x, y, x - 30, y - 300)
    page.wait_for_timeout(300)
    assert page.evaluate("window.scrollY") > 50
    assert show_server.received("pan", timeout=0.5) == []
    expect(page.get_by_test_id("value-pan")).to_have_text("0.000")
    header = page.get_by_test_id("header").bounding_box()
    assert header is not None and abs(header["y"]) < 1  # still on screen, at the top
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    header = page.get_by_test_id("header").bounding_box()
    assert header is not None and abs(header["y"]) < 1
    page.evaluate("window.scrollTo(0, 0)")
    track = page.get_by_test_id("track-gain").bounding_box()
    assert track is not None
    y = track["y"] + track["height"] / 2
    swipe(page, track["x"] + track["width"] * 0.2, y, track["x"] + track["width"] * 0.9, y)
    values = show_server.received("gain")
    assert values and values[-1] > 0.7, values


def test_a_malformed_code_gets_our_message(server: ThreadServer, page: Page) -> None:
    page.goto(server.url)
    page.get_by_test_id("code").fill("12a4")
    page.get_by_test_id("join").click()
    expect(page.get_by_test_id("join-error")).to_have_text(
        "The code is the digits shown by the host."
    )
    expect(page.get_by_test_id("join-screen")).to_be_visible()


def test_the_host_can_put_the_xy_pad_first_so_it_is_on_screen(page: Page) -> None:
    server = ThreadServer(params=SHOW_PARAMS, triggers=["kick"], xy_pad="first")
    try:
        open_joined(page, server)
        box = page.get_by_test_id("xy").bounding_box()
        assert box is not None and box["y"] + box["height"] <= 844  # whole, unscrolled
    finally:
        page.goto("about:blank")
        server.stop()
    server = ThreadServer(xy_pad="off")
    try:
        open_joined(page, server)
        expect(page.get_by_test_id("xy")).to_be_hidden()
    finally:
        page.goto("about:blank")
        server.stop()


def test_the_operator_view_lists_phones_live_and_steers_the_rooms(browser: Browser) -> None:
    """/admin?token=...: rooms and their phones appear without a reload; Send
    broadcasts a value to the phones; New room adds one; Close room closes it for its
    phones. A wrong token is told so and does not retry."""
    from websockets.sync.client import connect

    token = "operator-token-0123456789"
    server = ThreadServer(admin_token=token)
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    try:
        page.goto(f"{server.url}admin?token={token}")
        expect(page.get_by_test_id("conn")).to_have_text("live")
        expect(page.get_by_test_id(f"room-{server.code}")).to_contain_text("0 phones")
        with connect(f"ws://127.0.0.1:{server.server.port}/") as phone:
            phone.send(f'{{"type": "join", "room_code": "{server.code}", "client_name": "Ana"}}')
            assert '"welcome"' in str(phone.recv(timeout=10))
            phone.recv(timeout=10)  # state
            room = page.get_by_test_id(f"room-{server.code}")
            expect(room).to_contain_text("1 phone")
            expect(room.get_by_test_id("phone")).to_contain_text("Ana")
            page.get_by_test_id("param").select_option("gain")
            page.get_by_test_id("value").fill("0.3")
            page.get_by_test_id("send").click()
            assert '"update"' in (got := str(phone.recv(timeout=10))) and "0.3" in got
            expect(page.get_by_test_id("values")).to_contain_text("gain = 0.3")
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "operator.png"), full_page=True)
            page.get_by_test_id("new-room").click()
            expect(page.locator("[data-testid^='room-']")).to_have_count(2)
            page.get_by_test_id(f"close-{server.code}").click()
            assert '"closed"' in str(phone.recv(timeout=10))
            expect(page.locator("[data-testid^='room-']")).to_have_count(1)
        wrong = context.new_page()
        wrong.set_default_timeout(WAIT_MS)
        wrong.goto(f"{server.url}admin?token=wrong")
        expect(wrong.get_by_test_id("error")).to_contain_text("Wrong admin token")
        expect(wrong.get_by_test_id("rooms")).to_be_empty()
    finally:
        context.close()
        server.stop()
