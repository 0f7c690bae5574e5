"""A hospital's tamper-evident audit trail: one JSON line per message, in a SHA-256 hash chain.

``STATE_DIR/audit.jsonl``: each line holds ``seq`` (its 1-based line number), ``prev`` (the SHA-256 of
the previous line's bytes; 64 zeros on line 1), the time, run id, the app's hash, the message type,
the settings requested, the decision (accepted, or refused and why), the epsilon spent after it and
the SHA-256 of the reply sent. ``STATE_DIR/audit.head`` records the line count and the last line's
hash, so a removed last line is noticed too. Every append rewrites the file atomically (write, fsync,
rename), so a crash leaves the old or the new trail, never a torn line; callers hold the state
folder's lock. :func:`verify` names the first line that was changed, removed or reordered.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fedheart.safeguard.files import replace_file

AUDIT_FILE = "audit.jsonl"
HEAD_FILE = "audit.head"
GENESIS = "0" * 64


def _sha(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def _lines(state_dir: Path) -> list[bytes]:
    path = Path(state_dir) / AUDIT_FILE
    return path.read_bytes().splitlines() if path.exists() else []


def append(state_dir: Path, entry: dict[str, Any]) -> dict[str, Any]:
    """Add one entry (``seq``, ``prev`` and ``time`` are filled in); returns the line as written."""
    lines = _lines(state_dir)
    record = {"seq": len(lines) + 1, "prev": _sha(lines[-1]) if lines else GENESIS,
              "time": datetime.now(UTC).isoformat(timespec="milliseconds"), **entry}
    line = json.dumps(record, sort_keys=True, separators=(",", ":"), default=str).encode()
    replace_file(Path(state_dir) / AUDIT_FILE, b"".join(x + b"\n" for x in [*lines, line]))
    head = {"lines": len(lines) + 1, "sha256": _sha(line)}
    replace_file(Path(state_dir) / HEAD_FILE, json.dumps(head).encode() + b"\n")
    return record


def entries(state_dir: Path, run: str | None = None) -> Iterator[dict[str, Any]]:
    """The trail's entries (of one run if given)."""
    for number, raw in enumerate(_lines(state_dir), start=1):
        try:
            entry = json.loads(raw)
        except ValueError:
            entry = {"seq": number, "decision": "unreadable line (run fedheart audit verify)"}
        if run is None or str(entry.get("run")) == str(run):
            yield entry


def verify(state_dir: Path) -> tuple[bool, str]:
    """(intact, what was found): the first line changed, removed or reordered, if any."""
    path = Path(state_dir) / AUDIT_FILE
    if not path.exists():
        return False, f"{path}: no audit trail"
    lines = path.read_bytes().splitlines()
    prev = GENESIS
    for number, raw in enumerate(lines, start=1):
        try:
            entry = json.loads(raw)
        except ValueError:
            return False, f"{path}, line {number}: not a JSON line (changed or torn)"
        if entry.get("seq") != number:
            return False, (f"{path}, line {number}: holds entry {entry.get('seq')}, expected {number}: a line "
                           "was removed or the lines were reordered")
        if entry.get("prev") != prev:
            return False, (f"{path}, line {number - 1}: changed (line {number} holds the hash of another line)"
                           if number > 1 else f"{path}, line 1: changed (its previous hash is not the start)")
        prev = _sha(raw)
    head_path = Path(state_dir) / HEAD_FILE
    if not head_path.exists():
        return False, f"{head_path}: missing (the trail's last line cannot be checked)"
    try:
        head = json.loads(head_path.read_text())
        head = {"lines": int(head["lines"]), "sha256": str(head["sha256"])}
    except (ValueError, KeyError, TypeError):
        return False, f"{head_path}: not a valid head record (changed or torn)"
    count = len(lines)
    if head["lines"] > count:
        return False, f"{path}: lines {count + 1}-{head['lines']} removed (the head records {head['lines']} lines)"
    if head["lines"] == count and head["sha256"] != prev:
        return False, f"{path}, line {count}: changed (does not match {HEAD_FILE})"
    if head["lines"] < count - 1 or (head["lines"] == count - 1 and count > 1
                                     and head["sha256"] != _sha(lines[count - 2])):
        return False, f"{path}: lines after {head['lines']} do not match {HEAD_FILE}"
    note = " (the head lags one line: a crash between the two writes)" if head["lines"] == count - 1 else ""
    return True, f"{path}: {count} lines, hash chain intact{note}"


def format_entry(entry: dict[str, Any]) -> str:
    """One readable line of ``fedheart audit show``."""
    decision = entry.get("decision", "?")
    why = f" ({entry['reason']})" if entry.get("reason") else ""
    eps = entry.get("epsilon")
    spent = f" | epsilon run {eps:.4f} lifetime {entry.get('lifetime', 0.0):.4f}" if eps is not None else ""
    over = entry.get("overrides") or {}
    changed = (" | hospital's values: " + ", ".join(f"{k}={v['used']} (asked {v['requested']})"
                                                    for k, v in over.items())) if over else ""
    return (f"{entry.get('seq', '?'):>4} {entry.get('time', '')} run {entry.get('run', '?')} "
            f"{entry.get('message', '?'):<15} {decision}{why}{spent}{changed}")
