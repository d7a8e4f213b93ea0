"""Keep XLA:CPU's step temporaries in memory the process already holds (Linux, glibc): one re-exec at start-up.

XLA:CPU allocates the temporaries of every executable call afresh: for the small benchmark model one
1 GB block per train step, which glibc serves with a new anonymous mapping (mmap) and unmaps again when the
step ends. Each step therefore page-faults its whole working set back in, and after a few idle seconds the
kernel (and, on a VM, the host's free-page reporting) has taken those pages away, so the first step after a
pause also pays for getting them back. Measured on the 2-core benchmark machine (docs/performance.md):

- plain glibc: 258,000 faults (4 KiB) per step of the small model;
- `glibc.malloc.hugetlb=1` (transparent huge pages on those mappings, where the kernel's THP mode is
  `madvise`): ~1,000 faults per step, but a step after a 5 s pause took 2.6-2.8 s instead of 2.1 s
  (kernel time 1.0 s instead of 0.1 s);
- plus the heap kept (`RETAIN_TUNABLES`: one malloc arena, no mmap for large blocks, no trimming): no
  faults at all once the heap has grown, and 2.04-2.09 s after a 5 s pause, as without one.

The worker thread that allocates the block would otherwise get it from its own arena, whose size limit
sends large blocks to mmap whatever `mmap_max` says; hence one arena. The heap then holds the run's peak
until the process ends, which is what a training process needs anyway.

glibc reads tunables once, when the process starts, so the command-line entry points call
`reexec_with_huge_pages()` first (on the CPU backend only: `startup.begin`) and the process replaces
itself with the same command plus the tunables. A tunable that GLIBC_TUNABLES already names is left as
it is, which is also how to opt out (e.g. GLIBC_TUNABLES=glibc.malloc.hugetlb=0:glibc.malloc.arena_max=8).
Library code never calls this.
"""

from __future__ import annotations

import os
import platform
import sys

TUNABLE = "glibc.malloc.hugetlb"
# Keep freed memory in the heap (see the module docstring); added wherever glibc is new enough.
RETAIN_TUNABLES = {
    "glibc.malloc.arena_max": "1",
    "glibc.malloc.mmap_max": "0",
    "glibc.malloc.trim_threshold": str(1 << 40),
}
_THP_MODE_FILE = "/sys/kernel/mm/transparent_hugepage/enabled"


def transparent_huge_page_mode(path: str = _THP_MODE_FILE) -> str | None:
    """The kernel's THP mode ('always', 'madvise' or 'never'), None where it cannot be read."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    start, end = text.find("["), text.find("]")
    return text[start + 1 : end] if 0 <= start < end else None


def glibc_supports_tunables() -> bool:
    name, version = platform.libc_ver()
    if name != "glibc" or not version:
        return False
    major, minor = (int(part) for part in version.split(".")[:2])
    return (major, minor) >= (2, 35)  # the tunable appeared in glibc 2.35


def _tunable_value(tunables: str, name: str = TUNABLE) -> str | None:
    """The value GLIBC_TUNABLES (name=value:name=value...) gives the tunable `name`, None if unnamed."""
    for item in tunables.split(":"):
        key, _, value = item.partition("=")
        if key == name:
            return value
    return None


def huge_page_env(environ: dict[str, str], thp_mode: str | None, glibc_ok: bool) -> dict[str, str] | None:
    """The environment to re-execute with, or None when nothing would change: the heap-keeping tunables,
    and the huge-page one where the THP mode is `madvise`; each only if GLIBC_TUNABLES does not name it."""
    tunables = environ.get("GLIBC_TUNABLES", "")
    if not glibc_ok:
        return None
    wanted = dict(RETAIN_TUNABLES)
    if thp_mode == "madvise":
        wanted[TUNABLE] = "1"
    added = [f"{name}={value}" for name, value in wanted.items() if _tunable_value(tunables, name) is None]
    if not added:
        return None
    return {**environ, "GLIBC_TUNABLES": ":".join(t for t in (tunables, *added) if t)}


def reexec_with_huge_pages() -> None:
    """Replace this process with the same command line and the huge-page tunable, when that helps.

    Call it first thing in an entry point's `if __name__ == "__main__":` block (never in a library
    or a test process: the process is replaced)."""
    if sys.platform != "linux":
        return
    env = huge_page_env(dict(os.environ), transparent_huge_page_mode(), glibc_supports_tunables())
    if env is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, env)


def huge_pages_in_use() -> bool:
    """Whether this process started with glibc's huge-page tunable on (recorded by the benchmark)."""
    return _tunable_value(os.environ.get("GLIBC_TUNABLES", "")) not in (None, "", "0")
