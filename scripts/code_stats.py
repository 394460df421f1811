"""Print the size of each package of robustlab and its longest functions.

    python scripts/code_stats.py [--top 15] [--root robustlab]
    python scripts/code_stats.py --trace train --dataset fashion-mnist ...

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
    """Run ``robustlab ARGV``; print each robustlab file at the first call of one of its functions
    at run time (code run while a module is being imported, such as registrations, is not
    counted), then the robustlab modules imported."""
    import inspect

    from robustlab.cli import main as cli_main

    package = Path(__import__("robustlab").__file__).parent
    prefix = str(package)
    called: dict[str, None] = {}

    here = sys._getframe()

    def importing(frame) -> bool:
        while frame is not None and frame is not here:
            if frame.f_code.co_name == "<module>":
                return True
            frame = frame.f_back
        return False

    def profile(frame, event, arg):
        code = frame.f_code
        if (event == "call" and code.co_filename.startswith(prefix)
                and code.co_filename not in called and code.co_flags & inspect.CO_OPTIMIZED
                and not importing(frame.f_back)):
            called[code.co_filename] = None

    sys.setprofile(profile)
    try:
        cli_main(argv)
    except SystemExit:
        pass
    finally:
        sys.setprofile(None)
    print(f"files whose functions run ({len(called)}), in order of first call:")
    for name in called:
        print(" ", Path(name).relative_to(package.parent))
    imported = sorted(m for m in sys.modules if m == "robustlab" or m.startswith("robustlab."))
    print(f"modules imported ({len(imported)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="robustlab")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--trace", metavar="COMMAND ...",
                        help="run and trace the robustlab command line that follows")
    argv = sys.argv[1:]
    if "--trace" in argv:  # everything after it is the command's own line
        trace(argv[argv.index("--trace") + 1:])
        return
    args = parser.parse_args(argv)
    root = Path(args.root)
    rows = package_sizes(root)
    print(f"{'package':32} {'files':>5} {'lines':>6}")
    for pkg, n, lines in rows:
        print(f"{pkg:32} {n:5d} {lines:6d}")
    print(f"{'total':32} {sum(r[1] for r in rows):5d} {sum(r[2] for r in rows):6d}")
    print("\nlongest functions (lines)")
    for length, where in longest_functions(root, args.top):
        print(f"{length:4d}  {where}")


if __name__ == "__main__":
    main()
