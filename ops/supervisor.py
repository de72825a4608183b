"""A process started again whenever it exits: `python ops/supervisor.py --record FILE -- CMD...`.

`ops/stack up` runs the relay under it. The relay is what turns frames into streams and
checkpoints and resumes jobs whose worker died: whatever ends it (a bug, an OOM kill, an
operator's mistake), it must come back, and the command that started it has exited by then.
A supervisor of a few lines, in the relay's process group, is the simplest thing that does
that on any host without a service manager (compose uses Docker's `restart:` policy instead):

- it starts CMD with its own stdout and stderr (the relay's log), and when CMD exits for any
  reason starts it again after a delay that doubles while it keeps dying young (RESTART_S up
  to MAX_DELAY_S; back to RESTART_S after it ran STEADY_S);
- SIGTERM or SIGINT (`ops/stack down` signals the whole group) stops it: it passes the signal
  on, waits for CMD to exit, and exits 0 without a restart;
- FILE (JSON, written whole) says what `ops/stack status` shows: the running CMD's pid,
  how many restarts, the last exit status (negative: the signal that ended it).

It imports nothing from genq, so it runs from its path with any Python 3.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

RESTART_S = 0.5
MAX_DELAY_S = 30.0
STEADY_S = 60.0


def read_record(path: Path) -> dict[str, Any] | None:
    """What the supervisor last wrote to `path`; None when it wrote nothing (yet)."""
    try:
        loaded = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None


class Supervisor:
    def __init__(self, command: list[str], record: Path) -> None:
        self.command, self.record = command, record
        self.restarts = 0
        self.last_exit: int | None = None
        self.stopping = threading.Event()
        self._child: subprocess.Popen[bytes] | None = None

    def run(self) -> int:
        delay = RESTART_S
        while True:
            started = time.monotonic()
            self.last_exit = self._run_once()
            if self.stopping.is_set():
                self._write(running=False)
                return 0
            delay = RESTART_S if time.monotonic() - started >= STEADY_S else delay
            self.restarts += 1
            say(
                f"{' '.join(self.command)} exited with {self.last_exit}; starting it again in "
                f"{delay:.1f}s (restart {self.restarts})"
            )
            self._write(running=False)
            if self.stopping.wait(delay):
                return 0
            delay = min(delay * 2, MAX_DELAY_S)

    def _run_once(self) -> int:
        """Start the command and wait for it to exit: its exit status."""
        try:
            self._child = subprocess.Popen(self.command)
        except OSError as exc:  # not found, not executable: tried again like any exit
            say(f"cannot start {self.command[0]}: {exc}")
            return 127
        self._write()
        return self._child.wait()

    def stop(self, signum: int, frame: FrameType | None) -> None:
        """Passed on to the command, which then exits; no restart after that."""
        self.stopping.set()
        child = self._child
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    def _write(self, running: bool = True) -> None:
        child = self._child
        record = {
            "supervisor_pid": os.getpid(),
            "pid": child.pid if running and child is not None else None,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
            "updated_at": time.time(),
        }
        temporary = self.record.with_name(f".{self.record.name}.tmp")
        temporary.write_text(json.dumps(record))
        temporary.replace(self.record)


def say(line: str) -> None:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    print(f"{stamp} supervisor[{os.getpid()}]: {line}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", type=Path, required=True, help="JSON status file to keep")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command to supervise")
    supervisor = Supervisor(command, args.record)
    signal.signal(signal.SIGTERM, supervisor.stop)
    signal.signal(signal.SIGINT, supervisor.stop)
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
