"""In-process Flower: a Grid that hands each message to a ClientApp in this Python process.

For tests and benchmarks that need real Flower messages, mods and strategies without a SuperLink
or Ray: every message is serialised and rebuilt (as on the network), delivered to its node's ClientApp with
that node's own Context (kept across messages, as a SuperNode keeps it for a run), and the reply
copied back. Serialised bytes (both ways) and the ClientApp's CPU time are counted per node and
message type.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.serverapp import Grid
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects
from flwr.supercore.inflatable.inflatable_utils import inflate_object_from_contents
from flwr.supercore.task_identity import TaskIdentity

FailWhen = Callable[[int, Message], bool]


def transmit(message: Message) -> tuple[Message, int]:
    """The message as the receiver gets it (serialised and rebuilt, as Flower does), and its bytes.

    The bytes are those of Flower's serialised objects (metadata, records, arrays; each distinct
    object once), without the transport's framing.
    """
    contents = {oid: obj.deflate() for oid, obj in get_all_nested_objects(message).items()}
    size = sum(len(c) for c in contents.values())
    return inflate_object_from_contents(message.object_id, contents), size  # type: ignore[return-value]


class LoopbackGrid(Grid):
    """Nodes ``1..n`` with the given node configs, all served by ``app`` in this process.

    ``fail(node_id, message)`` true makes that node answer the message with an error, as a
    crashing ClientApp would (to test dropouts). Like a ServerApp process, this process gets the
    server's task identity (Flower stamps it on every new message).
    """

    def __init__(self, app: ClientApp, node_configs: list[dict[str, Any]], run_id: int = 1,
                 fail: FailWhen | None = None) -> None:
        self.app = app
        self.run_id = run_id
        self.fail = fail
        TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, run_id, SUPERLINK_NODE_ID
        self.contexts = {i + 1: Context(run_id=run_id, node_id=i + 1, node_config=dict(cfg), state=RecordDict(),
                                        run_config={}) for i, cfg in enumerate(node_configs)}
        self.bytes_sent: Counter[tuple[int, str]] = Counter()  # (node, message type) -> bytes to the node
        self.bytes_received: Counter[tuple[int, str]] = Counter()  # ... and from it
        self.client_cpu_s: Counter[tuple[int, str]] = Counter()  # CPU seconds the ClientApp spent on it

    def set_run(self, run: Any) -> None:
        raise NotImplementedError("LoopbackGrid has no run to set")

    @property
    def run(self) -> Any:
        raise NotImplementedError("LoopbackGrid has no Run object")

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        raise NotImplementedError("use send_and_receive")

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        raise NotImplementedError("use send_and_receive")

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        replies = []
        for sent in messages:
            node, kind = sent.metadata.dst_node_id, sent.metadata.message_type
            delivered, size = transmit(sent)
            self.bytes_sent[node, kind] += size
            if self.fail and self.fail(node, delivered):
                reply = Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, "failed on purpose"), reply_to=sent)
            else:
                started = time.process_time()
                try:
                    reply = self.app(delivered, self.contexts[node])
                except Exception as exc:  # a ClientApp that raises answers with an error message
                    reply = Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, f"{type(exc).__name__}: {exc}"),
                                    reply_to=sent)
                finally:
                    self.client_cpu_s[node, kind] += time.process_time() - started
            received, size = transmit(reply)
            self.bytes_received[node, kind] += size
            replies.append(received)
        return replies
