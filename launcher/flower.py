"""Drive Flower's CLI: SuperLink and SuperNode processes, connections in $FLWR_HOME, node
registration, runs and their status.

The names live in three modules and are importable from here too: :mod:`launcher.flower_tools`
(environment, processes, waiting), :mod:`launcher.superlink` (the SuperLink and the ``flwr`` commands),
:mod:`launcher.supernode` (SuperNodes).
"""

from launcher.flower_tools import (
    FINISHED,
    FLOWER_ENV,
    REPO_ROOT,
    FlowerError,
    Process,
    TlsFiles,
    flower_env,
    free_port,
    health_ok,
    start_process,
    tool,
    wait_until,
)
from launcher.superlink import (
    SuperLink,
    flwr_json,
    list_supernodes,
    register_supernode,
    run_status,
    stop_run,
    submit_run,
    toml_string,
    wait_for_run,
)
from launcher.supernode import (
    SUPERNODE_MAX_RETRIES,
    SUPERNODE_MAX_WAIT_S,
    SuperNode,
    node_config_arg,
    wait_for_nodes,
)

__all__ = [
    "FINISHED",
    "FLOWER_ENV",
    "REPO_ROOT",
    "SUPERNODE_MAX_RETRIES",
    "SUPERNODE_MAX_WAIT_S",
    "FlowerError",
    "Process",
    "SuperLink",
    "SuperNode",
    "TlsFiles",
    "flower_env",
    "flwr_json",
    "free_port",
    "health_ok",
    "list_supernodes",
    "node_config_arg",
    "register_supernode",
    "run_status",
    "start_process",
    "stop_run",
    "submit_run",
    "toml_string",
    "tool",
    "wait_for_nodes",
    "wait_for_run",
    "wait_until",
]
