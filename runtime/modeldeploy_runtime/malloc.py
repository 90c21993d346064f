"""glibc malloc settings for a process that allocates and frees megabytes per request.

By default glibc gives freed memory at the top of its heap back to the kernel once more than
128 KB is free there (and its threshold only adapts to blocks that were mmapped). A server that
decodes a 1.6 MB JSON image and runs a model on the same thread frees and re-requests several MB
per request, and each page comes back through a page fault: about 2,000 faults, 2.7 ms, per
MobileNetV2 JSON request, measured. Keeping up to TRIM_THRESHOLD of free heap (and serving blocks
up to MMAP_THRESHOLD from the heap) removes them, at the cost of resident memory not returned
after a burst of large requests.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
TRIM_THRESHOLD = 256 << 20
MMAP_THRESHOLD = 32 << 20  # glibc's maximum on 64-bit
USER_SETTINGS = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")


def keep_freed_memory() -> bool:
    """Apply the settings; False (nothing changed) off glibc or when the environment sets them."""
    if any(name in os.environ for name in USER_SETTINGS):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or another libc: keep its defaults
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    if not ok:
        log.debug("mallopt refused the settings; glibc defaults stay")
    return ok
