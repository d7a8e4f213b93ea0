"""host_memory: when and how an entry point re-executes itself with glibc's huge-page tunable."""

import os
import subprocess
import sys

from simvlm_jax.cli import host_memory


def test_mode_is_read_from_the_bracketed_word(tmp_path):
    path = tmp_path / "enabled"
    path.write_text("always [madvise] never\n")
    assert host_memory.transparent_huge_page_mode(str(path)) == "madvise"
    path.write_text("[always] madvise never\n")
    assert host_memory.transparent_huge_page_mode(str(path)) == "always"
    assert host_memory.transparent_huge_page_mode(str(tmp_path / "missing")) is None


RETAIN = ":".join(f"{k}={v}" for k, v in host_memory.RETAIN_TUNABLES.items())


def test_env_adds_the_tunables_only_where_they_help():
    env = host_memory.huge_page_env({"A": "1"}, "madvise", glibc_ok=True)
    assert env == {"A": "1", "GLIBC_TUNABLES": RETAIN + ":glibc.malloc.hugetlb=1"}
    assert RETAIN == "glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=1099511627776"
    # Other tunables are kept; one already named keeps its value (also the opt-out, e.g. hugetlb=0).
    env = host_memory.huge_page_env({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, "madvise", True)
    assert env["GLIBC_TUNABLES"] == (
        "glibc.malloc.arena_max=2:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=1099511627776"
        ":glibc.malloc.hugetlb=1"
    )
    env = host_memory.huge_page_env({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, "madvise", True)
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=0:" + RETAIN
    # THP always / never / unknown: the heap is still kept, no huge-page tunable.
    for mode in ("always", "never", None):
        assert host_memory.huge_page_env({}, mode, True) == {"GLIBC_TUNABLES": RETAIN}
    # All already named, or an old or no glibc: no re-exec.
    assert host_memory.huge_page_env({"GLIBC_TUNABLES": RETAIN + ":glibc.malloc.hugetlb=0"}, "madvise", True) is None
    assert host_memory.huge_page_env({}, "madvise", glibc_ok=False) is None


def test_in_use_reads_the_value(monkeypatch):
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1")
    assert host_memory.huge_pages_in_use()
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.hugetlb=0")
    assert not host_memory.huge_pages_in_use()
    monkeypatch.delenv("GLIBC_TUNABLES")
    assert not host_memory.huge_pages_in_use()


def test_reexec_keeps_the_command_line_and_runs_once():
    """A real child process: it re-executes itself (where this machine supports it) with the same
    arguments, and the second start does not re-execute again."""
    code = (
        "import os, sys; from simvlm_jax.cli import host_memory; "
        "print('start', flush=True); host_memory.reexec_with_huge_pages(); "
        "print(sys.argv[1:], host_memory.huge_pages_in_use())"
    )
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    out = subprocess.run(
        [sys.executable, "-c", code, "x", "--y=2"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    ).stdout
    new_env = host_memory.huge_page_env(
        env, host_memory.transparent_huge_page_mode(), host_memory.glibc_supports_tunables()
    )
    expected = new_env is not None and sys.platform == "linux"
    huge = expected and "glibc.malloc.hugetlb=1" in new_env["GLIBC_TUNABLES"]
    assert out.count("start") == (2 if expected else 1)
    assert out.strip().splitlines()[-1] == f"['x', '--y=2'] {huge}"
