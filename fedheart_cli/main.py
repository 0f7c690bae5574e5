"""The ``fedheart`` command: tools a hospital's engineer runs by hand.

    fedheart validate PATH [PATH ...]   check hospital files before joining a federation
    fedheart report RUN_DIR             regenerate a run's report (plots and summary)
    fedheart predict RUN_DIR PATIENTS.csv [--out FILE] [--threshold T] [--json]   score patients
    fedheart export RUN_DIR [--out FILE] the run's model as one ONNX file (extra `export`)
    fedheart recalibrate RUN_DIR LOCAL.csv --out DIR   refit intercept and slope on a labelled local sample
    fedheart check-config [OVERRIDE ...] check Hydra overrides as the server would, contacting nobody
    fedheart check-policy FILE          check a hospital policy file
    fedheart budget STATE_DIR           privacy budget spent and left, per data file and per run
    fedheart audit show STATE_DIR [--run RUN_ID]   the hospital's audit trail, readably
    fedheart audit verify STATE_DIR     exit 0 if the audit trail is intact, else name the first bad line
    fedheart app-hash [APP_DIR | FAB ...] the SHA-256 a hospital approves (the FAB hash its SuperNode sees)
    fedheart view [--runs DIR] [--superlink CONNECTION] [--port P]   read-only web view on loopback
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


def add_model_commands(sub: argparse._SubParsersAction) -> None:
    """``predict``, ``export`` and ``recalibrate``: a hospital applies a run's model (fedheart.predict)."""
    flamby = ("a protocol=flamby model: your hospital's own rows (e.g. its training file), to fit FLamby's "
              "per-hospital standardisation")
    p = sub.add_parser("predict", help="score a patient file with a run's model (14 UCI fields, label optional)")
    p.add_argument("run_dir", help="the run's output folder (or a recalibrated model folder)")
    p.add_argument("patients", help="CSV in the UCI format; the num column and the header are optional")
    p.add_argument("--out", help="write here instead of printing (never over an input)")
    p.add_argument("--threshold", type=float, help="class threshold (default: the run's)")
    p.add_argument("--json", action="store_true", help="JSON instead of CSV")
    p.add_argument("--standardise-from", metavar="CSV", help=flamby)
    p.set_defaults(model_command=_predict)
    p = sub.add_parser("export", help="write a model folder's final_model.onnx (pip install 'fedheart[export]')")
    p.add_argument("run_dir", help="the run's output folder (or a recalibrated model folder)")
    p.add_argument("--out", help="the ONNX file (default: RUN_DIR/final_model.onnx)")
    p.add_argument("--standardise-from", metavar="CSV", help=flamby + " (needs --out)")
    p.set_defaults(model_command=_export)
    p = sub.add_parser("recalibrate", help="refit the calibration intercept and slope on a labelled local sample")
    p.add_argument("run_dir", help="the run's output folder (never modified)")
    p.add_argument("sample", help="your labelled rows (UCI format, with num)")
    p.add_argument("--out", required=True, help="the new model folder (must not exist or be empty)")
    p.add_argument("--standardise-from", metavar="CSV", help=flamby)
    p.set_defaults(model_command=_recalibrate)


def _predict(a: argparse.Namespace) -> int:
    from fedheart.predict import command

    return command(a.run_dir, a.patients, out=a.out, threshold=a.threshold, as_json=a.json,
                   standardise_from=a.standardise_from)


def _export(a: argparse.Namespace) -> int:
    from fedheart.onnx_export import command

    return command(a.run_dir, out=a.out, standardise_from=a.standardise_from)


def _recalibrate(a: argparse.Namespace) -> int:
    from fedheart.recalibrate import command

    return command(a.run_dir, a.sample, a.out, standardise_from=a.standardise_from)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fedheart", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_validate = sub.add_parser("validate", help="check hospital data files (UCI 14-column CSV)")
    p_validate.add_argument("paths", nargs="+", help="CSV files to check")
    p_validate.add_argument("--json", action="store_true", help="machine-readable output")
    p_report = sub.add_parser("report", help="regenerate the report of a finished run")
    p_report.add_argument("run_dir", help="the run's output folder")
    add_model_commands(sub)
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
    p_view = sub.add_parser("view", help="local read-only web view of the federation and its runs")
    p_view.add_argument("--runs", metavar="DIR", help="run folders (default: $FEDHEART_OUTPUT_DIR or ./outputs)")
    p_view.add_argument("--superlink", metavar="CONNECTION", help="Flower connection (default: $FLWR_HOME's)")
    p_view.add_argument("--port", type=int, default=8642, help="port (default 8642)")
    p_view.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, loopback only)")
    args = parser.parse_args(argv)
    if getattr(args, "model_command", None):
        return args.model_command(args)
    if args.command == "view":
        from webview.cli import serve  # FastAPI, uvicorn and Flower's Control API client: the view's side

        return serve(args.runs, args.superlink, args.port, args.host)
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
