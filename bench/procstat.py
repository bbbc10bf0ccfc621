"""Process-tree accounting straight from /proc (no psutil): CPU time, RSS, open fds.

A gateway is a process tree (``fastgw serve`` / the granian main process and its worker
children), so every figure here is summed over the root pid and all its descendants.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode()
    except OSError:
        return None
    # the command name (field 2) may contain spaces and parentheses: split after the last ')'
    rest = raw[raw.rindex(")") + 2 :].split()
    return rest  # rest[0] is field 3 (state)


def ppid_of(pid: int) -> int | None:
    f = _stat_fields(pid)
    return int(f[1]) if f else None


def cpu_ticks(pid: int, with_children: bool = False) -> int:
    """utime+stime (fields 14, 15) in clock ticks; plus cutime+cstime (reaped children) if asked."""
    f = _stat_fields(pid)
    if not f:
        return 0
    t = int(f[11]) + int(f[12])
    if with_children:
        t += int(f[13]) + int(f[14])
    return t


def descendants(root: int) -> list[int]:
    """root and all its live descendants (one scan of /proc)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pp = ppid_of(int(name))
        if pp is not None:
            children.setdefault(pp, []).append(int(name))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        if p in out:
            continue
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def status_kb(pid: int, key: str) -> int:
    """A ``kB`` field of /proc/<pid>/status (VmRSS, VmHWM, ...), 0 if absent."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


@dataclass
class TreeSample:
    pids: list[int]
    rss_kb: int
    hwm_kb: int
    fds: int


def sample_tree(root: int) -> TreeSample:
    pids = descendants(root)
    return TreeSample(
        pids,
        sum(status_kb(p, "VmRSS") for p in pids),
        sum(status_kb(p, "VmHWM") for p in pids),
        sum(fd_count(p) for p in pids),
    )


@dataclass
class TreeMeter:
    """CPU delta and peak RSS of a process tree over one measured run."""

    root: int
    start_ticks: dict[int, int] = field(default_factory=dict)
    peak_rss_kb: int = 0
    samples: int = 0

    def _ticks(self) -> dict[int, int]:
        # the root also gets its reaped children's time, so a worker that exits mid-run still counts
        return {p: cpu_ticks(p, with_children=(p == self.root)) for p in descendants(self.root)}

    def start(self) -> TreeMeter:
        self.start_ticks = self._ticks()
        self.peak_rss_kb = 0
        self.sample()
        return self

    def sample(self) -> TreeSample:
        s = sample_tree(self.root)
        self.peak_rss_kb = max(self.peak_rss_kb, s.rss_kb)
        self.samples += 1
        return s

    def stop(self) -> dict[str, float]:
        """CPU seconds used since start(), peak sampled RSS sum and the VmHWM sum (in KiB)."""
        end = self._ticks()
        s = self.sample()
        ticks = sum(t - self.start_ticks.get(p, 0) for p, t in end.items())
        return {
            "cpu_s": max(0, ticks) / CLK_TCK,
            "peak_rss_kb": self.peak_rss_kb,
            "hwm_kb": s.hwm_kb,
            "rss_kb": s.rss_kb,
            "procs": len(s.pids),
        }
