"""``python -m genlab.report <folder> [...] [--out DIR]``: see :mod:`genlab.report`."""

from __future__ import annotations

import argparse
import sys

import yaml

from genlab.errors import ConfigError, GenlabError
from genlab.report import report


def parse_setting(text: str) -> tuple[str, object]:
    """``"elbow_percent=1"`` -> ``("elbow_percent", 1)`` (the value read as YAML).

    Raises:
        ConfigError: without ``=``.
    """
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set takes KEY=VALUE, got {text!r}")
    return key, yaml.safe_load(value)


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, write the report, print where; one line and exit code 2 on a user error."""
    parser = argparse.ArgumentParser(prog="python -m genlab.report", description=__doc__)
    parser.add_argument("paths", nargs="+", help="run or sweep folders, or glob patterns of them")
    parser.add_argument("--out", default=None, help="where to write (default: the one folder given)")
    parser.add_argument("--readme", default=None, help="also write the table into this file's <!-- tag:begin --> block")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="replace an entry of the report: section, e.g. --set elbow_percent=1")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        settings = dict(map(parse_setting, args.set))
        path = report(args.paths, args.out, args.readme, settings)
    except GenlabError as e:
        print(f"genlab: error: {e}", file=sys.stderr)
        return 2
    print(path.read_text())
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
