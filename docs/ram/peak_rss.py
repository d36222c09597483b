"""Run a command and report each of its processes' peak memory (VmHWM, RssAnon, RssFile).

    python docs/ram/peak_rss.py python train_simple_ddp.py --demo --epochs 1 \
        --max_steps_per_epoch 10 --checkpoint_dir /tmp/demo_ram

Samples /proc every 0.2 s (Linux only): a peak shorter than that can be missed for RssAnon and
RssFile; VmHWM is the kernel's own peak.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat[stat.rfind(")") + 2 :].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    return children


def _tree(root: int) -> list[int]:
    children, found, todo = _children(), [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def main(command: list[str]) -> int:
    process = subprocess.Popen(command)
    peaks: dict[int, dict[str, int]] = {}
    names: dict[int, str] = {}
    while process.poll() is None:
        for pid in _tree(process.pid):
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                names.setdefault(
                    pid, Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")[:80]
                )
            except OSError:
                continue
            record = peaks.setdefault(pid, {"VmHWM": 0, "RssAnon": 0, "RssFile": 0})
            for line in status.splitlines():
                key, _, rest = line.partition(":")
                if key in record:
                    record[key] = max(record[key], int(rest.split()[0]))
        time.sleep(0.2)
    for pid, record in sorted(peaks.items(), key=lambda item: -item[1]["VmHWM"]):
        print(
            f"pid {pid}: peak resident {record['VmHWM'] / 1024:.0f} MiB, private (RssAnon) "
            f"{record['RssAnon'] / 1024:.0f} MiB, file-backed {record['RssFile'] / 1024:.0f} "
            f"MiB  {names.get(pid, '')}"
        )
    return process.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
