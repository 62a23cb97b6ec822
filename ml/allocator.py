"""glibc's malloc set for training on a CPU: a step's freed buffers stay in the heap for the next step.

A training step allocates and frees the same activations and gradients every step. glibc serves a block
above its mmap threshold (128 KiB at start, raised as such blocks are freed) with fresh pages from the
kernel, and gives the free top of its heap back to the kernel above its trim threshold, so buffers of a few
hundred KiB to a few MiB come back as new pages each step: every page is a fault the kernel must zero-fill.
A pack of 8 width-8 networks on digits (batch 64 each, tensors of about 1 MiB) took 3,000 to 4,600 page
faults a step that way; with both thresholds fixed here, 0 to 131 (tests/unit/test_allocator.py;
benchmarks/bench_ensemble.py reports them, docs/ensemble.md has the images/s).

mallopt is glibc's own interface for this (`man mallopt`), set once per process, which needs no allocator
preloaded before the process starts (jemalloc or tcmalloc through LD_PRELOAD, the other usual remedy).
Elsewhere (musl, macOS, Windows) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform
from functools import lru_cache

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
"""mallopt's parameter numbers (glibc's malloc.h)."""

MMAP_THRESHOLD = 32 * 1024 * 1024
"""Blocks below this come from the heap, not fresh pages: glibc's largest (DEFAULT_MMAP_THRESHOLD_MAX on
64-bit), above any activation of a width-8 pack."""

TRIM_THRESHOLD = 128 * 1024 * 1024
"""Free memory the heap may keep at its top before giving it back to the kernel: a step's worth and more
(64 MiB kept a pack's faults at 14 a step, 1 GiB at 4)."""


@lru_cache(maxsize=1)
def keep_freed_memory() -> bool:
    """Fix glibc's mmap and trim thresholds for this process (once); False where the C library is not glibc."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        done = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
        done = libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and done
    except (OSError, AttributeError) as exc:
        log.debug("mallopt unavailable: %s", exc)
        return False
    return done
