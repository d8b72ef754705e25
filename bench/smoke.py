"""Every benchmark's ``--smoke`` run (and any other command given), all at once:
what ``make test`` runs beside the PostgreSQL suites, so that no benchmark rots.

Each command's output is kept and printed whole when it ends, under a line
naming it with its exit status and wall time; the exit status is 1 if any
failed. Smoke runs assert no timing (each benchmark times against a floor
measured in its own run), so running them side by side changes only their
printed figures, which ``--smoke`` figures are not meant for.

    .venv/bin/python bench/smoke.py                      # the five smoke runs
    .venv/bin/python bench/smoke.py -- "cd x && pytest"  # and shell commands of your own
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: The smoke runs, each "script: what it exercises".
SMOKES = {
    "run.py": "the benchmark harness",
    "hostile.py": "the service beside hostile peers",
    "dashboard.py": "dashboard request, sampler and history costs",
    "signing.py": "signature verification and replay cache figures",
    "metrics.py": "GET /metrics scrape latency and PostgreSQL statements per scrape",
}
#: A bound on any one command: a hung benchmark fails the run instead of holding it.
TIMEOUT = 900


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("commands", nargs="*", help="shell commands to run beside the smoke runs")
    args = parser.parse_args()
    commands = {
        f"bench/{name} --smoke ({what})": [sys.executable, str(HERE / name), "--smoke"] for name, what in SMOKES.items()
    }
    for command in args.commands:
        commands[command] = ["bash", "-c", command]
    started = time.monotonic()
    running = []
    for title, argv in commands.items():
        out = tempfile.TemporaryFile()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=HERE.parent)
        running.append((title, proc, out, time.monotonic()))
    failed = []
    pending = list(running)
    deadline = time.monotonic() + TIMEOUT
    while pending:
        for item in list(pending):
            title, proc, out, t0 = item
            if proc.poll() is None and time.monotonic() < deadline:
                continue
            if proc.poll() is None:
                proc.kill()
                proc.wait()
                title += f" -- killed after {TIMEOUT} s"
            pending.remove(item)
            out.seek(0)
            text = out.read().decode("utf-8", "replace")
            print(f"\n== {title}: exit {proc.returncode} in {time.monotonic() - t0:.1f} s", flush=True)
            sys.stdout.write(text)
            sys.stdout.flush()
            if proc.returncode != 0:
                failed.append(title)
        time.sleep(0.2)
    print(f"\n== {len(commands)} commands in {time.monotonic() - started:.1f} s; failed: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
