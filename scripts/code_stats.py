"""Print the size of each package of robustlab and its longest functions.

    python scripts/code_stats.py [--top 15] [--root robustlab]
    python scripts/code_stats.py --trace -- train --dataset fashion-mnist ...

Lines are physical lines of the .py files; a function's length runs from its
``def`` line to its last line, decorators and docstring included. ``--trace``
runs one robustlab command instead and prints the files of robustlab whose
functions it calls, in the order they are first called (the data flow).
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path


def package_sizes(root: Path) -> list[tuple[str, int, int]]:
    files: dict[str, list[int]] = defaultdict(list)
    for path in sorted(root.rglob("*.py")):
        files[str(path.parent.relative_to(root.parent))].append(len(path.read_text().splitlines()))
    return [(pkg, len(sizes), sum(sizes)) for pkg, sizes in sorted(files.items())]


def longest_functions(root: Path, top: int) -> list[tuple[int, str]]:
    found = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                found.append((length, f"{path.relative_to(root.parent)}:{node.lineno} {node.name}"))
    return sorted(found, reverse=True)[:top]


def trace(argv: list[str]) -> None:
    """Run ``robustlab ARGV`` and print each robustlab file at its first call."""
    from robustlab.cli import main as cli_main

    package = str(Path(__import__("robustlab").__file__).parent)
    seen: dict[str, None] = {}

    def profile(frame, event, arg):
        if event == "call":
            name = frame.f_code.co_filename
            if name.startswith(package) and name not in seen:
                seen[name] = None

    sys.setprofile(profile)
    try:
        cli_main(argv)
    except SystemExit:
        pass
    finally:
        sys.setprofile(None)
    for name in seen:
        print(Path(name).relative_to(Path(package).parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="robustlab")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--trace", nargs=argparse.REMAINDER,
                        help="a robustlab command line to run and trace (after --)")
    args = parser.parse_args()
    if args.trace is not None:
        trace(args.trace[1:] if args.trace[:1] == ["--"] else args.trace)
        return
    root = Path(args.root)
    rows = package_sizes(root)
    print(f"{'package':32} {'files':>5} {'lines':>6}")
    for pkg, n, lines in rows:
        print(f"{pkg:32} {n:5d} {lines:6d}")
    print(f"{'total':32} {sum(r[1] for r in rows):5d} {sum(r[2] for r in rows):6d}")
    print(f"\nlongest functions (lines)")
    for length, where in longest_functions(root, args.top):
        print(f"{length:4d}  {where}")


if __name__ == "__main__":
    main()
