"""The service as child processes for tests: the gateway simulator, `broadcaster serve`/`api`/
`dispatcher` on free ports, a gateways file, all stopped by PID (the `stack` fixture in
conftest.py stops them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from broadcaster import procs

TOKEN = "e2e-token"
SECRET = "e2e-webhook-secret-0123456789abcdef"
TWILIO_TOKEN = "ACe2e:e2e-auth-token"


@dataclass
class Stack:
    db_url: str
    log_dir: Path
    tmp: Path
    children: list[procs.Child] = field(default_factory=list)
    sim_url: str = ""
    api_url: str = field(default_factory=lambda: f"http://127.0.0.1:{procs.free_port()}")
    config: Path | None = None

    def start_simulator(self, *args: str, protocol: str = "gatewayapi") -> None:
        port = procs.free_port()
        if protocol == "twilio":
            auth = ["--token", TWILIO_TOKEN]
        else:
            auth = ["--token", TOKEN, "--webhook-secret", SECRET]
        argv = procs.broadcaster_argv(
            "simulate-gateway",
            "--protocol",
            protocol,
            "--port",
            str(port),
            *auth,
            "--seed",
            "1",
            *args,
        )
        self.children.append(
            procs.start("simulator", argv, env={}, log_dir=self.log_dir, ready_line="listening on")
        )
        self.sim_url = f"http://127.0.0.1:{port}"

    def write_config(
        self, rate: float, max_batch: int = 1000, concurrency: int = 4, kind: str = "gatewayapi"
    ) -> None:
        self.config = self.tmp / "gateways.toml"
        token = TWILIO_TOKEN if kind == "twilio" else TOKEN
        self.config.write_text(
            f'[[gateways]]\nname = "primary"\ntype = "{kind}"\nbase_url = "{self.sim_url}"\n'
            f'token = "{token}"\nwebhook_secret = "{SECRET}"\nrate_per_second = {rate}\n'
            f'max_batch = {max_batch}\nconcurrency = {concurrency}\nsender = "+4570000000"\n'
        )

    def env(self, **extra: str) -> dict[str, str]:
        assert self.config is not None and self.api_url
        return {
            "DATABASE_URL": self.db_url,
            "BROADCASTER_CONFIG": str(self.config),
            "BROADCASTER_PUBLIC_URL": self.api_url,
            "BROADCASTER_POLL_INTERVAL": "0.2",
            "BROADCASTER_LOG_LEVEL": "warning",
            **extra,
        }

    def start_service(self, command: str = "serve", **extra: str) -> None:
        port = self.api_url.rsplit(":", 1)[1]
        self.children.append(
            procs.start(
                command,
                procs.broadcaster_argv(command),
                env=self.env(BROADCASTER_PORT=port, **extra),
                log_dir=self.log_dir,
                ready_url=f"{self.api_url}/readyz",
            )
        )

    def start_dispatcher(self, name: str, **extra: str) -> procs.Child:
        env = self.env(**{"BROADCASTER_LOG_LEVEL": "info", **extra})
        child = procs.start(
            name,
            procs.broadcaster_argv("dispatcher"),
            env=env,
            log_dir=self.log_dir,
            ready_line="dispatcher started",
            timeout=30,
        )
        self.children.append(child)
        return child
