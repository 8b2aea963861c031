"""The command line: one-line errors, migrate, refusal to start unmigrated, API keys."""

from __future__ import annotations

import os
import subprocess
import sys

import asyncpg
from tests.conftest import with_database

from broadcaster import procs
from broadcaster.auth import find_api_key
from broadcaster.migrate import load_migrations


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "broadcaster", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "BROADCASTER_LOG_LEVEL": "warning", **(env or {})},
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_unreachable_database_is_one_line_naming_the_host() -> None:
    port = procs.free_port()
    for command in ("migrate", "serve", "dispatcher", "create-api-key --name x"):
        result = run(*command.split(), env={"DATABASE_URL": f"postgresql://u@127.0.0.1:{port}/d"})
        assert result.returncode == 1, result
        assert result.stderr.count("\n") == 1, result.stderr
        assert f"127.0.0.1:{port}" in result.stderr
        assert "Traceback" not in result.stderr


def test_bad_config_file_is_one_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "gw.toml"
    config.write_text('[[gateways]]\nname = "p"\ntype = "gatewayapi"\n')
    result = run("migrate", env={"BROADCASTER_CONFIG": str(config)})
    assert result.returncode == 1
    assert "base_url" in result.stderr and result.stderr.count("\n") == 1


async def test_migrate_then_services_start_and_keys_work(server_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    name = f"broadcaster_cli_{os.getpid()}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = with_database(server_url, name)
        env = {"DATABASE_URL": url}
        for command in ("serve", "api", "dispatcher"):
            refused = run(command, env=env)
            assert refused.returncode == 1
            assert "not migrated" in refused.stderr and "broadcaster migrate" in refused.stderr
        first = run("migrate", env=env)
        assert first.returncode == 0
        assert f"applied {len(load_migrations())} migration(s)" in first.stdout
        again = run("migrate", env=env)
        assert again.returncode == 0 and "up to date" in again.stdout
        no_gateways = run("dispatcher", env=env)
        assert no_gateways.returncode == 1 and "no gateways" in no_gateways.stderr
        created = run("create-api-key", "--name", "ops", env=env)
        assert created.returncode == 0
        key = created.stdout.strip()
        conn = await asyncpg.connect(url)
        try:
            found = await find_api_key(conn, key)
        finally:
            await conn.close()
        assert found is not None and found.name == "ops"
        bad_scope = run("create-api-key", "--name", "x", "--scope", "root", env=env)
        assert bad_scope.returncode == 1 and "unknown scope" in bad_scope.stderr
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def test_simulator_protocol_switch() -> None:
    unknown = run("simulate-gateway", "--protocol", "carrier-pigeon")
    assert unknown.returncode == 2
    assert "carrier-pigeon" in unknown.stderr and unknown.stderr.count("\n") == 1
    help_text = run("simulate-gateway", "--protocol", "gatewayapi", "--help")
    assert help_text.returncode == 0 and "--delivered-ratio" in help_text.stdout


def test_misspelt_gateway_setting_refuses_to_start_naming_gateway_and_key(tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "gw.toml"
    entry = '[[gateways]]\nname = "primary"\ntype = "gatewayapi"\nbase_url = "http://x"\n'
    for extra, words in (
        ("rate_per_secnd = 300\n", ("'primary'", "'rate_per_secnd'", "'rate_per_second'")),
        ("window = 64\n", ("'primary'", "'window'")),  # an SMPP option on a GatewayAPI gateway
        ('type_ = "smpp"\n', ("'primary'", "'type_'")),
    ):
        config.write_text(entry + extra)
        for command in ("serve", "dispatcher", "api", "migrate"):
            result = run(command, env={"BROADCASTER_CONFIG": str(config)})
            assert result.returncode == 1, result
            assert result.stderr.count("\n") == 1, result.stderr
            assert all(w in result.stderr for w in words), result.stderr
    config.write_text(entry.replace("gatewayapi", "smpp") + 'window = "ten"\n')
    result = run("serve", env={"BROADCASTER_CONFIG": str(config)})
    assert result.returncode == 1 and "'primary': window:" in result.stderr, result.stderr
