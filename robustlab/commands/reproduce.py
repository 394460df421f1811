"""`robustlab reproduce`: one command per report: every table, figure and an HTML report."""
from __future__ import annotations

import argparse

from .common import add_runtime_args, apply_sets

NAME = "reproduce"
ORDER = 5
HELP = ("reproduce a report: ssr-purifier (seed 000), traffic-signs (seed 003) or all, at a "
        "preset (smoke, quick, paper); cached and resumable")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="ssr-purifier, traffic-signs or all (see `robustlab list "
                                  "recipes`)")
    p.add_argument("--preset", default="quick", help="smoke, quick or paper")
    p.add_argument("--out", required=True, help="folder for the steps, results.json, tables/, "
                                                "figures/ and report.html")
    p.add_argument("--only", help="comma-separated outputs (e.g. table4,fig4a) and the steps "
                                  "they need")
    p.add_argument("--dry-run", action="store_true",
                   help="print every step, its settings, whether it is cached and a rough cost")
    p.add_argument("--jobs", type=int, default=1, help="steps run side by side")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a preset setting, e.g. --set n_eval=100 (repeatable)")
    p.add_argument("--overwrite", action="store_true",
                   help="reuse an --out that holds another recipe or preset")
    p.add_argument("--docs", metavar="DIR", help="also publish each recipe's results page as "
                   "DIR/RECIPE.md with its figures (e.g. docs/results)")
    g = p.add_argument_group("scaling out (each training and evaluation step under torchrun)")
    g.add_argument("--nproc-per-node", type=int, default=1, metavar="N",
                   help="processes per machine for each training/evaluation step: one per GPU "
                        "(gloo processes on a CPU); with --jobs J, J x N GPUs in all")
    g.add_argument("--nnodes", type=int, default=1, help="machines (run this same command on "
                   "each, with its --node-rank; --out on a shared file system)")
    g.add_argument("--node-rank", type=int, default=0, help="this machine: 0 (writes the "
                   "results) to NNODES-1")
    g.add_argument("--master-addr", help="address of machine 0 (several machines)")
    g.add_argument("--master-port", type=int, default=29500, help="port machine 0 listens on")
    p.add_argument("--data-root", default=None, help="directory holding the datasets")
    add_runtime_args(p)
    p.set_defaults(seed=None)


def run(args: argparse.Namespace) -> int:
    from .._checks import check_int
    from ..experiments import reproduce
    from ..experiments.launch import Launch

    check_int("--jobs", args.jobs)
    launch = Launch(args.nproc_per_node, args.nnodes, args.node_rank, args.master_addr,
                    args.master_port)
    only = [o.strip() for o in args.only.split(",") if o.strip()] if args.only else []
    reproduce(args.recipe, args.preset, args.out, only=only, dry_run=args.dry_run,
              data_root=args.data_root, device=args.device, seed=args.seed, jobs=args.jobs,
              overwrite=args.overwrite, overrides=apply_sets({}, args.set),
              progress=not args.no_progress, docs=args.docs, launch=launch)
    return 0
