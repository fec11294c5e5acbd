"""What a group of processes holds in memory, read from /proc (Linux): proportional set size
(Pss: private pages plus each shared page divided by the processes sharing it), so a server's
forked workers are not counted twice for the pages they share. Pure reads, no Django."""

from __future__ import annotations

from pathlib import Path

PROC = Path("/proc")


def _rollup_field(pid: int, name: str, proc: Path = PROC) -> int:
    for line in (proc / str(pid) / "smaps_rollup").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return int(line.split()[1])
    raise ValueError(f"no {name} in /proc/{pid}/smaps_rollup")


def pss_kb(pid: int, proc: Path = PROC) -> int:
    """The process's Pss in KB (``Pss:`` of /proc/<pid>/smaps_rollup)."""
    return _rollup_field(pid, "Pss", proc)


def rss_kb(pid: int, proc: Path = PROC) -> int:
    """The process's resident set in KB (``Rss:`` of /proc/<pid>/smaps_rollup)."""
    return _rollup_field(pid, "Rss", proc)


def session_pids(sid: int, proc: Path = PROC) -> list[int]:
    """Every live process of session ``sid``: a server started with start_new_session=True and
    every worker it forks (field 6 of /proc/<pid>/stat, counted after the command's ')')."""
    pids = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(entry.name))
    return sorted(pids)


def session_memory_kb(sid: int, proc: Path = PROC) -> dict[str, int]:
    """Summed ``pss`` and ``rss`` (KB) of every process of session ``sid``, and ``processes``."""
    pss = rss = n = 0
    for pid in session_pids(sid, proc):
        try:
            pss += pss_kb(pid, proc)
            rss += rss_kb(pid, proc)
        except (OSError, ValueError):  # exited between the listing and the read
            continue
        n += 1
    return {"pss": pss, "rss": rss, "processes": n}


def session_cpu_ticks(sid: int, proc: Path = PROC) -> int:
    """CPU time (clock ticks, user + system) used so far by the live processes of session
    ``sid``: fields 14 and 15 of /proc/<pid>/stat."""
    total = 0
    for pid in session_pids(sid, proc):
        try:
            fields = (proc / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total
