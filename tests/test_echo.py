"""Echo pacing (bbx_net.websocket.echo) against its rule stated per recipient, with time
passed in: a cell-rate rule (GCRA) per phone and parameter: at once when not sent
within the last interval, or while the allowance of one more lasts; at most
update_rate a second (plus one) over any stretch."""

from __future__ import annotations

import random

import pytest

from bbx_net.websocket.echo import EchoClock, EchoLine

INTERVAL = 16_667  # µs: 60 updates a second
TOLERANCE = INTERVAL  # the allowance: one update beyond the rate
STEP = INTERVAL - TOLERANCE
NEVER = -(1 << 62)


class Rule:
    """The rule, one recipient at a time (what EchoLine must match, cheaper)."""

    def __init__(self, members: list[int]) -> None:
        self.version = 0
        self.value = 0.0
        self.held = dict.fromkeys(members, 0)  # member -> version it holds
        self.earliest: dict[int, int] = {}  # member -> when it may be sent next

    def change(self, sender: int, value: float, now: int) -> list[tuple[int, int, float]]:
        self.version += 1
        self.value = value
        self.held[sender] = self.version
        return self.run(now)

    def run(self, now: int) -> list[tuple[int, int, float]]:
        sent = []
        for m, held in self.held.items():
            earliest = self.earliest.get(m, NEVER)
            if held < self.version and earliest <= now:
                self.held[m] = self.version
                # GCRA: theoretical time = earliest + tolerance, one interval on from
                # the later of it and now.
                self.earliest[m] = max(earliest + TOLERANCE, now) + INTERVAL - TOLERANCE
                sent.append((now, m, self.value))
        return sorted(sent)

    def next_due(self) -> int | None:
        owed = [self.earliest[m] for m, h in self.held.items() if h < self.version]
        return min(owed) if owed else None


class Paced:
    """EchoLine and EchoClock as the session drives them."""

    def __init__(self, members: list[int]) -> None:
        self.line: EchoLine[int] = EchoLine("gain", members)
        self.clock: EchoClock[int] = EchoClock()

    def _run(self, now: int) -> list[tuple[int, int, float]]:
        sent = [(now, m, self.line.value) for m in self.line.due(now, INTERVAL)]
        self.clock.watch(self.line)
        return sorted(sent)

    def change(self, sender: int, value: float, now: int) -> list[tuple[int, int, float]]:
        self.line.change(sender, value)
        return self._run(now)

    def flush(self, now: int) -> list[tuple[int, int, float]]:
        return [s for line in self.clock.pop_due(now) for s in self._run(now)]


@pytest.mark.parametrize("seed", range(40))
def test_a_line_sends_exactly_what_the_rule_sends_per_recipient(seed: int) -> None:
    """Random changes, joins and leaves over random gaps (from far below to far above
    the interval): the same updates, to the same members, at the same microseconds."""
    rng = random.Random(seed)
    members = list(range(rng.randint(2, 12)))
    rule, paced = Rule(members), Paced(members)
    next_member = len(members)
    now = 1_000_000
    got: list[tuple[int, int, float]] = []
    want: list[tuple[int, int, float]] = []
    for _ in range(400):
        now += rng.choice([0, 1, 50, 900, INTERVAL // 3, STEP, INTERVAL - 1, INTERVAL, 40_000])
        # Trailing edges due before this event, at their own microsecond.
        while (due := rule.next_due()) is not None and due <= now:
            want += rule.run(due)
            assert paced.clock.next_us is not None and paced.clock.next_us <= due
            while paced.clock.next_us is not None and paced.clock.next_us <= due:
                got += paced.flush(paced.clock.next_us)
        # Never late; early only for a member who left or got the value meanwhile.
        if rule.next_due() is None:
            assert paced.line.due_us is None
        else:
            assert paced.line.due_us is not None and paced.line.due_us <= rule.next_due()
        roll = rng.random()
        if roll < 0.08:
            rule.held[next_member] = rule.version  # joined: sent the room's state
            paced.line.add(next_member)
            members.append(next_member)
            next_member += 1
        elif roll < 0.12 and len(members) > 2:
            gone = members.pop(rng.randrange(len(members)))
            del rule.held[gone]
            rule.earliest.pop(gone, None)
            paced.line.discard(gone)
        else:
            sender = rng.choice(members)
            value = round(rng.random(), 6)
            want += rule.change(sender, value, now)
            got += paced.change(sender, value, now)
        assert got == want
    assert len(got) > 100


def test_one_phone_at_the_rate_is_echoed_at_once_even_with_jitter() -> None:
    """A phone moving a slider at the rate, its changes arriving up to half an
    interval early or late: every one goes out at once (a minimum-gap rule would lock
    onto the worst jitter and hold every later change back by it)."""
    members = list(range(100))
    paced = Paced(members)
    rng = random.Random(3)
    for k in range(600):
        now = 1_000_000 + k * INTERVAL + rng.randint(-INTERVAL // 2, INTERVAL // 2)
        assert len(paced.change(0, k, now)) == 99, k


def test_a_phone_not_sent_within_the_interval_is_sent_at_once() -> None:
    """The leading edge: whatever came before, a gap of one interval since a phone's
    last update means the next change reaches it at once."""
    rng = random.Random(5)
    paced = Paced([0, 1])
    now, last = 0, None
    for _ in range(2000):
        now += rng.choice([1, 100, INTERVAL // 4, INTERVAL // 2, INTERVAL])
        sent = [t for t, m, _ in paced.flush(now) + paced.change(0, rng.random(), now)]
        if last is not None and now - last >= INTERVAL:
            assert sent == [now]
        if sent:
            last = sent[-1]


def test_a_burst_is_coalesced_to_the_rate() -> None:
    members = list(range(100))
    paced = Paced(members)
    now = 1_000_000
    sends = {m: 0 for m in members}
    for i in range(1000):  # a burst inside one interval: the allowance, then held
        for _, m, _ in paced.change(i % 100, i / 1000, now + i):
            sends[m] += 1
    assert max(sends.values()) == 2  # the first, and the allowance
    trailing = paced.flush(now + INTERVAL + 1000)
    assert {m for _, m, _ in trailing} == set(members) - {99}  # 99 sent the newest
    assert {v for _, _, v in trailing} == {0.999}
    while paced.clock.next_us is not None:
        assert paced.flush(paced.clock.next_us) == []
    assert paced.line.due_us is None


def test_a_burst_from_a_whole_room_sends_each_member_at_most_twice_an_interval() -> None:
    """A hundred phones all moving the slider, 6,000 changes a second: every member is
    sent at the rate (over any stretch, one update per interval plus one) and ends on
    the newest."""
    members = list(range(100))
    paced = Paced(members)
    rng = random.Random(7)
    sends: dict[int, list[int]] = {m: [] for m in members}
    holds: dict[int, float] = {}  # member -> the newest value it has (sent or its own)
    now = 0

    def deliver(sent: list[tuple[int, int, float]]) -> None:
        for t, m, v in sent:
            sends[m].append(t)
            holds[m] = v

    for _ in range(6000):
        now += rng.randint(0, 333)
        deliver(paced.flush(now))
        sender, value = rng.choice(members), rng.random()
        holds[sender] = value
        deliver(paced.change(sender, value, now))
    for m, times in sends.items():
        for i in range(0, len(times), 7):  # every stretch from the i-th update on
            for j in range(i + 1, len(times)):
                assert j - i <= (times[j] - times[i]) // INTERVAL + 1, (m, i, j)
        assert len(times) >= now // INTERVAL * 0.8  # and kept up with the room
    while paced.clock.next_us is not None:
        deliver(paced.flush(paced.clock.next_us))
    assert paced.line.due_us is None
    assert set(holds.values()) == {value}  # everyone ends on the newest


def test_a_host_value_owes_nobody_anything() -> None:
    paced = Paced([1, 2, 3])
    for t in range(3):  # 2 and 3 spend their allowance
        paced.change(1, t / 10, t)
    assert paced.line.due_us == INTERVAL
    paced.line.set_all(0.9)  # the host sent 0.9 to everyone itself
    assert paced.line.due_us is None
    assert paced.flush(INTERVAL) == []
    assert [m for _, m, _ in paced.change(1, 0.5, INTERVAL + 5)] == [2, 3]


def test_a_line_of_a_gone_room_is_never_due() -> None:
    paced = Paced([1, 2])
    for t in range(3):
        paced.change(1, t / 10, t)
    assert paced.clock.next_us == INTERVAL
    paced.line.live = False
    assert paced.flush(INTERVAL) == [] and not paced.clock
