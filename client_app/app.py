"""ClientApp: one hospital. Reads only its own file; replies with weights and aggregate numbers.

This module only wires Flower's message types to :mod:`client_app.handlers` and stays light on
purpose: Flower's simulation imports it in its driver process before it starts Ray (to check that
the app loads), and a deployed SuperNode starts a fresh process that imports it for every message.
The handlers, with torch, pandas and scikit-learn, are imported when the first message arrives.
"""

from __future__ import annotations

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from client_app.privacy import central_dp_mod
from client_app.secagg import secaggplus_train_mod

app = ClientApp()


@app.query("stats")
def statistics(msg: Message, context: Context) -> Message:
    """Sufficient statistics of the training rows (counts, sums, sums of squares, category counts)."""
    from client_app import handlers

    return handlers.statistics(msg, context)


@app.train(mods=[secaggplus_train_mod, central_dp_mod])  # SecAgg+ (aggregation=secagg) must stay the first mod
def train(msg: Message, context: Context) -> Message:
    """One round of local training from the global model (DP-SGD when privacy.mode is dp-sgd)."""
    from client_app import handlers

    return handlers.train(msg, context)


@app.evaluate(mods=[central_dp_mod])
def evaluate(msg: Message, context: Context) -> Message:
    """Loss, ROC AUC, accuracy and score histograms of the global model on the test rows."""
    from client_app import handlers

    return handlers.evaluate(msg, context)


@app.query("baseline")
def baseline(msg: Message, context: Context) -> Message:
    """Majority-class and local-only baselines on this hospital's own data."""
    from client_app import handlers

    return handlers.baseline(msg, context)
