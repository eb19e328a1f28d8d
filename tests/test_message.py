"""Message constants, parameter hashes and node ids."""

from __future__ import annotations

import pytest

from bbx_net import MESSAGE_DTYPE, MessageType, NodeId, PayloadKind, hash_param_name

VECTORS = {
    "": 0x811C9DC5,
    "gain": 0x1B5426FE,
    "freq": 0x8DB3DBF7,
    "note_on": 0x468ED67F,
    "volume": 0x2EE0698F,
    "π": 0xCDA6639A,
}


@pytest.mark.parametrize(("name", "expected"), VECTORS.items())
def test_fnv1a_matches_the_spec_vectors(name: str, expected: int) -> None:
    """hash_param_name gives the spec's FNV-1a values."""
    assert hash_param_name(name) == expected


@pytest.mark.parametrize("bad", [None, b"gain", 5])
def test_hash_refuses_non_str(bad: object) -> None:
    """Only str names are hashed."""
    with pytest.raises(TypeError):
        hash_param_name(bad)  # type: ignore[arg-type]


def test_numbering_matches_the_original() -> None:
    """MessageType and PayloadKind keep the original's numbers."""
    assert [int(t) for t in MessageType] == [0, 1, 2, 3, 4, 5]
    assert MessageType.PING == 4 and MessageType.PONG == 5
    assert (PayloadKind.NONE, PayloadKind.VALUE, PayloadKind.COORDINATES) == (0, 1, 2)
    assert MESSAGE_DTYPE.isalignedstruct


def test_node_id_string_round_trips() -> None:
    """str() is 8-4-4-4-12 lowercase hex and parses back to the same id."""
    node = NodeId(0x0123456789ABCDEF, 0xFEDCBA9876543210)
    assert str(node) == "01234567-89ab-cdef-fedc-ba9876543210"
    assert NodeId.parse(str(node)) == node
    assert NodeId.parse(str(node).upper()) == node
    for _ in range(200):
        fresh = NodeId.generate()
        assert NodeId.parse(str(fresh)) == fresh
        assert str(fresh) == str(fresh).lower() and len(str(fresh)) == 36


def test_generated_ids_avoid_live_ones_and_are_random() -> None:
    """generate() never returns a live id, and 10,000 ids are all distinct."""
    ids = {NodeId.generate() for _ in range(10_000)}
    assert len(ids) == 10_000
    assert len({i.high >> 60 for i in ids}) == 16  # every top nibble seen: not a counter

    class Everything:
        calls = 0

        def __contains__(self, item: object) -> bool:
            self.calls += 1
            return self.calls < 3  # pretend the first two draws are taken

    live = Everything()
    NodeId.generate(live)
    assert live.calls == 3


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "0123456789abcdef0123456789abcdef",
        "01234567-89ab-cdef-fedc-ba987654321",
        "0123456g-89ab-cdef-fedc-ba9876543210",
        "+1234567-89ab-cdef-fedc-ba9876543210",
        "01234567-89ab-cdef-fedc-ba98765432_0",
    ],
)
def test_bad_node_id_strings_raise(bad: str) -> None:
    """Anything but 32 hex digits in 8-4-4-4-12 groups is a ValueError."""
    with pytest.raises(ValueError):
        NodeId.parse(bad)


def test_node_id_halves_are_checked() -> None:
    """Halves must be 64-bit unsigned ints."""
    with pytest.raises(ValueError):
        NodeId(-1, 0)
    with pytest.raises(ValueError):
        NodeId(0, 1 << 64)
