"""The SuperNode's Runtime API as the launcher uses it: the Flower internals it relies on, an HTTP
client for one component, and the refusal of a task (the error reply ``flwr-clientapp`` would send)."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("fedheart.launcher.hospital")

# Flower symbols this launcher relies on, by module (internals where Flower has no public entry point).
FLOWER_SYMBOLS: dict[str, tuple[str, ...]] = {
    "flwr.app": ("Error", "Message"),
    "flwr.common.constant": ("ErrorCode", "SubStatus"),
    "flwr.proto.runtime_pb2": ("AcquireTaskRequest",),
    "flwr.supercore.constant": ("TaskType",),
    "flwr.supercore.runtime": ("RuntimeHttpClient",),
    "flwr.supercore.interceptors": ("RuntimeTokenHttpInterceptor", "RuntimeVersionHttpInterceptor",
                                    "SuperExecAuthHttpInterceptor"),
    "flwr.supernode.runtime.run_clientapp": ("run_clientapp", "pull_task_input", "push_message",
                                             "push_task_output", "install_from_fab",
                                             "pull_and_inflate_object_from_tree"),
    "flwr.cli.install": ("install_from_fab",),
    "flwr.supercore.utils": ("get_flwr_home",),
}
ACQUIRE_TASK_METHOD = "/flwr.proto.Runtime/AcquireTask"  # what the SuperNode's SuperExec auth protects


@dataclass(frozen=True)
class RuntimeApi:
    """Where the SuperNode's Runtime API is and how to reach it (TLS, SuperExec auth)."""

    address: str
    insecure: bool = False
    root_certificates: bytes | None = None
    superexec_auth_secret: bytes | None = None

    def client(self, component: str, token: str | None = None) -> Any:
        """A ``RuntimeHttpClient``: as ``component`` (``SuperExec`` to acquire tasks, signed with the
        SuperExec secret if any; ``flwr-clientapp`` with a task's ``token``)."""
        from flwr.supercore.interceptors import (
            RuntimeTokenHttpInterceptor,
            RuntimeVersionHttpInterceptor,
            SuperExecAuthHttpInterceptor,
        )
        from flwr.supercore.runtime import RuntimeHttpClient

        interceptors: list[Any] = [RuntimeVersionHttpInterceptor(component_name=component)]
        if token is not None:
            interceptors.append(RuntimeTokenHttpInterceptor(token))
        elif self.superexec_auth_secret:
            interceptors.append(SuperExecAuthHttpInterceptor(master_secret=self.superexec_auth_secret,
                                                             protected_methods={ACQUIRE_TASK_METHOD}))
        # No retry invoker: Flower's retries forever; the launcher's loop bounds its own (--patience).
        return RuntimeHttpClient.from_server_address(
            server_address=self.address, insecure=self.insecure,
            root_certificates=None if self.insecure else self.root_certificates, interceptors=interceptors)


def refuse_task(client: Any, task: Any, reason: str) -> tuple[Any, Any, str]:
    """Answer the task with ``Error(INVALID_FAB, reason)`` and finish it as failed; returns the message
    and context pulled (None if the pull failed) and whether the reply was ``sent``.

    Mirrors the error path of Flower's ``run_clientapp`` (pull the input, push
    ``Message(Error(code, reason), reply_to=message)``, push the task output) without installing,
    importing or running anything of the bundle. The client is closed.
    """
    from flwr.app import Error, Message
    from flwr.common.constant import ErrorCode, SubStatus
    from flwr.supernode.runtime.run_clientapp import pull_task_input, push_message, push_task_output

    message = context = None
    sent = "not sent"
    try:
        message, context, _run, fab = pull_task_input(client)
        del fab  # the bundle's bytes: never unpacked
        push_message(client, Message(Error(code=ErrorCode.INVALID_FAB, reason=reason), reply_to=message), context)
        sent = "sent"
    except Exception as exc:  # the SuperNode replies for us once the token expires
        log.error("task %d of run %d: the error reply could not be sent: %s", task.task_id, task.run_id, exc)
        sent = f"not sent: {type(exc).__name__}"
    finally:
        with contextlib.suppress(Exception):
            push_task_output(client, context, SubStatus.FAILED, reason)
        client.close()
    return message, context, sent
