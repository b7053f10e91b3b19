"""Run the benchmarks: ``python -m bench [--quick] [name ...]``."""
from __future__ import annotations

import argparse
import importlib

BENCHMARKS = ("crl_build", "hierarchy", "cli_startup", "http_load", "subscriber_keys",
              "csc_load", "batch_issue", "ra_load", "peers", "chain_tsa")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("names", nargs="*", help=f"which of {', '.join(BENCHMARKS)} "
                                                 "(default: all)")
    parser.add_argument("--quick", action="store_true", help="10x smaller sizes")
    args = parser.parse_args()
    unknown = sorted(set(args.names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    for name in args.names or BENCHMARKS:
        importlib.import_module(f"bench.{name}").run(quick=args.quick)


if __name__ == "__main__":
    main()
