"""The fleet proxy: nginx in front of the SuperLink, serving only the Fleet API and /health to the public.

The nginx configuration is one template shared with Kubernetes, ``k8s/components/fleet-proxy/
nginx.conf.template`` (http-context directives with ``${NAME}`` placeholders, which the nginx image renders
with envsubst). :func:`render` fills it in with :class:`string.Template`; :class:`FleetProxy` wraps it in a
main configuration whose pid file, logs and temporary folders lie in its work folder and runs
``nginx -p PREFIX -c CONF -e ERROR_LOG -g 'daemon off;'`` on a free port, as root (its workers then run as
nginx's default unprivileged user, which only the master's files concern) or not.
"""

from __future__ import annotations

import re
import shutil
import ssl
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from launcher.flower import REPO_ROOT, FlowerError, Process, TlsFiles, free_port, health_ok, start_process, wait_until

TEMPLATE = REPO_ROOT / "k8s" / "components" / "fleet-proxy" / "nginx.conf.template"
# The Fleet API as flower-supernode 1.42 calls it (flwr/supernode/fleet_http_client.py), each a POST.
FLEET_ROUTES = tuple(f"/v1/fleet/{name}" for name in (
    "register-node", "activate-node", "deactivate-node", "unregister-node", "send-node-heartbeat",
    "pull-messages", "push-messages", "get-run", "get-fab", "push-object", "pull-object",
    "confirm-message-received"))
REFUSAL = "refused by the fleet proxy"  # the start of the 403 body of every refused request
_UNSAFE = re.compile(r"[\s;{}#$'\"\\]")  # would end or change an nginx directive


class ProxyError(FlowerError):
    """The proxy's template, a value for it, or nginx itself is wrong; the message says which."""


class _Placeholders(string.Template):
    """Only ``${NAME}`` (upper case) is a placeholder, as for envsubst with the variables defined; nginx's
    own ``$uri`` and the like stay as they are."""

    pattern = r"\$(?:(?P<escaped>(?!))|(?P<named>(?!))|\{(?P<braced>[A-Z][A-Z0-9_]*)\}|(?P<invalid>(?!)))"


def placeholders(text: str) -> list[str]:
    """The placeholder names in a template, in order of first use."""
    return list(dict.fromkeys(m.group("braced") for m in _Placeholders.pattern.finditer(text)))


def render(values: Mapping[str, str], template: Path = TEMPLATE) -> str:
    """The template with every placeholder replaced; :class:`ProxyError` names the template's line of a
    placeholder without a value, and any value that is unknown or would break the configuration."""
    text = template.read_text()
    names = placeholders(text)
    for name in names:
        if name not in values:
            line = next(i for i, row in enumerate(text.splitlines(), 1) if f"${{{name}}}" in row)
            raise ProxyError(f"{template}:{line}: no value for ${{{name}}}")
    for name, value in values.items():
        if name not in names:
            raise ProxyError(f"{template} has no placeholder ${{{name}}}")
        if not value or _UNSAFE.search(value):
            raise ProxyError(f"{name}={value!r}: empty, or holds a space, quote, ';', '{{', '}}', '#', '$' or "
                             "'\\', which nginx would read as the end or part of another directive")
    return _Placeholders(text).substitute(values)


def nginx_binary() -> str:
    """nginx on PATH or in /usr/sbin; :class:`ProxyError` saying how to install it."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if not found:
        raise ProxyError("nginx not found: install Debian's package (scripts/system-deps.sh, apt-get install nginx)")
    return found


@dataclass
class FleetProxy:
    """nginx listening on ``host:port`` with the SuperLink's certificate (``tls``), passing Fleet API calls and
    /health on to the SuperLink at ``upstream`` (host:port on loopback, TLS checked against ``tls.ca_cert``
    for ``upstream_name``) and refusing everything else. Its files lie under ``workdir``."""

    workdir: Path
    upstream: str
    tls: TlsFiles
    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    upstream_name: str = "localhost"
    process: Process | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def values(self) -> dict[str, str]:
        """The template's placeholders for this proxy."""
        return {"PROXY_LISTEN": self.address, "TLS_CERT": str(self.tls.server_cert),
                "TLS_KEY": str(self.tls.server_key), "SUPERLINK_ADDRESS": self.upstream,
                "SUPERLINK_CA": str(self.tls.ca_cert), "SUPERLINK_TLS_NAME": self.upstream_name}

    def write_config(self) -> Path:
        """Render the template into ``workdir/fleet.conf`` and the main configuration around it; returns the
        main configuration's path."""
        prefix = self.workdir.resolve()
        (prefix / "temp").mkdir(parents=True, exist_ok=True)
        (prefix / "fleet.conf").write_text(render(self.values))
        temp = "\n".join(f"    {kind}_temp_path {prefix / 'temp' / kind};"
                         for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        main = (f"worker_processes 1;\npid {prefix / 'nginx.pid'};\nerror_log {prefix / 'error.log'} notice;\n"
                "events {\n    worker_connections 256;\n}\n"
                f"http {{\n    access_log {prefix / 'access.log'};\n{temp}\n    include {prefix / 'fleet.conf'};\n}}\n")
        conf = prefix / "nginx.conf"
        conf.write_text(main)
        return conf

    def start(self, timeout: float = 60) -> FleetProxy:
        """Start nginx; returns once /health answers 200 through it (the SuperLink must be up)."""
        conf = self.write_config()
        prefix = conf.parent
        argv = [nginx_binary(), "-p", f"{prefix}/", "-c", str(conf), "-e", str(prefix / "error.log"),
                "-g", "daemon off;"]
        self.process = start_process("fleet-proxy", argv, {"PATH": "/usr/sbin:/usr/bin:/bin"},
                                     prefix / "nginx.log", cwd=prefix)
        context = ssl.create_default_context(cafile=str(self.tls.ca_cert))
        dial = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        try:
            wait_until(lambda: health_ok(f"https://{dial}:{self.port}/health", context), timeout,
                       f"fleet proxy on {self.address}", self.process.popen, prefix / "error.log")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """SIGTERM nginx (a fast shutdown of master and worker), SIGKILL what is left of its process group."""
        if self.process:
            self.process.stop()

    @property
    def log_path(self) -> Path:
        return self.workdir / "error.log"

    def access_log(self) -> str:
        path = self.workdir / "access.log"
        return path.read_text(errors="replace") if path.exists() else ""
