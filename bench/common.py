"""What every benchmark shares: the machine description, result tables, JSON output, child-process RSS."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def machine() -> dict:
    """Enough to tell two benchmark runs apart: CPU, cores, memory and the load at the time."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": model or platform.processor(),
        "cores": os.cpu_count(),
        "memory_gb": round(mem_gb, 1),
        "loadavg_1_5_15": [round(v, 2) for v in os.getloadavg()],
        "python": platform.python_version(),
    }


@dataclass
class ChildRun:
    seconds: float
    peak_rss_mb: float  # ru_maxrss of the child (largest of it and the children it waited for)
    returncode: int
    stdout: str
    stderr: str
    cpu_seconds: float = 0.0  # user + system CPU of the child and the children it waited for (load-independent)


def run_child(args: list[str], env: dict | None = None) -> ChildRun:
    """Run a command to completion, timing it and reading its own peak RSS from wait4 (RUSAGE_CHILDREN
    would give the largest child of this whole benchmark instead)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return ChildRun(seconds, usage.ru_maxrss / 1024, proc.returncode, out.read(), err.read(),
                        usage.ru_utime + usage.ru_stime)


def python() -> str:
    return sys.executable


def print_table(title: str, rows: list[tuple], headers: tuple) -> None:
    widths = [max(len(str(h)), *(len(_fmt(r[i])) for r in rows)) for i, h in enumerate(headers)]
    print(f"\n{title}")
    print("  ".join(str(h).ljust(w) for h, w in zip(headers, widths)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(_fmt(v).ljust(w) for v, w in zip(row, widths)))


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def emit_json(result: dict, path: Path | None) -> None:
    text = json.dumps(result, indent=2)
    print(text)
    if path is not None:
        Path(path).write_text(text + "\n", encoding="utf-8")
