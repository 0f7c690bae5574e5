"""SecAgg+ on a hospital: Flower's ``secaggplus_mod`` around our Message-API train handler.

``secaggplus_train_mod`` is registered on ``train``. A message carrying SecAgg+ stage configs
goes through Flower's ``secaggplus_mod``, which calls the rest of the app only at the stage that
produces the masked update, with legacy ``FitIns`` content; :func:`train_as_fit` translates that
to the ``arrays``/``config`` message our handler (and any DP mod after this one) expects, and
the reply back to ``FitRes``. Plain train messages pass straight through.
"""

from __future__ import annotations

import copy

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.compat.common import recorddict_compat as compat

from fedheart.secagg import PREFIX, UpdateSettings, check_update

FITINS_PARAMETERS = "fitins.parameters"
FITINS_CONFIG = "fitins.config"


def secaggplus_train_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Apply ``secaggplus_mod`` to SecAgg+ stage messages only; other messages pass through."""
    if not msg.has_content() or RECORD_KEY_CONFIGS not in msg.content.config_records:
        return call_next(msg, context)
    return secaggplus_mod(msg, context, lambda fit_msg, ctx: train_as_fit(fit_msg, ctx, call_next))


def train_as_fit(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Run the Message-API train handler on a legacy ``FitIns`` message; reply with ``FitRes`` content."""
    config = dict(msg.content.config_records[FITINS_CONFIG])
    settings = UpdateSettings.from_config(config)
    tensors = parameters_to_ndarrays(
        compat.arrayrecord_to_parameters(msg.content.array_records[FITINS_PARAMETERS], keep_input=True))
    arrays = ArrayRecord({k: Array(v) for k, v in zip(settings.array_keys, tensors, strict=True)})
    task = ConfigRecord({k: v for k, v in config.items() if not k.startswith(PREFIX)})
    request = Message(content=RecordDict({"arrays": arrays, "config": task}), metadata=copy.copy(msg.metadata))
    reply = call_next(request, context)
    if reply.has_error():
        raise RuntimeError(f"local training failed: {reply.error.reason}")
    trained = next(iter(reply.content.array_records.values()))
    metrics = dict(next(iter(reply.content.metric_records.values())))
    listed = sorted(k for k, v in metrics.items() if isinstance(v, list))
    if listed:
        raise ValueError(f"train metrics {listed} are lists; the legacy FitRes of SecAgg+ carries scalars only")
    if set(trained.keys()) != set(settings.returned):
        raise ValueError(f"the trained arrays {sorted(trained.keys())} are not the {sorted(settings.returned)} this "
                         "SecAgg+ round aggregates")
    weights = {k: trained[k].numpy() for k in settings.returned}
    weight = float(metrics[settings.weight_key])
    check_update(settings, weights, weight)
    fitres = FitRes(status=Status(Code.OK, "OK"),
                    parameters=ndarrays_to_parameters([weights[k] for k in settings.returned]),
                    num_examples=int(weight) if weight.is_integer() else weight,  # type: ignore[arg-type]
                    metrics=metrics)  # type: ignore[arg-type]
    return Message(compat.fitres_to_recorddict(fitres, keep_input=False), reply_to=msg)
