"""How a CPU process gets memory and gives it back: mimalloc where it is packaged, else glibc's heaps with a guard.

glibc's malloc keeps a step's freed activations in heaps it grows, so a CPU run's peak climbs far past what it
holds; fixing its mmap threshold hands freed memory back, at the price of page faults on every large tensor.
mimalloc (Microsoft's allocator, in the `cmeel-mimalloc` wheel on Linux) does both jobs: it reuses freed memory as
fast and returns what it does not reuse. Measured on the reward model (SmolLM2-135M, LoRA r16, checkpointing, 44
HH-shaped pairs of 256 tokens, one epoch, fresh processes): glibc's heaps 40.8 s and a 4.14 GiB peak; mimalloc
40.4 s and 0.96 GiB. (Before rankings were packed: glibc's heaps 124 s and 7.00 GiB, handing memory back 196 s
and 1.03 GiB.)

`rlhf-studio`'s training and sampling commands (the app's jobs among them) rerun themselves with mimalloc
preloaded (`with_mimalloc`; `RLHF_STUDIO_ALLOCATOR=glibc` keeps glibc). A process without it (the library called
from Python, another platform) keeps glibc's heaps until it holds half the free memory (`FreedMemoryGuard`).
"""

import ctypes
import logging
import os
import sys
import threading
from importlib import metadata

from core.memory import GIB, available_memory

log = logging.getLogger(__name__)

ALLOCATOR_ENV = "RLHF_STUDIO_ALLOCATOR"  # "glibc": no mimalloc for the commands that would preload it
MIMALLOC_FILE = "cmeel.prefix/lib/libmimalloc.so.3"  # inside the cmeel-mimalloc wheel
# Arenas committed as they are used: the reward model, 4 pairs of 256 tokens without checkpointing, peaked at 3.36 GiB
# on mimalloc's defaults and 3.09 GiB with this, at the same speed. (Returning freed memory at once, a purge delay
# of 0, gave 3.04 GiB but took a reward-model epoch from 40 s to 73 s.) A user's own settings win.
MIMALLOC_OPTIONS = {"MIMALLOC_ARENA_EAGER_COMMIT": "0"}
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
MMAP_THRESHOLD_ENV = "RLHF_STUDIO_MMAP_THRESHOLD"
MMAP_THRESHOLD = 128 * 2**10  # glibc's own starting threshold, kept from rising
HAND_BACK_SHARE = 0.5  # of the memory free at a process's start: past it, glibc hands freed memory back


def mimalloc_library() -> str | None:
    """Return the path of the packaged mimalloc library, or None (not Linux, or the wheel is not installed)."""
    if sys.platform != "linux":
        return None
    try:
        path = metadata.distribution("cmeel-mimalloc").locate_file(MIMALLOC_FILE)
    except metadata.PackageNotFoundError:
        return None
    return str(path) if os.path.exists(path) else None


def mimalloc_loaded() -> bool:
    """Return whether this process runs on mimalloc (preloaded: it serves every malloc)."""
    try:
        with open("/proc/self/maps") as maps:
            return any("libmimalloc" in line for line in maps)
    except OSError:
        return False


def with_mimalloc(env: dict) -> dict | None:
    """Return `env` with mimalloc preloaded for a new process, or None where it cannot or should not be: the
    library is missing, `RLHF_STUDIO_ALLOCATOR=glibc`, or `env` already preloads it."""
    library = mimalloc_library()
    preload = env.get("LD_PRELOAD", "")
    if library is None or env.get(ALLOCATOR_ENV, "").lower() == "glibc" or library in preload.split(":"):
        return None
    return MIMALLOC_OPTIONS | dict(env) | {"LD_PRELOAD": ":".join(filter(None, [library, preload]))}


def set_mmap_threshold(threshold: int) -> bool:
    """Fix glibc's mmap (and trim) threshold at `threshold` bytes; return whether it took (Linux with glibc).

    glibc's malloc serves blocks below its mmap threshold (128 KiB at start) from heaps it keeps, and raises that
    threshold (up to 32 MiB) whenever a large block is freed, so a step's freed activations and temporaries stay
    in the process and its peak grows with them. Fixing the threshold at its starting 128 KiB gives every tensor
    of that size or more its own mapping, returned when freed: what a CPU run needs is then what it holds, which
    the estimate counts. Measured on SmolLM2-135M (LoRA): reward model 4 x 128 with checkpointing 1.70 GiB unset
    against 1.12 GiB at a 1 MiB threshold; DPO without checkpointing, 2 pairs x 256, whose shared prompt runs in
    tensors under 1 MiB, 2.76 GiB unset, 2.33 at 1 MiB, 1.77 at 128 KiB. The price is time: each large tensor is
    a fresh mapping whose pages are faulted in (see the README's Memory section), hence `FreedMemoryGuard`.
    """
    libc = _glibc()
    if libc is None or threshold <= 0:
        return False
    libc.mallopt(M_MMAP_THRESHOLD, threshold)
    libc.mallopt(M_TRIM_THRESHOLD, threshold)
    return True


def _glibc():
    if sys.platform != "linux":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # another C library (musl): its allocator keeps no such heaps
        return None


def resident_now() -> int:
    """Return this process's resident memory now, in bytes."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class FreedMemoryGuard:
    """Keep glibc's heaps (fast) while a CPU process stays under a memory budget; past it, hand freed memory back.

    A thread reads the process's resident memory every `interval` seconds (training, evaluation and generation
    alike, and within a step): once it passes the budget, the mmap threshold is fixed (`set_mmap_threshold`), the
    heaps' free pages are returned (`malloc_trim`), and the thread ends. A run that fits easily keeps glibc's
    speed; one that would crowd the machine pays page faults from then on (see the module's numbers) and peaks near
    its estimate.
    """

    def __init__(self, budget: int, interval: float = 0.05):
        self.budget, self.interval = budget, interval
        self.handed_back = threading.Event()
        self._stop = threading.Event()
        threading.Thread(target=self._watch, name="freed-memory-guard", daemon=True).start()

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            resident = resident_now()
            if resident > self.budget:
                self._hand_back(resident)
                return

    def _hand_back(self, resident: int) -> None:
        if not set_mmap_threshold(MMAP_THRESHOLD):
            return
        _glibc().malloc_trim(0)
        log.warning(
            "memory: this process holds %.2f GiB, over its budget of %.2f GiB (half the memory free at its start); "
            "freed memory now goes back to the system, which costs some speed",
            resident / GIB,
            self.budget / GIB,
        )
        self.handed_back.set()  # after the warning: whoever waits on it finds it said

    def stop(self) -> None:
        self._stop.set()


_guard: FreedMemoryGuard | None = None


def manage_freed_memory() -> None:
    """Set up how this CPU process returns freed memory: nothing to do on mimalloc. On glibc,
    `RLHF_STUDIO_MMAP_THRESHOLD` (bytes) fixes the threshold from the start (0: glibc as it is, never handed back);
    unset, one `FreedMemoryGuard` per process, its budget `HAND_BACK_SHARE` of the memory free now (and what the
    process already holds), split between the processes a launcher started on this machine."""
    global _guard
    if mimalloc_loaded():  # it hands freed memory back itself
        return
    setting = os.environ.get(MMAP_THRESHOLD_ENV)
    if setting is not None:
        set_mmap_threshold(int(setting))
    elif _guard is None and _glibc() is not None:
        processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        _guard = FreedMemoryGuard(int(HAND_BACK_SHARE * (available_memory("cpu") + resident_now()) / processes))
