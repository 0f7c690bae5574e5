"""The ``sagemaker`` backend: SageMaker Experiments through the SDK's ``Run`` (package sagemaker-core).

Credentials, region and endpoint come from the standard AWS chain (environment variables such as
``AWS_DEFAULT_REGION`` and ``AWS_ENDPOINT_URL``, profiles, IRSA in EKS). Calls are buffered and
sent on :meth:`flush`; the SDK sends metrics with BatchPutMetrics in batches of at most 10. The
boto clients use short timeouts and few attempts, so an unreachable endpoint fails fast.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from fedheart.tracking.base import Param, Tracker, TrackingError
from fedheart.tracking.names import trial_component_name

# Session(sagemaker_config=...) with this switches the SDK's telemetry requests off.
TELEMETRY_OFF = {"SchemaVersion": "1.0", "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}}}


def _sdk() -> tuple[Any, Any]:
    """Import the SDK lazily (the app works without the ``aws`` extra).

    Importing it calls ``logging.basicConfig(level=INFO)``; the root logger is put back as it was.
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        from sagemaker.core.experiments.run import Run
        from sagemaker.core.helper.session_helper import Session
    except ImportError as exc:
        raise TrackingError(f"tracking=sagemaker needs the SageMaker SDK, which is not installed here "
                            f"({exc}); install it with: pip install '.[aws]'") from None
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    logging.getLogger("sagemaker.config").setLevel(logging.WARNING)  # an INFO line per Session otherwise
    return Run, Session


class NoSearchClient:
    """The SageMaker client for the SDK, without ``sagemaker:Search``.

    Search has no resource-level permissions: a role allowed it reads every party's trial components
    (parameters and metrics) in the account. The SDK's ``Run`` calls it only to ask whether its trial
    component is already in its trial; this answers that question with ``ListTrialComponents``
    filtered by the trial (summaries: names and times, never parameters or metrics) and refuses any
    other search. Everything else goes to the wrapped boto client.
    """

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def search(self, **kwargs: Any) -> dict[str, Any]:
        filters = {f.get("Name"): f.get("Value") for f in kwargs.get("SearchExpression", {}).get("Filters", [])
                   if f.get("Operator") == "Equals"}
        if kwargs.get("Resource") != "ExperimentTrialComponent" or set(filters) != {"TrialComponentName",
                                                                                      "Parents.TrialName"}:
            raise TrackingError("sagemaker:Search is not used by this project (it would read every party's "
                                f"records); refused a search of {kwargs.get('Resource')!r}")
        name = filters["TrialComponentName"]
        pages = self._client.get_paginator("list_trial_components").paginate(TrialName=filters["Parents.TrialName"])
        found = any(s.get("TrialComponentName") == name for page in pages for s in page["TrialComponentSummaries"])
        return {"Results": [{"TrialComponent": {"TrialComponentName": name}}] if found else []}


def make_session(region: str | None = None, timeout: float = 5.0, max_attempts: int = 2,
                 boto_session: Any = None) -> Any:
    """A SageMaker SDK Session with telemetry off and fail-fast boto clients."""
    import boto3
    from botocore.config import Config

    _, Session = _sdk()
    boto = boto_session or boto3.Session(region_name=region or None)
    if not boto.region_name:
        raise TrackingError("no AWS region: set tracking.region or AWS_DEFAULT_REGION (or a profile's region)")
    config = Config(connect_timeout=timeout, read_timeout=timeout,
                    retries={"total_max_attempts": max_attempts, "mode": "standard"})
    return Session(boto_session=boto, sagemaker_config=TELEMETRY_OFF,
                   sagemaker_client=NoSearchClient(boto.client("sagemaker", config=config)),
                   sagemaker_metrics_client=boto.client("sagemaker-metrics", config=config))


class SageMakerTracker(Tracker):
    """One SageMaker Experiments run (trial component ``<experiment>-<run_name>``).

    Parameters and metrics are buffered; :meth:`flush` opens the run (created on first use,
    loaded if it exists) and sends them. ``flush_every`` sends automatically once that many
    rounds are buffered.
    """

    def __init__(self, experiment: str, run_name: str, *, region: str | None = None, timeout: float = 5.0,
                 max_attempts: int = 2, flush_every: int = 0, boto_session: Any = None) -> None:
        self.trial_component = trial_component_name(experiment, run_name)
        self.experiment, self.run_name = experiment, run_name
        self.flush_every = flush_every
        self._session_args = (region, timeout, max_attempts, boto_session)
        self._run: Any = None
        self._params: dict[str, Param] = {}
        self._metrics: list[tuple[str, float, int]] = []

    def log_params(self, params: Mapping[str, Param]) -> None:
        self._params.update({k: v if isinstance(v, int | float | str) and not isinstance(v, bool) else str(v)
                             for k, v in params.items()})

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        # The service rejects NaN/inf (a single-class test set has no AUC): leave them out.
        self._metrics += [(k, float(v), int(step)) for k, v in metrics.items()
                          if v is not None and math.isfinite(float(v))]
        if self.flush_every and len({s for *_, s in self._metrics}) >= self.flush_every:
            self.flush()

    def _open(self) -> Any:
        if self._run is None:
            Run, _ = _sdk()
            self._run = Run(experiment_name=self.experiment, run_name=self.run_name,
                            sagemaker_session=make_session(*self._session_args))
        return self._run

    def flush(self) -> None:
        if not self._params and not self._metrics:
            return
        params, self._params = self._params, {}
        metrics, self._metrics = self._metrics, []
        run = self._open()
        try:
            with run:  # entering/leaving saves the trial component; leaving sends the buffered metrics
                if params:
                    run.log_parameters(params)
                for name, value, step in metrics:
                    run.log_metric(name=name, value=value, step=step)
        finally:
            # A failed __enter__ leaves the run as the SDK's process-wide current run, which would make
            # every other run in this process fail ("nested with"): drop it.
            from sagemaker.core.experiments._run_context import _RunContext

            if _RunContext.get_current_run() is run:
                _RunContext.drop_current_run()
