"""The ClientApp's side of the privacy modes (see docs/privacy.md).

- ``dp-sgd``: the hospital's privacy :class:`~fedheart.privacy.ledger.Ledger` lives in
  ``context.state`` (a ConfigRecord of the RDP history triples), which the SuperNode keeps for
  the whole run while every message may run in a fresh process.
- ``central-*``: :func:`central_dp_mod` makes every hospital weigh the same and, when the
  hospitals clip (``privacy.clipping=client``), applies Flower's ``fixedclipping_mod`` or
  ``adaptiveclipping_mod`` to train messages. The mod is chosen per message from its config,
  because the ClientApp is built before any configuration arrives.
"""

from __future__ import annotations

from flwr.app import ConfigRecord, Context, Message, MessageType
from flwr.clientapp.mod import adaptiveclipping_mod, fixedclipping_mod
from flwr.clientapp.typing import ClientAppCallable

from fedheart.config import CENTRAL_MODES
from fedheart.privacy.ledger import Ledger
from fedheart.protocol import EQUAL_WEIGHT

LEDGER = "privacy-ledger"  # key of the ledger in context.state


def load_ledger(context: Context) -> Ledger:
    """This hospital's ledger for the run (empty before its first DP release)."""
    record = context.state.config_records.get(LEDGER)
    if record is None:
        return Ledger()
    history = list(zip((float(z) for z in record["noise-multipliers"]),  # type: ignore[union-attr]
                       (float(q) for q in record["sample-rates"]),  # type: ignore[union-attr]
                       (int(n) for n in record["steps"]), strict=True))  # type: ignore[union-attr]
    noise = float(record["calibrated-noise"]) if "calibrated-noise" in record else None  # type: ignore[arg-type]
    return Ledger(history=history, noise_multiplier=noise)


def save_ledger(context: Context, ledger: Ledger) -> None:
    """Keep the ledger for the next message of this run (a no-op while it is empty)."""
    if not ledger.history:
        return
    values: dict = {"noise-multipliers": [float(z) for z, _, _ in ledger.history],
                    "sample-rates": [float(q) for _, q, _ in ledger.history],
                    "steps": [int(n) for _, _, n in ledger.history]}
    if ledger.noise_multiplier is not None:
        values["calibrated-noise"] = float(ledger.noise_multiplier)
    context.state[LEDGER] = ConfigRecord(values)


def _equal_weight(call_next: ClientAppCallable) -> ClientAppCallable:
    def call(msg: Message, context: Context) -> Message:
        reply = call_next(msg, context)
        if not reply.has_error():
            for record in reply.content.metric_records.values():
                record[EQUAL_WEIGHT] = 1.0
        return reply
    return call


def central_dp_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Central DP on train and evaluate messages; other privacy modes pass straight through."""
    config = msg.content.config_records.get("config") if msg.has_content() else None
    mode = str(config.get("privacy.mode", "none")) if config is not None else "none"
    if mode not in CENTRAL_MODES:
        return call_next(msg, context)
    inner = _equal_weight(call_next)
    if msg.metadata.message_type == MessageType.TRAIN and config is not None \
            and config.get("privacy.clipping") == "client":
        clip = fixedclipping_mod if mode == "central-fixed" else adaptiveclipping_mod
        return clip(msg, context, inner)
    return inner(msg, context)
