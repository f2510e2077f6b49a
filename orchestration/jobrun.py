"""Run one job command and leave its exit code in a file, so a restarted app can tell done from died.

Usage: python -m orchestration.jobrun EXIT_FILE -- COMMAND...
A job killed with SIGKILL (or out of memory) never writes the file; the runner then marks it failed.
"""

import subprocess
import sys
from pathlib import Path


def main() -> int:
    exit_file, separator, *command = sys.argv[1:]
    if separator != "--" or not command:
        print(__doc__, file=sys.stderr)
        return 2
    code = subprocess.call(command)
    tmp = Path(exit_file + ".tmp")
    tmp.write_text(str(code))
    tmp.replace(exit_file)
    return code


if __name__ == "__main__":
    sys.exit(main())
