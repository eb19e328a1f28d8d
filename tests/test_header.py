"""The header for every audio host: C11 and C++17/20/23, gcc and clang, any include
order; a C++17 host in another process against a ring filled from Python; the README's
C and C++ snippets compiled exactly as written."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import bbx_net
from bbx_net import SharedSegment

from conftest import C_DIR, TIMEOUT_SCALE

ROOT = Path(__file__).parent.parent
WARN = ["-Wall", "-Wextra", "-Werror", "-pedantic"]

C_COMPILERS = ["gcc", "clang"]
CXX_COMPILERS = ["g++", "clang++"]
C_STANDARDS = ["c11", "c17", "gnu11"]
CXX_STANDARDS = ["c++17", "c++20", "c++23"]
#: What the build puts before the header: nothing, stdio (the case that broke strict
#: C11), time.h, or feature-test macros of its own.
ORDERS = {
    "header-first": [],
    "stdio-first": ["-include", "stdio.h"],
    "time-and-math-first": ["-include", "time.h", "-include", "math.h"],
    "posix-2008": ["-D_POSIX_C_SOURCE=200809L", "-include", "stdio.h"],
    "gnu-source": ["-D_GNU_SOURCE"],
}


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is needed for the header matrix (.ci/run installs it)"
    return path


def std_flag(compiler: str, std: str) -> str:
    """clang 14 (Debian 12) knows C++23 as c++2b."""
    if std == "c++23" and "clang" in compiler:
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True)
        match = re.search(r"version (\d+)", version.stdout)
        if match and int(match.group(1)) < 17:
            return "-std=c++2b"
    return f"-std={std}"


def build(compiler: str, std: str, source: Path, out: Path, *extra: str) -> Path:
    lang = ["-x", "c++"] if "++" in compiler else ["-x", "c"]
    cmd = [
        tool(compiler),
        std_flag(compiler, std),
        *WARN,
        "-O1",
        "-I",
        bbx_net.get_include(),
        *extra,
        *lang,
        str(source),
        "-o",
        str(out),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stderr}"
    return out


MATRIX = [(cc, std) for cc in C_COMPILERS for std in C_STANDARDS] + [
    (cc, std) for cc in CXX_COMPILERS for std in CXX_STANDARDS
]


@pytest.mark.parametrize(("compiler", "std"), MATRIX)
def test_header_compiles_and_runs_in_every_include_order(
    compiler: str, std: str, tmp_path: Path
) -> None:
    layouts = set()
    for order, flags in ORDERS.items():
        exe = build(compiler, std, C_DIR / "include_order.c", tmp_path / order, *flags)
        done = subprocess.run([str(exe)], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0 and done.stdout.startswith("ok "), (order, done)
        layouts.add(tuple(done.stdout.split()[2:]))  # offsetof(read), sizeof(bbx_ring)
    assert layouts == {("192", "320")}


@pytest.mark.parametrize(
    ("compiler", "std"),
    [("gcc", "gnu11"), ("clang", "gnu11"), ("g++", "c++17"), ("clang++", "c++20")],
)
def test_header_defines_no_feature_test_macro(compiler: str, std: str, tmp_path: Path) -> None:
    """M_PI and usleep stay visible after the header (the old header hid them)."""
    exe = build(compiler, std, C_DIR / "feature_macros.c", tmp_path / "fm")
    done = subprocess.run([str(exe)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and done.stdout.startswith("3.14159"), done


def test_c_and_cxx_agree_on_every_offset(tmp_path: Path) -> None:
    """The same layout printer, built as C11 and as C++17, prints the same offsets."""
    outputs = []
    for compiler, std in (("gcc", "c11"), ("g++", "c++17"), ("clang++", "c++20")):
        exe = build(compiler, std, C_DIR / "include_order.c", tmp_path / compiler.replace("+", "x"))
        outputs.append(
            subprocess.run([str(exe)], capture_output=True, text=True).stdout.split()[2:]
        )
    assert outputs[0] == outputs[1] == outputs[2] == ["192", "320"]


@pytest.mark.parametrize(
    ("compiler", "std"), [("g++", "c++17"), ("clang++", "c++17"), ("gcc", "c11")]
)
def test_a_cxx17_host_in_another_process_drains_a_ring_filled_from_python(
    compiler: str, std: str, tmp_path: Path
) -> None:
    """Python fills a shared ring; a C++17 (and a C11) program attaches by name, drains
    every message in order with drain_block and writes visualization frames back."""
    exe = build(compiler, std, C_DIR / "shm_host.c", tmp_path / "host")
    name = f"/bbx-net-{os.getpid()}-host"
    total = 200_000
    segment = SharedSegment.create(name, 1024, viz_capacity=16, viz_floats=8)
    try:
        host = subprocess.Popen(
            [str(exe), name, str(total), "20"], stdout=subprocess.PIPE, text=True
        )
        producer = segment.producer()
        seq = 0
        while seq < total:
            if producer.try_send(0, seq & 0xFFFFFFFF, 1, 0.0, 0.0, 0, seq, seq):
                seq += 1
            elif host.poll() is not None:
                break
        out, _ = host.communicate(timeout=60 * TIMEOUT_SCALE)
    finally:
        segment.unlink()
    assert host.returncode == 0, out
    fields = out.split()
    assert fields[:6] == ["received", str(total), "bad", "0", "pushed", "16"]
    assert int(fields[7]) == segment.clock_origin_ns
    viz = segment.viz()
    assert viz is not None
    frames = [viz[1].pop() for _ in range(17)]
    assert frames[16] is None
    for f, frame in enumerate(frames[:16]):
        assert frame == (f % 3, f, [float(f * 10 + i) for i in range(8)])
    assert viz[1].dropped == 4


def readme_blocks(lang: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(rf"^```{re.escape(lang)}\n(.*?)^```", text, re.S | re.M)


@pytest.mark.parametrize(
    ("lang", "compiler", "std"),
    [
        ("c", "gcc", "c11"),
        ("c", "clang", "c11"),
        ("cpp", "g++", "c++17"),
        ("cpp", "clang++", "c++17"),
    ],
)
def test_readme_snippets_compile_exactly_as_written(
    lang: str, compiler: str, std: str, tmp_path: Path
) -> None:
    blocks = readme_blocks(lang)
    assert blocks, f"README.md has no ```{lang} block"
    for i, block in enumerate(blocks):
        source = tmp_path / f"snippet{i}.{'c' if lang == 'c' else 'cpp'}"
        source.write_text(block)
        build(compiler, std, source, tmp_path / f"snippet{i}.o", "-c")


def test_viz_frames_from_python_reach_the_reader_in_order() -> None:
    writer, reader = bbx_net.viz_buffer(4, 3)
    for i in range(6):
        writer.try_push(i, np.array([i, i + 1], np.float32), 100 + i)
    assert (writer.pushed, writer.dropped, len(reader)) == (4, 2, 4)
    assert reader.pop() == (0, 100, [0.0, 1.0])
    assert reader.newest() == {1: (101, [1.0, 2.0]), 2: (102, [2.0, 3.0]), 3: (103, [3.0, 4.0])}
    assert reader.pop() is None
    with pytest.raises(ValueError):
        writer.try_push(0, np.zeros(4, np.float32))
    with pytest.raises(TypeError):
        writer.try_push(0, np.zeros(2, np.float64))
    with pytest.raises(ValueError):
        bbx_net.viz_buffer(0, 3)
    with pytest.raises(ValueError):
        bbx_net.viz_buffer(4, 5000)
