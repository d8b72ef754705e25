"""Run every benchmark in bench/ (files named *_bench.py), one after the other.

Modules whose name starts with an underscore (``_common.py``: what the
benchmarks share) are not benchmarks and are not run.
"""

import pathlib
import subprocess
import sys

here = pathlib.Path(__file__).resolve().parent
status = 0
for script in sorted(here.glob("*_bench.py")):
    if script.name.startswith("_"):
        continue
    print(f"== {script.name}", flush=True)
    status |= subprocess.run([sys.executable, str(script)], check=False).returncode
sys.exit(status)
