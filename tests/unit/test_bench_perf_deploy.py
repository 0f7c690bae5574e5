"""bench/deploy_probe.py: which process group a deployment's process is in, and CPU/RSS per window."""

from __future__ import annotations

import pytest

from bench.deploy_probe import Probe, group_of

PY = "/venv/bin/python"


@pytest.mark.parametrize(("cmdline", "parent", "group"), [
    ([PY, "-m", "launcher.hospital", "--runtime-api-address", "127.0.0.1:1"], [PY, "bench/perf.py"], "launcher"),
    ([PY, "-m", "launcher.hospital", "--runtime-api-address", "127.0.0.1:1"],
     [PY, "-m", "launcher.hospital", "--runtime-api-address", "127.0.0.1:1"], "clientapp"),  # a forked child
    ([PY, "/venv/bin/flwr-clientapp", "--token", "x"], [PY, "/venv/bin/flower-superexec"], "clientapp"),
    ([PY, "/venv/bin/flower-superexec", "--insecure", "--runtime-api-address", "127.0.0.1:2"],
     [PY, "/venv/bin/flower-supernode", "--isolation", "subprocess"], "superexec (node)"),
    ([PY, "/venv/bin/flower-superexec", "--runtime-api-address", "127.0.0.1:3"],
     [PY, "/venv/bin/flower-superlink", "--host", "127.0.0.1"], "superexec (link)"),
    ([PY, "/venv/bin/flwr-serverapp", "--token", "x"], [], "serverapp"),
    ([PY, "/venv/bin/flower-supernode", "--superlink", "x"], [], "supernodes"),
    ([PY, "/venv/bin/flower-superlink", "--host", "x"], [], "superlink"),
    ([PY, "/venv/bin/flwr", "run", "."], [], "flwr cli"),
    (["sleep", "1"], [], "other"),
])
def test_each_process_of_a_deployment_has_its_group(cmdline: list[str], parent: list[str], group: str) -> None:
    assert group_of(cmdline, parent, is_root=False) == group


def test_a_window_is_the_cpu_between_two_samples_and_the_peak_rss_inside() -> None:
    probe = Probe(root=0)
    probe.timeline = [{"t": 10.0, "cpu": {"superlink": 1.0}, "rss": {"superlink": 2**20}},
                      {"t": 11.0, "cpu": {"superlink": 1.5, "clientapp": 2.0}, "rss": {"superlink": 2**20,
                                                                                       "clientapp": 3 * 2**20}},
                      {"t": 12.0, "cpu": {"superlink": 1.75, "clientapp": 2.0}, "rss": {"superlink": 2**20}}]
    window = probe.window(10.0, 12.0)
    assert window["cpu_s"] == {"superlink": 0.75, "clientapp": 2.0}
    assert window["cpu_total_s"] == 2.75
    assert window["peak_rss_mb"] == 4.0
