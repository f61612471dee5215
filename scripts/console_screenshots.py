"""Make the screenshots of docs/console.md: the browser scenario, with screenshots saved.

Usage: .venv/bin/python scripts/console_screenshots.py [--dest docs/console]
(needs Chromium at /usr/bin/chromium, or LOBEFLOW_CHROMIUM, and playwright).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    """Run the console's browser test with LOBEFLOW_CONSOLE_SCREENSHOTS set."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dest", type=Path, default=ROOT / "docs" / "console")
    args = parser.parse_args()
    env = {**os.environ, "LOBEFLOW_CONSOLE_SCREENSHOTS": str(args.dest.resolve())}
    tests = [
        "tests/run/test_console.py::test_console_scenario_in_a_real_browser",
        "tests/run/test_console.py::test_the_browser_logs_no_error_and_sees_the_declared_limits",
        "tests/run/test_schedules.py::test_the_schedules_view_in_a_real_browser",
    ]
    return subprocess.call([sys.executable, "-m", "pytest", "-q", *tests], cwd=ROOT, env=env)


if __name__ == "__main__":
    raise SystemExit(main())
