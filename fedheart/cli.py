"""The ``fedheart`` command: tools a hospital's engineer runs by hand.

    fedheart validate PATH [PATH ...]   check hospital files before joining a federation
    fedheart report RUN_DIR             regenerate a run's report (plots and summary)
    fedheart check-config [OVERRIDE ...] check Hydra overrides as the server would, contacting nobody
    fedheart check-policy FILE          check a hospital policy file
    fedheart budget STATE_DIR           privacy budget spent and left, per data file and per run
    fedheart audit show STATE_DIR [--run RUN_ID]   the hospital's audit trail, readably
    fedheart audit verify STATE_DIR     exit 0 if the audit trail is intact, else name the first bad line
    fedheart app-hash [APP_DIR | FAB ...] the SHA-256 a hospital approves (the FAB hash its SuperNode sees)
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


def check_policy(path: str) -> int:
    """Parse a policy file as a SuperNode would; exit 2 naming file, line, key and value on error."""
    from fedheart.safeguard.policy import PolicyError, load_policy

    try:
        policy = load_policy(path)
    except PolicyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"policy OK: {path}")
    for key, value in vars(policy).items():
        if key != "path":
            print(f"  {key.replace('_', '-')}: {value}")
    return 0


def budget(state_dir: str, limit: float | None = None) -> int:
    """Spent and reserved epsilon per data file and run (``--lifetime`` shows what is left)."""
    from pathlib import Path

    from fedheart.safeguard.budget import books

    found = books(Path(state_dir))
    if not found:
        print(f"{state_dir}: no privacy ledger (no DP release recorded here)")
        return 0
    for book in found:
        s = book.summary()
        cap = limit if limit is not None else s["limit"]  # the policy given, else the one last recorded
        left = f", left {max(cap - s['lifetime'], 0):.4f} of {cap:g}" if cap is not None else ""
        print(f"data file {s['data_name'] or '?'} (sha256 {s['data_sha256'][:16]}...): lifetime epsilon charged "
              f"{s['lifetime']:.4f}{left}")
        print(f"  {'run':<22} {'started':<26} {'reserved':>9} {'spent':>9} {'delta':>8} stats evals")
        for r in s["runs"]:
            print(f"  {r['run']:<22} {r['started']:<26} {r['reserved']:>9.4f} {r['spent']:>9.4f} {r['delta']:>8.1g} "
                  f"{'yes' if r['statistics'] else 'no':>5} {r['evaluations']:>5}")
    return 0


def audit_command(action: str, state_dir: str, run: str | None = None) -> int:
    from pathlib import Path

    from fedheart.safeguard import audit

    if action == "verify":
        ok, message = audit.verify(Path(state_dir))
        print(message, file=sys.stdout if ok else sys.stderr)
        return 0 if ok else 1
    for entry in audit.entries(Path(state_dir), run):
        print(audit.format_entry(entry))
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
    p_policy = sub.add_parser("check-policy", help="check a hospital policy file")
    p_policy.add_argument("path", help="the policy YAML file")
    p_budget = sub.add_parser("budget", help="privacy budget spent and left in a hospital's state folder")
    p_budget.add_argument("state_dir", help="the SuperNode's node-config state-dir")
    p_budget.add_argument("--policy", help="the hospital's policy file (to show what is left)")
    p_audit = sub.add_parser("audit", help="show or verify a hospital's audit trail")
    p_audit.add_argument("action", choices=["show", "verify"])
    p_audit.add_argument("state_dir", help="the SuperNode's node-config state-dir")
    p_audit.add_argument("--run", help="only this run id (show)")
    p_hash = sub.add_parser("app-hash", help="the app hash a hospital approves (policy approved-apps)")
    p_hash.add_argument("paths", nargs="*", default=["."], help="app folders or .fab files (default: .)")
    args = parser.parse_args(argv)
    if args.command == "app-hash":
        from launcher.fab import main as app_hash_main  # Flower's FAB builder: the launcher's side

        return app_hash_main(args.paths)
    if args.command == "check-policy":
        return check_policy(args.path)
    if args.command == "budget":
        limit = None
        if args.policy:
            from fedheart.safeguard.policy import PolicyError, load_policy

            try:
                limit = load_policy(args.policy).lifetime_epsilon
            except PolicyError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
        return budget(args.state_dir, limit)
    if args.command == "audit":
        return audit_command(args.action, args.state_dir, args.run)
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
