"""How a CPU process gets and returns memory: mimalloc preloaded into the commands that train and sample, and the
guard that makes glibc hand freed memory back once a process holds half the free memory."""

import logging
import os
import subprocess
import sys

import pytest

from core import allocator
from core.memory import available_memory

needs_mimalloc = pytest.mark.skipif(allocator.mimalloc_library() is None, reason="mimalloc is packaged for Linux")


@needs_mimalloc
def test_mimalloc_is_preloaded_once_and_can_be_declined():
    library = allocator.mimalloc_library()
    env = allocator.with_mimalloc({"LD_PRELOAD": "/other/lib.so"})
    assert env["LD_PRELOAD"] == f"{library}:/other/lib.so"  # first, the other preload kept
    assert env["MIMALLOC_ARENA_EAGER_COMMIT"] == "0"  # memory committed as used
    assert allocator.with_mimalloc({"MIMALLOC_ARENA_EAGER_COMMIT": "1"})["MIMALLOC_ARENA_EAGER_COMMIT"] == "1"  # yours
    assert allocator.with_mimalloc(env) is None  # already there
    assert allocator.with_mimalloc({allocator.ALLOCATOR_ENV: "glibc"}) is None
    probe = [sys.executable, "-c", "from core.allocator import mimalloc_loaded; print(mimalloc_loaded())"]
    on = subprocess.run(probe, env=allocator.with_mimalloc(dict(os.environ)), capture_output=True, text=True)
    off = subprocess.run(probe, env=dict(os.environ), capture_output=True, text=True)
    assert (on.stdout.strip(), off.stdout.strip()) == ("True", "False")


@needs_mimalloc
@pytest.mark.parametrize("choice", ["", "glibc"])
def test_a_training_command_reruns_itself_on_mimalloc(tmp_path, choice):
    env = dict(os.environ) | {allocator.ALLOCATOR_ENV: choice}
    env.pop("LD_PRELOAD", None)
    missing = tmp_path / "missing.jsonl"
    done = subprocess.run([sys.executable, "-m", "orchestration.cli", "-v", "train-rm", "--pairs", str(missing)],
                          env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 2 and str(missing) in done.stderr  # the same command ran, to its clear error
    assert f"allocator: {choice or 'mimalloc'}" in done.stderr


def test_the_guard_hands_freed_memory_back_once_a_process_passes_its_budget(caplog):
    roomy = allocator.FreedMemoryGuard(budget=allocator.resident_now() + 2**40, interval=0.01)
    with caplog.at_level(logging.WARNING, logger="core.allocator"):
        tight = allocator.FreedMemoryGuard(budget=0, interval=0.01)
        glibc = allocator._glibc() is not None
        assert tight.handed_back.wait(timeout=60) == glibc  # glibc's threshold now fixed
    roomy.stop()
    assert not roomy.handed_back.is_set()  # under its budget: glibc's heaps stay as they are
    passed = [record for record in caplog.records if "over its budget of 0.00 GiB" in record.getMessage()]
    assert len(passed) == (1 if glibc else 0)  # once: the guard's thread then ends


def test_a_set_threshold_replaces_the_guard(monkeypatch):
    monkeypatch.setattr(allocator, "_guard", None)
    monkeypatch.setattr(allocator, "mimalloc_loaded", lambda: False)  # as in a process started without it
    monkeypatch.setenv(allocator.MMAP_THRESHOLD_ENV, "0")
    allocator.manage_freed_memory()
    assert allocator._guard is None  # glibc as it is, by choice
    monkeypatch.delenv(allocator.MMAP_THRESHOLD_ENV)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    allocator.manage_freed_memory()
    try:
        free = available_memory("cpu") + allocator.resident_now()
        assert 0.8 * free / 4 < allocator._guard.budget < 1.2 * free / 4  # half, shared by the 2 processes
    finally:
        allocator._guard.stop()
