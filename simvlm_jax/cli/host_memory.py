"""Back large host allocations with transparent huge pages (Linux, glibc): one re-exec at start-up.

XLA:CPU allocates the temporaries of every executable call afresh, and glibc serves such large
requests with new anonymous mappings, so each train step first page-faults its whole working set in
4 KiB pages: on the 2-core benchmark machine 274,000 faults and 0.9 s of kernel time per step of the
small benchmark model (3.8 s). glibc's `glibc.malloc.hugetlb=1` tunable makes malloc ask for
transparent huge pages (2 MiB) on those mappings: 1,200 faults, 3.0 s per step. Where the kernel's
THP mode is `always` this happens without help, and `never` refuses it, so only `madvise` needs it.

glibc reads tunables once, when the process starts, so the command-line entry points call
`reexec_with_huge_pages()` first and the process replaces itself with the same command plus the
tunable. A GLIBC_TUNABLES that already names the tunable is left alone, which is also how to opt
out: GLIBC_TUNABLES=glibc.malloc.hugetlb=0. Library code never calls this.
"""

from __future__ import annotations

import os
import platform
import sys

TUNABLE = "glibc.malloc.hugetlb"
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


def _glibc_supports_hugetlb() -> bool:
    name, version = platform.libc_ver()
    if name != "glibc" or not version:
        return False
    major, minor = (int(part) for part in version.split(".")[:2])
    return (major, minor) >= (2, 35)  # the tunable appeared in glibc 2.35


def _tunable_value(tunables: str) -> str | None:
    """The value GLIBC_TUNABLES (name=value:name=value...) gives the huge-page tunable, None if unnamed."""
    for item in tunables.split(":"):
        name, _, value = item.partition("=")
        if name == TUNABLE:
            return value
    return None


def huge_page_env(environ: dict[str, str], thp_mode: str | None, glibc_ok: bool) -> dict[str, str] | None:
    """The environment to re-execute with, or None when nothing would change."""
    tunables = environ.get("GLIBC_TUNABLES", "")
    if not glibc_ok or thp_mode != "madvise" or _tunable_value(tunables) is not None:
        return None
    return {**environ, "GLIBC_TUNABLES": ":".join(t for t in (tunables, f"{TUNABLE}=1") if t)}


def reexec_with_huge_pages() -> None:
    """Replace this process with the same command line and the huge-page tunable, when that helps.

    Call it first thing in an entry point's `if __name__ == "__main__":` block (never in a library
    or a test process: the process is replaced)."""
    if sys.platform != "linux":
        return
    env = huge_page_env(dict(os.environ), transparent_huge_page_mode(), _glibc_supports_hugetlb())
    if env is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, env)


def huge_pages_in_use() -> bool:
    """Whether this process started with glibc's huge-page tunable on (recorded by the benchmark)."""
    return _tunable_value(os.environ.get("GLIBC_TUNABLES", "")) not in (None, "", "0")
