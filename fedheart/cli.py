"""The ``fedheart`` command: tools a hospital's engineer runs by hand.

    fedheart validate PATH [PATH ...]   check hospital files before joining a federation
    fedheart report RUN_DIR             regenerate a run's report (plots and summary)
    fedheart check-config [OVERRIDE ...] check Hydra overrides as the server would, contacting nobody
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from fedheart.tables import DataFileError, format_report, read_table, summarize


def validate(paths: Sequence[str], as_json: bool = False) -> int:
    """Print a readable report per file; exit 1 if any file has problems (files are only read)."""
    status = 0
    reports = []
    for path in paths:
        try:
            summary = summarize(read_table(path, strict=False))
        except DataFileError as exc:  # unreadable: missing, binary, wrong encoding, empty
            summary = {"path": path, "rows": 0, "header": False, "missing": {}, "impossible_zeros": {},
                       "positive": 0, "negative": 0, "problems": [str(p) for p in exc.problems]}
        status = 1 if summary["problems"] else status
        reports.append(summary)
        if not as_json:
            print(format_report(summary) + "\n")
    if as_json:
        print(json.dumps(reports, indent=2))
    return status


def check_config(overrides: Sequence[str]) -> int:
    """Compose and check the configuration, build the strategy and read the ``resume`` checkpoint,
    as the ServerApp does; exit 2 on error."""
    from fedheart.config import ConfigError, load_config

    try:
        cfg = load_config(list(overrides))
        from server_app.strategies import build_strategy  # Flower's strategy classes: no runtime needed

        build_strategy(cfg)
        if cfg.resume:
            from fedheart.runs import load_checkpoint

            load_checkpoint(cfg.resume)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"configuration OK: strategy={cfg.strategy.name} privacy={cfg.privacy.mode} "
          f"aggregation={cfg.aggregation.mode} rounds={cfg.rounds}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fedheart", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_validate = sub.add_parser("validate", help="check hospital data files (UCI 14-column CSV)")
    p_validate.add_argument("paths", nargs="+", help="CSV files to check")
    p_validate.add_argument("--json", action="store_true", help="machine-readable output")
    p_report = sub.add_parser("report", help="regenerate the report of a finished run")
    p_report.add_argument("run_dir", help="the run's output folder")
    p_check = sub.add_parser("check-config", help="check Hydra overrides without starting a run")
    p_check.add_argument("overrides", nargs="*", help="e.g. strategy=fedprox privacy=dp-sgd privacy.epsilon=3")
    args = parser.parse_args(argv)
    if args.command == "check-config":
        return check_config(args.overrides)
    if args.command == "validate":
        return validate(args.paths, args.json)
    if args.command == "report":
        from fedheart.report import run_report

        return run_report(args.run_dir)
    return 2


if __name__ == "__main__":
    sys.exit(main())
