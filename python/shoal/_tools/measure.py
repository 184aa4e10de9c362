"""Per-process and machine-wide memory figures, read from /proc (Linux only).

Every benchmark and the demo report memory with these readers. They use the
standard library only, so they work in any child process without extra
dependencies.

Per process, from ``/proc/<pid>/smaps_rollup`` (see ``proc_mem``):

``rss``
    Resident set size: every page the process has mapped and resident,
    counted in full even when other processes map the same page.
``pss``
    Proportional set size: each resident page divided by the number of
    processes that map it. Summing PSS over processes gives the memory they
    really use together, without double counting.
``uss``
    Unique set size, ``Private_Clean + Private_Dirty``: pages mapped by this
    process alone, i.e. what would be freed if it exited.
``anonymous``
    Private anonymous memory (heap, stacks, private ``mmap``): the growth of
    this figure is the "private copy" a process made. Shared memory (shmem,
    memfd, ``MAP_SHARED`` anonymous mappings) is *not* counted here.
``pss_anon``, ``pss_shmem``
    The parts of PSS that are anonymous and shared memory (shmem/memfd/tmpfs).
``shared``
    ``Shared_Clean + Shared_Dirty``: resident pages also mapped by at least one
    other process.

Machine-wide, from ``/proc/meminfo``: ``machine_shmem`` (all shmem, tmpfs and
memfd pages in use, whoever maps them) and ``mem_available``.

Caveat: "private" and "shared" describe how many processes map a page *now*,
not how it was allocated. USS counts a shared page as private once only one
process maps it: after every other process has unmapped a shared segment (or
exited), the survivor's USS grows by the whole segment although nothing was
copied. Compare ``anonymous`` (real private copies) and ``pss_shmem`` (shared
memory) rather than reading USS alone.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass

__all__ = [
    "MIB",
    "SHMEM_SLACK",
    "ProcMem",
    "diff",
    "fmt_bytes",
    "fmt_signed",
    "machine_shmem",
    "mem_available",
    "mem_total",
    "private_anonymous",
    "proc_mem",
    "settled_shmem",
    "shmem_growth",
    "wait_shmem_back",
]

_KIB = 1024
MIB = 1 << 20
SHMEM_SLACK = 4 * MIB
"""How far above a baseline the machine's Shmem may read and still count as "back" or as
"one copy": other processes' pages come and go in it too."""


@dataclass(frozen=True)
class ProcMem:
    """Memory of one process, in bytes; see the module docstring for meanings."""

    rss: int
    pss: int
    uss: int
    anonymous: int
    pss_anon: int
    pss_shmem: int
    shared: int


def _read_kb_fields(path: str) -> dict[str, int]:
    """Parse ``Key:   123 kB`` lines of a /proc file into bytes per key."""
    with open(path, encoding="ascii") as f:
        text = f.read()
    fields: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        parts = rest.split()
        if not sep or not parts or not parts[0].isdigit():
            continue  # the rollup's address-range header line, or a non-numeric field
        scale = _KIB if len(parts) > 1 and parts[1] == "kB" else 1
        fields[key.strip()] = int(parts[0]) * scale
    return fields


def proc_mem(pid: int | None = None) -> ProcMem:
    """Read the memory figures of process ``pid`` (default: this process).

    Raises ``ProcessLookupError`` if the process does not exist, has exited
    (including a zombie not yet reaped) or has no address space (a kernel
    thread). ``PermissionError`` propagates for another user's process.
    Fields missing on older kernels (``Pss_Anon``, ``Pss_Shmem`` before 5.7)
    read as 0.
    """
    target = os.getpid() if pid is None else pid
    path = f"/proc/{target}/smaps_rollup"
    try:
        f = _read_kb_fields(path)
    except FileNotFoundError:
        raise ProcessLookupError(f"no process with pid {target}") from None
    if "Rss" not in f:
        raise ProcessLookupError(f"process {target} has no address space")
    return ProcMem(
        rss=f["Rss"],
        pss=f.get("Pss", 0),
        uss=f.get("Private_Clean", 0) + f.get("Private_Dirty", 0),
        anonymous=f.get("Anonymous", 0),
        pss_anon=f.get("Pss_Anon", 0),
        pss_shmem=f.get("Pss_Shmem", 0),
        shared=f.get("Shared_Clean", 0) + f.get("Shared_Dirty", 0),
    )


def _meminfo(key: str) -> int:
    fields = _read_kb_fields("/proc/meminfo")
    try:
        return fields[key]
    except KeyError:
        raise OSError(f"/proc/meminfo has no {key!r} line") from None


def private_anonymous(pid: int | None = None) -> int:
    """Bytes of anonymous memory that process ``pid`` (default: this one) alone maps: new
    private allocations and copy-on-write copies of a parent's pages, but not pages still
    shared with the parent and not shared memory (memfd, shmem).

    From ``/proc/PID/smaps``, the sum over mappings of ``min(Anonymous, Private_Dirty)``.
    smaps_rollup cannot tell this: its ``Anonymous`` counts a forked child's inherited pages
    before and after they are copied (so copies do not show), and its ``Private_Dirty`` and
    USS count shared-memory pages that no other process maps at the moment (an image whose
    creator never touched it after building it).
    """
    total = 0
    anon = dirty = 0
    with open(f"/proc/{pid or 'self'}/smaps", encoding="utf-8", errors="replace") as f:
        for line in f:
            key, sep, rest = line.partition(":")
            if not sep or " " in key:  # a mapping's header line ("addr-addr perms ...")
                total += min(anon, dirty)
                anon = dirty = 0
                continue
            if key == "Anonymous":
                anon = int(rest.split()[0]) * _KIB
            elif key == "Private_Dirty":
                dirty = int(rest.split()[0]) * _KIB
    return total + min(anon, dirty)


def machine_shmem() -> int:
    """Bytes of shared memory (shmem, tmpfs, memfd) in use on the machine.

    Machine-wide: other processes change it too, so tests that rely on it must
    not run in parallel with others.
    """
    return _meminfo("Shmem")


def mem_available() -> int:
    """The kernel's estimate of bytes available for new allocations."""
    return _meminfo("MemAvailable")


def mem_total() -> int:
    """Total usable RAM of the machine in bytes."""
    return _meminfo("MemTotal")


def diff(after: ProcMem, before: ProcMem) -> ProcMem:
    """Field-wise ``after - before``; fields of the result may be negative."""
    return ProcMem(
        **{
            field.name: getattr(after, field.name) - getattr(before, field.name)
            for field in dataclasses.fields(ProcMem)
        }
    )


_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def fmt_bytes(n: int) -> str:
    """Format a byte count with a binary unit and three significant digits.

    Examples: ``0 B``, ``1000 B``, ``512 KiB``, ``1.00 GiB``, ``-3.00 MiB``.
    """
    sign = "-" if n < 0 else ""
    value = float(abs(n))
    unit = 0
    while value >= 1024 and unit < len(_UNITS) - 1:
        value /= 1024
        unit += 1
    if unit == 0:
        return f"{sign}{int(value)} B"
    if round(value) >= 1024 and unit < len(_UNITS) - 1:  # 1023.9 KiB is 1.00 MiB
        value /= 1024
        unit += 1
    # Three significant digits: 1.00, 12.0, 512 (rounding decides, so 9.999 -> 10.0).
    decimals = 2 if round(value, 2) < 10 else 1 if round(value, 1) < 100 else 0
    return f"{sign}{value:.{decimals}f} {_UNITS[unit]}"


def fmt_signed(n: int) -> str:
    """``fmt_bytes`` with a sign, for a growth: ``+0 B``, ``+2.00 MiB``, ``-512 KiB``."""
    return ("+" if n >= 0 else "") + fmt_bytes(n)


def settled_shmem(patience: float = 5.0) -> int:
    """The machine's Shmem, read once it has stopped falling (memory that an earlier
    program let go of may still be on its way back to the kernel): a baseline."""
    last = machine_shmem()
    end = time.monotonic() + patience
    while time.monotonic() < end:
        time.sleep(0.05)
        now = machine_shmem()
        if now > last - MIB:
            return now
        last = now
    return last


def shmem_growth(base: int, limit: int | None, patience: float = 3.0) -> tuple[int, int]:
    """The machine's Shmem growth since ``base``, and how many readings it took.

    Shmem is machine-wide: other processes' segments come and go in it too. If the growth
    is over ``limit``, read it again for up to ``patience`` seconds and keep the smallest:
    a copy of ours stays for as long as its holders hold it, a neighbour's passing one
    does not. With no limit (a figure only shown, not checked), one reading.
    """
    growth, readings = machine_shmem() - base, 1
    end = time.monotonic() + patience
    while limit is not None and growth > limit and time.monotonic() < end:
        time.sleep(0.05)
        growth, readings = min(growth, machine_shmem() - base), readings + 1
    return growth, readings


def wait_shmem_back(base: int, slack: int, patience: float = 10.0) -> bool:
    """Wait up to ``patience`` seconds for the machine's Shmem to come back within ``slack``
    of ``base`` (a segment's pages are freed as its last holder lets go, perhaps a broker a
    moment later), so that the next measurement starts from the same baseline. Returns
    whether it came back."""
    end = time.monotonic() + patience
    while machine_shmem() > base + slack:
        if time.monotonic() > end:
            return False
        time.sleep(0.01)
    return True
