"""Echo pacing (bbx_net.websocket.echo) against the rule stated per recipient, with time
passed in: an update goes out at once when that phone has not been sent the parameter
within the last interval; changes inside the interval go out when it ends."""

from __future__ import annotations

import random

import pytest

from bbx_net.websocket.echo import EchoClock, EchoLine

INTERVAL = 16_667  # µs: 60 updates a second


class Rule:
    """The rule, one recipient at a time (what EchoLine must match, cheaper)."""

    def __init__(self, members: list[int]) -> None:
        self.version = 0
        self.value = 0.0
        self.held = dict.fromkeys(members, 0)  # member -> version it holds
        self.last: dict[int, int] = {}  # member -> when it was last sent

    def change(self, sender: int, value: float, now: int) -> list[tuple[int, int, float]]:
        self.version += 1
        self.value = value
        self.held[sender] = self.version
        return self.run(now)

    def run(self, now: int) -> list[tuple[int, int, float]]:
        sent = []
        for m, held in self.held.items():
            last = self.last.get(m)
            if held < self.version and (last is None or now - last >= INTERVAL):
                self.held[m] = self.version
                self.last[m] = now
                sent.append((now, m, self.value))
        return sorted(sent)

    def next_due(self) -> int | None:
        owed = [self.last[m] + INTERVAL for m, h in self.held.items() if h < self.version]
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
    exact = True
    for _ in range(400):
        now += rng.choice([0, 1, 50, 900, INTERVAL // 3, INTERVAL - 1, INTERVAL, 40_000])
        # Trailing edges due before this event, at their own microsecond.
        while (due := rule.next_due()) is not None and due <= now:
            want += rule.run(due)
            assert paced.clock.next_us is not None and paced.clock.next_us <= due
            while paced.clock.next_us is not None and paced.clock.next_us <= due:
                got += paced.flush(paced.clock.next_us)
        if exact:  # (a member who leaves may have been the one due: then it is early)
            assert paced.line.due_us == rule.next_due()
        exact = True
        roll = rng.random()
        if roll < 0.08:
            rule.held[next_member] = rule.version  # joined: sent the room's state
            paced.line.add(next_member)
            members.append(next_member)
            next_member += 1
        elif roll < 0.12 and len(members) > 2:
            gone = members.pop(rng.randrange(len(members)))
            del rule.held[gone]
            rule.last.pop(gone, None)
            paced.line.discard(gone)
            exact = False
        else:
            sender = rng.choice(members)
            value = round(rng.random(), 6)
            want += rule.change(sender, value, now)
            got += paced.change(sender, value, now)
        assert got == want
    assert len(got) > 100


def test_one_phone_at_the_rate_is_echoed_at_once_and_a_burst_costs_two_sends() -> None:
    members = list(range(100))
    paced = Paced(members)
    now = 0
    for i in range(10):  # one phone at exactly the rate: each change out at once
        assert len(paced.change(0, i, now)) == 99
        now += INTERVAL
    for i in range(1000):  # then a burst inside one interval: coalesced
        sent = paced.change(i % 100, i / 1000, now + i)
        if i == 0:
            assert len(sent) == 99
        elif i == 1:
            assert sent == [(now + 1, 0, 0.001)]  # 0 was never sent gain: at once
        else:
            assert sent == []
    assert paced.clock.next_us == now + INTERVAL
    trailing = paced.flush(now + INTERVAL)
    assert {m for _, m, _ in trailing} == set(members) - {0, 99}  # 99 sent the newest
    assert {v for _, _, v in trailing} == {0.999}
    assert paced.clock.next_us == now + 1 + INTERVAL
    assert paced.flush(now + 1 + INTERVAL) == [(now + 1 + INTERVAL, 0, 0.999)]
    assert paced.clock.next_us is None


def test_a_burst_from_a_whole_room_sends_each_member_at_most_twice_an_interval() -> None:
    """A hundred phones all moving the slider, 6,000 changes a second: every member is
    sent at most one update per interval plus the first, and ends on the newest."""
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
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        assert min(gaps) >= INTERVAL, m
        assert len(times) >= now // INTERVAL * 0.8  # and kept up with the room
    while paced.clock.next_us is not None:
        deliver(paced.flush(paced.clock.next_us))
    assert paced.line.due_us is None
    assert set(holds.values()) == {value}  # everyone ends on the newest


def test_a_host_value_owes_nobody_anything() -> None:
    paced = Paced([1, 2, 3])
    paced.change(1, 0.1, 0)
    paced.change(2, 0.2, 10)  # 1 never sent: at once; 3 waits
    assert paced.line.due_us == INTERVAL
    paced.line.set_all(0.9)  # the host sent 0.9 to everyone itself
    assert paced.line.due_us is None
    assert paced.flush(INTERVAL) == []
    # 2 was sent 0.1 at 0: due; 1 was sent 0.2 at 10: waits for the rest of its interval.
    assert paced.change(3, 0.5, INTERVAL + 1) == [(INTERVAL + 1, 2, 0.5)]
    assert paced.line.due_us == 10 + INTERVAL


def test_a_line_of_a_gone_room_is_never_due() -> None:
    paced = Paced([1, 2])
    paced.change(1, 0.1, 0)
    paced.change(1, 0.2, 1)
    assert paced.clock.next_us == INTERVAL
    paced.line.live = False
    assert paced.flush(INTERVAL) == [] and not paced.clock
