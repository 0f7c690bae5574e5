"""The statistics phase: every hospital's sufficient statistics, combined into the global ones."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from flwr.app import RecordDict
from flwr.serverapp.strategy.strategy_utils import sample_nodes

from fedheart import stats as fstats
from fedheart.protocol import task_settings
from server_app.errors import FederationError
from server_app.records import config_record, metrics_of
from server_app.replies import error_reasons
from server_app.run_state import Hospital

if TYPE_CHECKING:
    from server_app.federation import Federation

log = logging.getLogger("fedheart.server")


def collect_statistics(federation: Federation) -> None:
    """Ask every hospital for its statistics; record the hospitals and the global preprocessing."""
    cfg = federation.cfg
    sample_nodes(federation.grid, cfg.min_hospitals, cfg.min_hospitals)  # waits until enough connect
    all_ids = sorted(federation.grid.get_node_ids())
    log.info("Federated statistics: asking %d hospitals (nodes %s)", len(all_ids), all_ids)
    content = RecordDict({"config": config_record(task_settings(cfg))})
    replies = federation.send(all_ids, "query.stats", content)
    parts = []
    for reply in replies:
        if reply.has_error():
            continue
        node, info = reply.metadata.src_node_id, reply.content.config_records["info"]
        if str(info["hospital"]) == cfg.data.holdout:  # no statistics: it only evaluates
            federation.hospitals[node] = Hospital(node, str(info["hospital"]), 0, holdout=True)
            continue
        stats = metrics_of(reply.content)
        federation.hospitals[node] = Hospital(node, str(info["hospital"]), int(stats["n"]))
        parts.append(stats)
    errors = error_reasons(replies)
    for reason in errors:
        log.error("Hospital failed to report statistics: %s", reason)
    held = [h.name for h in federation.hospitals.values() if h.holdout]
    if cfg.data.holdout and not held:
        raise FederationError(f"data.holdout={cfg.data.holdout}: no hospital of that name answered; "
                              f"errors: {'; '.join(errors) or 'none'}")
    if len(parts) < cfg.min_hospitals - len(held):
        raise FederationError(
            f"only {len(parts)} of the required {cfg.min_hospitals - len(held)} hospitals reported their "
            f"statistics; errors: {'; '.join(errors) or 'none (timeout)'}")
    names = [h.name for h in federation.hospitals.values()]
    if len(set(names)) != len(names):
        raise FederationError(f"two nodes report the same hospital name: {sorted(names)}")
    if cfg.data.pipeline == "project":
        global_stats = fstats.GlobalStats.from_totals(fstats.combine(parts),
                                                     noise_std=federation.privacy.stats_noise_std(len(parts)))
        federation.preprocessing = global_stats.to_json()
    log.info("Hospitals: %s", ", ".join(f"{h.name} ({h.train_rows} training rows)" if not h.holdout
                                       else f"{h.name} (held out: evaluates only)"
                                       for h in federation.hospitals.values()))
