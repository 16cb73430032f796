"""docker-compose.yml and .env.example describe one deployment: every path a setting names is
mounted where the process that uses it runs, every host a URL names is a service, every
health condition has a healthcheck. Read as files (no podman: `make prod-check` runs them)."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from mailboxes.operator.health import ROUTES

ROOT = Path(__file__).resolve().parents[1]
PORTAL_SERVICES = {"migrate", "web", "worker", "store-worker", "beat", "dovecot", "gateway"}


def _example() -> dict[str, str]:
    found = {}
    for line in (ROOT / ".env.example").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            found[key.strip()] = value.strip()
    return found


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    return _example()


def _mounts(service: dict[str, Any]) -> dict[PurePosixPath, str]:
    """Container path -> source of a service's volumes (short syntax)."""
    mounts = {}
    for item in service.get("volumes", []):
        item = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", item)  # a variable's default
        source, target = item.split(":")[:2]
        mounts[PurePosixPath(target)] = source
    return mounts


def _mounted(service: dict[str, Any], path: str) -> bool:
    return any(
        PurePosixPath(path) == target or target in PurePosixPath(path).parents
        for target in _mounts(service)
    )


def test_every_variable_compose_reads_has_a_default(compose: dict[str, Any]) -> None:
    """`docker compose up` with only .env: PORTAL_ENV_FILE, PORTAL_IMAGE... are for the check."""
    text = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    variables = re.findall(r"\$\{([^}]*)\}", text)
    assert variables
    assert [v for v in variables if ":-" not in v] == []


def test_the_portal_services_share_one_image_and_env_file(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) >= PORTAL_SERVICES
    for name in PORTAL_SERVICES:
        assert services[name]["image"] == "${PORTAL_IMAGE:-mssante-portal:latest}", name
        assert services[name]["env_file"] == "${PORTAL_ENV_FILE:-.env}", name


def test_the_hosts_of_the_example_urls_are_services(
    compose: dict[str, Any], env: dict[str, str]
) -> None:
    for name in ("DATABASE_URL", "REDIS_URL"):
        host = re.match(r"\w+://(?:[^@/]*@)?([^:/]+)", env[name])
        assert host and host.group(1) in compose["services"], name


def test_the_paths_settings_name_are_mounted_where_they_are_used(
    compose: dict[str, Any], env: dict[str, str]
) -> None:
    services = compose["services"]
    var_dir = env["PORTAL_VAR_DIR"]
    export_dir = env["EXPORT_DIR"] or f"{var_dir}/exports"  # empty: the default
    crl_dir = str(PurePosixPath(env["TLS_CRL_FILE"]).parent)
    tls_files = [env[k] for k in env if k.startswith(("GATEWAY_", "RELAY_")) and
                 k.endswith(("_CERT", "_KEY", "_CA_BUNDLE"))]  # fmt: skip
    assert len(tls_files) == 6
    wanted = {
        # Dovecot's configuration and sockets: everyone who delivers, reads or lists BALs.
        env["DOVECOT_DIR"]: {"web", "worker", "store-worker", "dovecot", "gateway"},
        # The mail itself: Dovecot, and the worker that closes a BAL and deletes its Maildir.
        env["DOVECOT_MAIL_ROOT"]: {"dovecot", "store-worker"},
        export_dir: {"web", "worker", "store-worker"},
        crl_dir: {"worker", "gateway"},
        **{path: {"worker", "gateway"} for path in tls_files},
    }
    for path, users in wanted.items():
        for name in users:
            assert _mounted(services[name], path), f"{path} is not mounted in {name}"
    # Named volumes are shared, not one per service.
    for name in ("web", "store-worker"):
        assert _mounts(services[name])[PurePosixPath(export_dir)] == "exports"
    assert _mounts(services["store-worker"])[PurePosixPath(env["DOVECOT_MAIL_ROOT"])] == "mail"


def test_the_store_worker_consumes_the_store_queue_only(compose: dict[str, Any]) -> None:
    worker = compose["services"]["store-worker"]
    command = worker["command"]
    assert command[command.index("-Q") + 1] == "store"
    assert compose["services"]["worker"]["command"][
        compose["services"]["worker"]["command"].index("-Q") + 1
    ].split(",") == ["relay", "default"]
    # It rewrites Dovecot's list of BALs as root: the sockets must stay the portal user's.
    assert worker["environment"]["DOVECOT_SOCKET_USER"] == "portal"


def test_every_health_condition_has_a_healthcheck(compose: dict[str, Any]) -> None:
    services = compose["services"]
    healthy = {
        target
        for service in services.values()
        for target, condition in (service.get("depends_on") or {}).items()
        if condition["condition"] == "service_healthy"
    }
    assert {"postgres", "redis", "dovecot"} <= healthy
    for name in healthy | {"web"}:
        assert services[name].get("healthcheck", {}).get("test"), name


def test_the_web_healthcheck_asks_readiness_on_the_port_gunicorn_binds(
    compose: dict[str, Any],
) -> None:
    test = " ".join(compose["services"]["web"]["healthcheck"]["test"])
    url = re.search(r"http://127\.0\.0\.1:(\d+)(/[^'\"]*)", test)
    assert url, test
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert f'"0.0.0.0:{url.group(1)}"' in dockerfile
    assert url.group(2) == "/sante/pret/" and url.group(2) in ROUTES


def test_the_gateway_listens_where_compose_publishes_it(compose: dict[str, Any]) -> None:
    gateway = compose["services"]["gateway"]
    port = gateway["command"][gateway["command"].index("--port") + 1]
    assert [p.rsplit(":", 1)[1] for p in gateway["ports"]] == [port]
    assert compose["services"]["web"]["ports"][0].rsplit(":", 1)[1] == "8000"
