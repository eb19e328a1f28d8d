"""Proofs about the C API compiled from the shipped header, as a C host would use it."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

import bbx_net
from bbx_net import EVENT_DTYPE, MESSAGE_DTYPE

from conftest import TIMEOUT_SCALE

Build = Callable[..., Path]


def run(cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout * TIMEOUT_SCALE)


def test_header_is_shipped_inside_the_package() -> None:
    """get_include() points at the directory holding bbx_net/bbx_net.h."""
    header = Path(bbx_net.get_include()) / "bbx_net" / "bbx_net.h"
    assert header.is_file()
    assert f"#define BBX_NET_ABI_VERSION {bbx_net.ABI_VERSION}" in header.read_text()


def test_dtypes_match_the_c_compilers_layout(build_c: Build) -> None:
    """MESSAGE_DTYPE / EVENT_DTYPE itemsize and every offset equal sizeof/offsetof in C."""
    out = run([str(build_c("layout.c"))]).stdout
    c = dict(line.rsplit(" ", 1) for line in out.splitlines())
    assert int(c["sizeof.bbx_message"]) == MESSAGE_DTYPE.itemsize == 48
    assert int(c["sizeof.bbx_event"]) == EVENT_DTYPE.itemsize == 56
    for name in MESSAGE_DTYPE.names:
        assert int(c[f"bbx_message.{name}"]) == MESSAGE_DTYPE.fields[name][1], name
        assert EVENT_DTYPE.fields[name][1] == MESSAGE_DTYPE.fields[name][1], name
    assert int(c["bbx_event.sample_offset"]) == EVENT_DTYPE.fields["sample_offset"][1]
    assert int(c["bbx_event.reserved"]) == EVENT_DTYPE.fields["reserved"][1]
    assert int(c["hash.gain"]) == 0x1B5426FE


def test_extension_was_compiled_with_the_same_layout() -> None:
    """The Cython extension sees the same sizes and offsets as numpy."""
    layout = bbx_net._ring._c_layout()
    assert layout["message_size"] == MESSAGE_DTYPE.itemsize
    assert layout["event_size"] == EVENT_DTYPE.itemsize
    assert layout["sample_offset"] == EVENT_DTYPE.fields["sample_offset"][1]
    for name, offset in layout["message"].items():
        assert MESSAGE_DTYPE.fields[name][1] == offset, name


def _heap_allocs(program: Path, iterations: int) -> int:
    valgrind = shutil.which("valgrind")
    assert valgrind, "valgrind is required for the allocation proof (.ci/run installs it)"
    done = run([valgrind, "--error-exitcode=3", str(program), str(iterations)], timeout=300)
    assert done.returncode == 0, done.stderr
    found = re.search(r"total heap usage: ([\d,]+) allocs", done.stderr)
    assert found, done.stderr
    return int(found.group(1).replace(",", ""))


def test_consumer_path_allocates_nothing(build_c: Build) -> None:
    """push/pop/drain/drain_block/clock for 5,000 iterations allocate no more than 1."""
    probe = build_c("alloc_probe.c")
    once = _heap_allocs(probe, 1)
    many = _heap_allocs(probe, 5_000)
    print(f"heap allocations: {once} for 1 iteration, {many} for 5,000")
    assert many == once


def test_allocation_check_catches_an_allocating_loop(build_c: Build) -> None:
    """The same check sees a loop that allocates (the proof above can fail)."""
    probe = build_c("alloc_probe.c", "-DBBX_PROBE_ALLOCATE", name="alloc_probe_bad")
    assert _heap_allocs(probe, 1_000) - _heap_allocs(probe, 1) == 999


@pytest.mark.parametrize("capacity", [1, 2, 3, 7, 64])
def test_c_threads_deliver_exactly_once_in_order(build_c: Build, capacity: int) -> None:
    """A C producer thread and a C consumer thread pass 2,000,000 sequence numbers."""
    program = build_c("spsc_threads.c")
    done = run([str(program), str(capacity), "2000000"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "received 2000000 errors 0" in done.stdout


@pytest.mark.parametrize("mode", [[], ["block"]])
@pytest.mark.parametrize("capacity", [1, 3, 64])
def test_thread_sanitizer_finds_no_race(build_c: Build, capacity: int, mode: list[str]) -> None:
    """Under ThreadSanitizer, the ring's acquire/release protocol shows no data race."""
    program = build_c("spsc_threads.c", "-fsanitize=thread", name=f"tsan_{capacity}")
    done = run([str(program), str(capacity), "100000", *mode])
    assert "WARNING: ThreadSanitizer" not in done.stderr, done.stderr
    assert done.returncode == 0, done.stdout + done.stderr
    assert "received 100000 errors 0" in done.stdout
