"""``python -m genlab.report <folder> [...] [--out DIR]``: see :mod:`genlab.report`."""

from __future__ import annotations

import argparse
import sys

from genlab.errors import GenlabError
from genlab.report import report


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, write the report, print where; one line and exit code 2 on a user error."""
    parser = argparse.ArgumentParser(prog="python -m genlab.report", description=__doc__)
    parser.add_argument("paths", nargs="+", help="run or sweep folders, or glob patterns of them")
    parser.add_argument("--out", default=None, help="where to write (default: the one folder given)")
    parser.add_argument("--readme", default=None, help="also write the table into this file's <!-- tag:begin --> block")
    args = parser.parse_args(argv)
    try:
        path = report(args.paths, args.out, args.readme)
    except GenlabError as e:
        print(f"genlab: error: {e}", file=sys.stderr)
        return 2
    print(path.read_text())
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
