"""The ``robustlab`` command. Each sub-command lives in ``robustlab/commands/``; this file only
builds the parser and turns errors into one line on stderr and a non-zero exit."""
from __future__ import annotations

import argparse
import logging
import sys
import warnings

from .commands import COMMANDS
from .errors import RobustlabError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="robustlab",
        description="Attack, defend and honestly evaluate image classifiers.",
        epilog="Run `robustlab list` for every dataset, model, attack, method and recipe name.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debugging details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in COMMANDS.items():
        p = sub.add_parser(name, help=module.HELP, description=module.HELP,
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(func=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="robustlab: %(message)s")
    warnings.simplefilter("default")
    try:
        return int(args.func(args) or 0)
    except RobustlabError as exc:
        print(f"robustlab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = (" (the last finished epoch is saved: continue with --resume)"
                if hasattr(args, "resume") else "")
        print(f"robustlab: interrupted{hint}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into a reader that stopped early (e.g. `| head`)
        sys.stderr.close()
        return 141
    except MemoryError:
        print("robustlab: error: out of memory; lower --batch-size (or --n)", file=sys.stderr)
        return 2
    except OSError as exc:  # a file-system failure the command did not foresee: one line
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"robustlab: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2


def _version() -> str:
    from . import __version__

    return __version__


if __name__ == "__main__":
    sys.exit(main())
