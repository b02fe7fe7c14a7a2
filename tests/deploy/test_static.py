"""The deployment files, checked without Docker or Kubernetes: they parse, agree with each other and with the
code (ports, probe paths, setting names, timeouts), nginx accepts its config, and the package the image
installs contains what the code needs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import ENV_PREFIX, Settings, load_settings
from gateway.models.loader import load_registry
from gateway.ops import prefork
from tests.conftest import EXAMPLE_MODELS
from tests.deploy.harness import GUNICORN_CONF, NGINX_CONF, Nginx, clean_environ
from tests.server import ROOT

DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
SETTING_NAMES = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}
HEARTBEAT = Settings.model_fields["heartbeat"].default
DEFAULT_DRAIN = Settings.model_fields["drain_seconds"].default


def seconds(text: str) -> float:
    """An nginx or compose duration ("120s", "2m", "40s", "1m30s") in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)?", text.strip())
    assert parts, text
    return sum(float(number) * units[unit or "s"] for number, unit in parts)


# -- GATEWAY_* names ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [DOCKERFILE, COMPOSE, NGINX_CONF, GUNICORN_CONF, DEPLOY / "README.md", *sorted(K8S.glob("*.yaml"))],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_every_gateway_variable_is_a_setting(path: Path) -> None:
    used = set(re.findall(r"\bGATEWAY_[A-Z0-9_]+\b", path.read_text()))
    unknown = used - SETTING_NAMES - {"GATEWAY_"}
    assert not unknown, f"{path.name} uses variables that gateway.config.Settings does not read: {unknown}"


# -- nginx ---------------------------------------------------------------------------------------------


def nginx_block(text: str, header: str) -> str:
    """The body of the first block whose header matches the regex `header` (braces balanced)."""
    match = re.search(header + r"\s*\{", text)
    assert match is not None, f"no block {header!r}"
    depth, start = 1, match.end()
    for index in range(start, len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return text[start:index]
    raise AssertionError(f"unbalanced block {header!r}")


def top_level(block: str) -> str:
    """`block` without its nested blocks: the directives that apply at its own level."""
    kept, depth = [], 0
    for char in block:
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        elif depth == 0:
            kept.append(char)
    return "".join(kept)


def directives(block: str, name: str) -> list[str]:
    return [m.group(1).strip() for m in re.finditer(rf"^\s*{name}\s+([^;]*);", block, flags=re.MULTILINE)]


def test_nginx_accepts_the_config(tmp_path: Path) -> None:
    nginx = Nginx(tmp_path / "nginx", ["127.0.0.1:3001", "127.0.0.1:3002"])
    result = nginx.check()
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_nginx_streams_unbuffered_uncompressed_and_long_lived() -> None:
    text = re.sub(r"#[^\n]*", "", NGINX_CONF.read_text())
    server = nginx_block(text, r"\bserver")
    stream = nginx_block(server, r"location ~ /change-stream\$")
    assert directives(stream, "proxy_buffering") == ["off"]
    assert directives(stream, "gzip") == ["off"]
    assert seconds(directives(stream, "proxy_read_timeout")[0]) >= 4 * HEARTBEAT
    assert "http_503" in directives(stream, "proxy_next_upstream")[0]  # a draining worker's 503: next one
    assert directives(stream, "proxy_intercept_errors") == ["on"]
    assert not any("last-event-id" in d.lower() for d in directives(text, "proxy_set_header"))  # passed as is
    # HTTP/1.1 keep-alive to the upstreams, closed by nginx before gunicorn closes them.
    assert directives(top_level(server), "proxy_http_version") == ["1.1"]
    assert 'Connection ""' in directives(top_level(server), "proxy_set_header")
    upstream = nginx_block(text, r"upstream gateway")
    assert int(directives(upstream, "keepalive")[0]) > 0
    assert seconds(directives(upstream, "keepalive_timeout")[0]) < prefork.KEEPALIVE
    # Retries: connection errors and timeouts everywhere (nginx itself never re-sends a POST it delivered).
    assert directives(top_level(server), "proxy_next_upstream") == ["error timeout"]
    assert "non_idempotent" not in text
    forwarded = " ".join(directives(server, "proxy_set_header"))
    for header in ("X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Request-ID"):
        assert header in forwarded
    # The access log never records query strings (they may carry ?access_token=).
    log_format = nginx_block(
        text.replace("log_format gateway_json escape=json", "log_format {"), r"log_format"
    )
    assert "$request_uri" not in text
    assert "$args" not in log_format
    assert '$request"' not in log_format


def test_nginx_upstream_is_the_compose_service() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    servers = directives(nginx_block(NGINX_CONF.read_text(), r"upstream gateway"), "server")
    assert [s.split()[0] for s in servers] == ["gateway:3000"]
    assert "gateway" in compose["services"]
    assert _compose_port(compose) == 3000


# -- gunicorn ------------------------------------------------------------------------------------------


RESOLVE_GUNICORN_CONFIG = """
import json, sys
from gunicorn.app.wsgiapp import WSGIApplication
sys.argv = ["gunicorn", *sys.argv[1:]]
settings = WSGIApplication("%(prog)s [OPTIONS] [APP_MODULE]").cfg.settings
print(json.dumps({name: repr(setting.get()) for name, setting in settings.items()}))
"""


def gunicorn_config(env: dict[str, str], *args: str) -> dict[str, str]:
    """gunicorn's resolved settings (as reprs) for deploy/gunicorn.conf.py under `env` and `args`, the way
    gunicorn itself reads its config file and command line, without loading the application."""
    result = subprocess.run(
        [sys.executable, "-c", RESOLVE_GUNICORN_CONFIG, "-c", str(GUNICORN_CONF), *args],
        env={**clean_environ(), "GATEWAY_BROKER_URL": "redis://127.0.0.1:6379/0", **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    settings: dict[str, str] = json.loads(result.stdout.strip().splitlines()[-1])
    return settings


def test_gunicorn_conf_defaults() -> None:
    config = gunicorn_config({})
    assert config["wsgi_app"] == "'gateway.app:create_app()'"
    assert config["worker_class"] == "'gateway.ops.httpguard.GuardedUvicornWorker'"
    assert config["bind"] == "['0.0.0.0:3000']"
    assert int(config["workers"]) == prefork.available_cpus()
    assert int(config["graceful_timeout"]) > DEFAULT_DRAIN
    assert int(config["timeout"]) >= int(config["graceful_timeout"])
    assert int(config["keepalive"]) == prefork.KEEPALIVE
    assert config["preload_app"] == "False"  # prometheus multiprocess mode and per-worker connections
    assert config["accesslog"] == "None"  # the request log middleware logs requests
    assert config["control_socket_disable"] == "True"


@pytest.mark.parametrize(
    ("env", "args", "bind", "workers"),
    [
        ({"PORT": "8123", "WEB_CONCURRENCY": "3"}, [], "['0.0.0.0:8123']", 3),
        (
            {"PORT": "8123", "GATEWAY_BIND": "127.0.0.1:9000", "GATEWAY_WORKERS": "5"},
            [],
            "['127.0.0.1:9000']",
            5,
        ),
        (
            {"GATEWAY_BIND": "127.0.0.1:9000,127.0.0.1:9001"},
            ["--workers", "1"],
            "['127.0.0.1:9000', '127.0.0.1:9001']",
            1,
        ),
        (
            {"GATEWAY_BIND": "127.0.0.1:9000", "GATEWAY_WORKERS": "5"},
            ["--bind", "127.0.0.1:7000", "--workers", "7"],
            "['127.0.0.1:7000']",
            7,
        ),
    ],
    ids=["port-and-web-concurrency", "gateway-settings-win", "several-binds", "command-line-wins"],
)
def test_gunicorn_conf_bind_and_workers(
    env: dict[str, str], args: list[str], bind: str, workers: int
) -> None:
    config = gunicorn_config(env, *args)
    assert config["bind"] == bind
    assert int(config["workers"]) == workers


def test_gunicorn_conf_timeouts_follow_the_drain_window() -> None:
    config = gunicorn_config({"GATEWAY_DRAIN_SECONDS": "40"})
    assert int(config["graceful_timeout"]) >= 40 + 10
    assert int(config["timeout"]) >= int(config["graceful_timeout"])


def test_gunicorn_conf_names_a_wrong_setting() -> None:
    result = subprocess.run(
        [sys.executable, "-c", RESOLVE_GUNICORN_CONFIG, "-c", str(GUNICORN_CONF)],
        env={**clean_environ(), "GATEWAY_DRAIN_SECONDS": "-1"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "GATEWAY_DRAIN_SECONDS" in result.stderr


def test_gunicorn_refuses_several_workers_on_the_memory_broker(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            str(GUNICORN_CONF),
            "--bind",
            "127.0.0.1:0",
            "--workers",
            "2",
        ],
        env={**clean_environ(), "GATEWAY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/x.db"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "memory broker serves one process" in result.stderr
    assert "GATEWAY_BROKER_URL=redis://" in result.stderr
    assert "Booting worker" not in result.stderr


# -- Dockerfile ----------------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def ignored(path: str) -> bool:
    """Whether .dockerignore keeps `path` (relative to the repository) out of the build context."""
    excluded = False
    for line in DOCKERIGNORE.read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = Path(path).parts
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        if any(
            fnmatch(prefix, pattern) or fnmatch(prefix, pattern.removeprefix("**/")) for prefix in prefixes
        ):
            excluded = not negate
    return excluded


def test_dockerfile_is_multi_stage_small_and_non_root() -> None:
    instructions = dockerfile_instructions()
    bases = [rest for keyword, rest in instructions if keyword == "FROM"]
    assert len(bases) >= 2
    assert all("slim" in base or "alpine" in base or "distroless" in base for base in bases)
    stage = final_stage()
    users = [rest for keyword, rest in stage if keyword == "USER"]
    assert users
    assert users[-1].split(":")[0] not in ("root", "0")
    assert not any(
        keyword == "RUN" and ("apt-get" in rest or "pip install" in rest) for keyword, rest in stage
    )


def test_dockerfile_serves_with_gunicorn_and_checks_health() -> None:
    stage = final_stage()
    command = json.loads(next(rest for keyword, rest in stage if keyword in ("CMD", "ENTRYPOINT")))
    assert command[:3] == ["gunicorn", "-c", "/app/deploy/gunicorn.conf.py"]
    copies = [rest.split() for keyword, rest in stage if keyword == "COPY" and not rest.startswith("--from")]
    workdir = next(rest for keyword, rest in stage if keyword == "WORKDIR")
    assert any(src == "deploy/gunicorn.conf.py" and f"{workdir}/{dst}" == command[2] for src, dst in copies)
    healthcheck = next(rest for keyword, rest in stage if keyword == "HEALTHCHECK")
    assert "gateway.ops.probe" in healthcheck
    assert "/healthz" in healthcheck
    assert (ROOT / "gateway" / "ops" / "probe.py").exists()
    env = " ".join(rest for keyword, rest in stage if keyword == "ENV")
    port = int(re.search(r"\bPORT=(\d+)", env).group(1))  # type: ignore[union-attr]
    assert [rest for keyword, rest in stage if keyword == "EXPOSE"] == [str(port)]
    models = re.search(r"GATEWAY_MODELS=(\S+)", env).group(1)  # type: ignore[union-attr]
    assert any(f"{workdir}/{dst}" == models for _, dst in copies)


def test_docker_context_keeps_what_the_image_copies() -> None:
    sources = []
    for keyword, rest in dockerfile_instructions():
        if keyword == "COPY" and not rest.startswith("--from"):
            sources += rest.split()[:-1]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not ignored(source), f".dockerignore excludes {source}, which the Dockerfile copies"
    for heavy in (".venv", ".git", "tests", "gateway.db"):
        assert ignored(heavy), f".dockerignore should exclude {heavy}"


def test_the_installed_package_has_its_data_files() -> None:
    """The image installs the package (not an editable checkout, as the dev venv does): every file the code
    reads at run time (the Lua scripts, py.typed) must be declared package data."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = project["tool"]["setuptools"]["package-data"]["gateway"]
    package = ROOT / "gateway"
    data_files = [
        path.relative_to(package).as_posix()
        for path in package.rglob("*")
        if path.is_file() and path.suffix not in (".py", ".pyc") and "__pycache__" not in path.parts
    ]
    assert any(name.endswith(".lua") for name in data_files)
    for name in data_files:
        assert any(fnmatch(name, pattern) for pattern in patterns), f"gateway/{name} is not package data"


def test_pyproject_declares_the_production_server() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    names = {
        re.split(r"[\[<>=!~ ]", requirement, maxsplit=1)[0]
        for requirement in project["project"]["dependencies"]
    }
    assert {"gunicorn", "uvicorn-worker", "uvicorn", "prometheus-client"} <= names


# -- compose ---------------------------------------------------------------------------------------------


def _compose_port(compose: dict[str, Any]) -> int:
    env = compose["services"]["gateway"]["environment"]
    bind = env.get("GATEWAY_BIND") or f"0.0.0.0:{env.get('PORT', prefork.DEFAULT_PORT)}"
    return int(bind.rsplit(":", 1)[1])


def test_compose_runs_the_whole_deployment() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert {"postgres", "redis", "migrate", "gateway", "nginx"} <= set(services)
    gateway, migrate, nginx = services["gateway"], services["migrate"], services["nginx"]
    assert gateway["deploy"]["replicas"] == 3
    assert migrate["command"] == ["gateway", "migrate"]
    assert migrate["restart"] == "no"
    assert gateway["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert nginx["depends_on"]["gateway"]["condition"] == "service_healthy"
    for name in ("gateway", "migrate"):
        build = services[name]["build"]
        assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
    mounts = [m.split(":") for m in nginx["volumes"]]
    assert [
        (COMPOSE.parent / src).resolve() for src, dst, *_ in mounts if dst == "/etc/nginx/nginx.conf"
    ] == [NGINX_CONF]
    env = gateway["environment"]
    settings = load_settings(
        **{k.removeprefix(ENV_PREFIX).lower(): v for k, v in env.items() if k in SETTING_NAMES}
    )
    assert not settings.uses_memory_broker
    assert settings.log_format == "json"
    # Docker SIGKILLs a container stop_grace_period after SIGTERM: it must outlast gunicorn's graceful stop.
    assert seconds(gateway["stop_grace_period"]) > prefork.graceful_timeout(settings)
    assert migrate["environment"] == env


# -- Kubernetes ------------------------------------------------------------------------------------------


def k8s_objects() -> dict[tuple[str, str], dict[str, Any]]:
    objects = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                objects[(document["kind"], document["metadata"]["name"])] = document
    return objects


def k8s_settings(objects: dict[tuple[str, str], dict[str, Any]]) -> dict[str, str]:
    env = dict(objects[("ConfigMap", "gateway-config")]["data"])
    env.update(objects[("Secret", "gateway-secrets")]["stringData"])
    return env


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(
        p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml"
    )


def test_k8s_has_every_object() -> None:
    kinds = {kind for kind, _ in k8s_objects()}
    assert kinds >= {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "Job",
        "ConfigMap",
        "Secret",
        "PodDisruptionBudget",
    }


def test_k8s_settings_are_valid_and_secrets_stay_secret() -> None:
    objects = k8s_objects()
    env = k8s_settings(objects)
    settings = load_settings(
        **{k.removeprefix(ENV_PREFIX).lower(): v for k, v in env.items() if k in SETTING_NAMES}
    )
    assert not settings.uses_memory_broker
    assert settings.create_tables is False  # the Job migrates
    config = objects[("ConfigMap", "gateway-config")]["data"]
    assert "GATEWAY_DATABASE_URL" not in config
    assert "GATEWAY_BROKER_URL" not in config


def test_k8s_deployment_probes_ports_and_shutdown() -> None:
    objects = k8s_objects()
    deployment = objects[("Deployment", "gateway")]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = k8s_settings(objects)
    settings = load_settings(
        **{k.removeprefix(ENV_PREFIX).lower(): v for k, v in env.items() if k in SETTING_NAMES}
    )
    port = int(prefork.bind_addresses(settings, {})[0].rsplit(":", 1)[1])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": port}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    # preStop: leave the endpoints before SIGTERM; then gunicorn drains within its graceful timeout; the
    # kubelet's SIGKILL comes only after all of it.
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = float(command[1])
    assert pre_stop >= 2
    grace = pod["terminationGracePeriodSeconds"]
    assert grace > settings.drain_seconds
    assert grace > pre_stop + prefork.graceful_timeout(settings)
    # Non-root, and the writable paths gunicorn needs exist.
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert "/tmp" in {m["mountPath"] for m in container["volumeMounts"]}
    references = {r.get("configMapRef", r.get("secretRef"))["name"] for r in container["envFrom"]}
    assert references == {"gateway-config", "gateway-secrets"}
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = objects[("Service", "gateway")]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] in ("http", port)
    pdb = objects[("PodDisruptionBudget", "gateway")]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = objects[("HorizontalPodAutoscaler", "gateway")]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "gateway"}
    assert hpa["spec"]["minReplicas"] >= 2


def test_k8s_migration_job_and_models(tmp_path: Path) -> None:
    objects = k8s_objects()
    job = objects[("Job", "gateway-migrate")]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["gateway", "migrate"]
    deployment = objects[("Deployment", "gateway")]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == deployment["image"]
    assert container["envFrom"] == deployment["envFrom"]
    models = objects[("ConfigMap", "gateway-models")]["data"]
    for name, text in models.items():
        (tmp_path / name).write_text(text)
    assert [m.name for m in load_registry(tmp_path).models] == [
        m.name for m in load_registry(EXAMPLE_MODELS).models
    ]
    assert json.loads(models["todo.json"]) == json.loads((EXAMPLE_MODELS / "todo.json").read_text())
