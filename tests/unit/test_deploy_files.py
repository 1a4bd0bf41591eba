"""Deployment files, checked statically against the code (no Docker engine or cluster runs here).

docker-compose.yml, deploy/k8s/*.yaml and deploy/Dockerfile must agree with what the services actually read
and run: every command is a real `fashion` (or alembic / celery) command with a real target, every FASHION_*
variable is a field of a settings class and the ones a service cannot do without are set, ports, health
probes and service addresses line up, GPUs go to exactly the model services, and the files validate against
the compose specification and the Kubernetes schemas.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import json
import re
import sys
import tomllib
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import grpc
import pytest
import yaml

from services.stack import MODEL_TARGETS, TARGETS, parse_targets

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
CPU_OVERRIDE = ROOT / "deploy" / "compose.cpu.yml"
ENV_EXAMPLE = ROOT / "deploy" / "compose.env.example"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / "deploy" / "Dockerfile.dockerignore"
K8S_DIR = ROOT / "deploy" / "k8s"
DEPLOY_DOC = ROOT / "docs" / "DEPLOY.md"
K8S_VERSION = "1.33.0"
NAMESPACE = "fashion"
INFRA_PORTS = {"kafka": 9092, "qdrant": 6333, "postgres": 5432, "redis": 6379, "prometheus": 9090}
# Settings a deployed service cannot do without: unset, they fall back to the single-machine defaults
# (127.0.0.1, a local broker, SQLite, Qdrant Edge, an in-process model).
REQUIRED_ENV = {
    "model": {"FASHION_HOST", "FASHION_PORT", "FASHION_CHECKPOINT", "FASHION_DATABASE_URL", "FASHION_QDRANT_URL"},
    "search": {"FASHION_HOST", "FASHION_PORT", "FASHION_KAFKA_BOOTSTRAP", "FASHION_DATABASE_URL",
               "FASHION_QDRANT_URL", "FASHION_ANALYSIS_ADDRESS"},
    "ingest": {"FASHION_KAFKA_BOOTSTRAP", "FASHION_KAFKA_PARTITIONS", "FASHION_DATABASE_URL", "FASHION_QDRANT_URL",
               "FASHION_ANALYSIS_ADDRESS"},
    "admin": {"FASHION_HOST", "FASHION_PORT", "FASHION_DATABASE_URL", "FASHION_QDRANT_URL",
              "FASHION_ANALYSIS_ADDRESS", "FASHION_REDIS_URL", "FASHION_ADMIN_TOKEN",
              "FASHION_KAFKA_BOOTSTRAP"},  # ListDeadLetters reads the DLQ topics
    "retrain-worker": {"FASHION_DATABASE_URL", "FASHION_QDRANT_URL", "FASHION_REDIS_URL", "FASHION_RUNS_DIR"},
    "migrate": {"FASHION_DATABASE_URL"},
    "seed-model": set(),
    "console": {"FASHION_CONSOLE_HOST", "FASHION_CONSOLE_PORT", "FASHION_CONSOLE_GRPC_ADDRESS",
                "FASHION_CONSOLE_ADMIN_ADDRESS"},
}
BUILD_TOOLS = ("gcc", "g++", "clang", "build-essential", "make", "cmake", "python3-dev", "libpq-dev", "pip install")


def _load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"deploy_{name}", ROOT / "deploy" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


settings_table = _load_script("settings_table")
healthcheck = _load_script("healthcheck")


def _validator(module: str, requirement: str) -> ModuleType:
    """A schema validator the dev extra pins. Skipped only while pyproject.toml does not list it yet;
    listed but missing is a failure (run `make install`)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        dev = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
        if any(re.split(r"[=<>!~\[ ]", dep, maxsplit=1)[0].lower() == requirement for dep in dev):
            raise
        pytest.skip(f"{requirement} is not in pyproject's dev extra yet: schema validation skipped")


# -- loading ----------------------------------------------------------------------------------------------------
class Tagged(NamedTuple):
    """A compose YAML tag such as `!reset []` (Compose >= 2.24 merge control)."""

    tag: str
    value: Any


class _ComposeLoader(yaml.SafeLoader):
    pass


def _construct_tagged(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Tagged:
    if isinstance(node, yaml.SequenceNode):
        value: Any = loader.construct_sequence(node, deep=True)
    elif isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    else:
        value = loader.construct_scalar(node)
    return Tagged("!" + suffix, value)


_ComposeLoader.add_multi_constructor("!", _construct_tagged)

_INTERPOLATION = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, $$ -> $, recursively."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match) -> str:
        if match.group(1):
            return "$"
        name, op, arg = match.group(2) or match.group(5), match.group(3), match.group(4) or ""
        current = env.get(name)
        if op in (":-", "-"):
            return arg if (current is None or (op == ":-" and not current)) else current
        if op in (":?", "?") and (current is None or (op == ":?" and not current)):
            raise AssertionError(f"compose needs {name}: {arg}")
        if op in (":+", "+"):
            return arg if current else ""
        return current or ""

    return _INTERPOLATION.sub(substitute, value)


def interpolation_defaults(text: str) -> dict[str, str]:
    return {m.group(2): m.group(4) or "" for m in _INTERPOLATION.finditer(text) if m.group(2)}


@functools.cache
def compose_raw() -> dict:
    return yaml.load(COMPOSE_FILE.read_text(), Loader=_ComposeLoader)


@functools.cache
def compose() -> dict:
    """The compose file as Docker Compose sees it with no .env: defaults substituted, x- extensions dropped."""
    return {k: v for k, v in interpolate(compose_raw(), {}).items() if not k.startswith("x-")}


@functools.cache
def k8s_documents() -> tuple[tuple[str, dict], ...]:
    docs = []
    for path in sorted(K8S_DIR.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return tuple(docs)


def k8s_objects(kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for _, doc in k8s_documents() if doc["kind"] == kind}


# -- workloads: one container's command and environment, whatever file it comes from ---------------------------
@dataclass
class Workload:
    where: str  # "compose:search", "k8s:Deployment/search"
    name: str
    argv: list[str]  # entrypoint + arguments
    env: dict[str, str]
    env_names: set[str] = field(default_factory=set)  # FASHION_* names this container is given

    @property
    def role(self) -> str:
        """landmark ... admin for `fashion up --target X`, else retrain-worker, migrate, seed-model or console."""
        program, *args = self.argv
        if program == "celery":
            return "retrain-worker"
        if program == "alembic":
            return "migrate"
        if args[:1] == ["console"]:
            return "console"
        if args[:1] == ["quickstart"]:
            return "seed-model"
        if args[:1] == ["up"] and "--target" in args:
            return args[args.index("--target") + 1]
        raise AssertionError(f"{self.where}: unexpected command {self.argv}")

    @property
    def kind(self) -> str:
        return "model" if self.role in MODEL_TARGETS else self.role


def compose_workloads() -> list[Workload]:
    out = []
    for name, svc in compose()["services"].items():
        if "build" not in svc:
            continue  # infrastructure images
        entrypoint = svc.get("entrypoint", ["fashion"])
        env = {k: str(v) for k, v in (svc.get("environment") or {}).items()}
        out.append(Workload(f"compose:{name}", name, [*entrypoint, *svc.get("command", [])], env,
                            {k for k in env if k.startswith("FASHION_")}))
    return out


def k8s_containers() -> Iterator[tuple[str, dict, dict]]:
    """(where, pod spec, container) of every Deployment and Job."""
    for _, doc in k8s_documents():
        if doc["kind"] in ("Deployment", "Job"):
            pod = doc["spec"]["template"]["spec"]
            for container in pod["containers"]:
                yield f"k8s:{doc['kind']}/{doc['metadata']['name']}", pod, container


def k8s_workloads() -> list[Workload]:
    config_maps = {n: d.get("data", {}) for n, d in k8s_objects("ConfigMap").items()}
    secrets = {n: d.get("stringData", {}) for n, d in k8s_objects("Secret").items()}
    out = []
    for where, _pod, c in k8s_containers():
        env: dict[str, str] = {}
        for source in c.get("envFrom", []):
            env.update(config_maps[source["configMapRef"]["name"]])
        for item in c.get("env", []):
            if "value" in item:
                env[item["name"]] = str(item["value"])
            else:
                ref = item["valueFrom"].get("secretKeyRef") or item["valueFrom"]["configMapKeyRef"]
                store = secrets if "secretKeyRef" in item["valueFrom"] else config_maps
                assert ref["key"] in store[ref["name"]], f"{where}: {ref['name']} has no key {ref['key']}"
                env[item["name"]] = str(store[ref["name"]][ref["key"]])
        out.append(Workload(where, where.rsplit("/", 1)[-1], [*c.get("command", ["fashion"]), *c.get("args", [])],
                            env, {k for k in env if k.startswith("FASHION_")}))
    return out


def all_workloads() -> list[Workload]:
    return compose_workloads() + k8s_workloads()


def pending(role: str) -> str | None:
    """Why a deployable of the retraining issue cannot be checked yet, or None once its code is there."""
    if role == "admin" and "admin" not in TARGETS:
        return "the admin target is not in services.stack.TARGETS yet"
    if role == "retrain-worker" and importlib.util.find_spec("services.retrain") is None:
        return "services.retrain is not there yet"
    return None


@functools.cache
def settings_envs() -> frozenset[str]:
    return frozenset(settings_table.collect())


@functools.cache
def health_service_names() -> dict[str, str]:
    """Target -> the grpc.health.v1 service name its server registers (from the servicer classes)."""
    from services.models.server import model_servicers
    from shared.grpc import service_name_of
    from shared.imaging import ImageIntake

    names = {t: service_name_of(model_servicers(None, ImageIntake(), [t])[0][1]) for t in MODEL_TARGETS}
    for target in TARGETS:
        if target in names or importlib.util.find_spec(f"services.{target}.server") is None:
            continue
        module = importlib.import_module(f"services.{target}.server")
        for obj in vars(module).values():
            if isinstance(obj, type) and obj.__module__ == module.__name__ and any(
                    base.__module__.endswith("_pb2_grpc") for base in obj.__mro__[1:]):
                names[target] = service_name_of(object.__new__(obj))
    return names


def grpc_roles() -> set[str]:
    """Targets that run a gRPC server (and so have health checks and a port)."""
    return set(health_service_names())


# -- commands ---------------------------------------------------------------------------------------------------
def check_command(workload: Workload) -> None:
    program, *args = workload.argv
    if program == "fashion":
        _check_fashion(args)
    elif program == "alembic":
        _check_alembic(args)
    elif program == "celery":
        _check_celery(args, workload.env)
    else:
        raise AssertionError(f"{workload.where}: expected fashion, alembic or celery, got {program}")


def _check_fashion(args: list[str]) -> None:
    import click
    import typer

    from services.cli import app

    group = typer.main.get_command(app)
    ctx = click.Context(group, info_name="fashion")
    name, *rest = args
    command = group.get_command(ctx, name)
    assert command is not None, f"`fashion {name}` is not a command; have {sorted(group.list_commands(ctx))}"
    parsed = command.make_context(name, list(rest), parent=ctx)  # raises on unknown options / bad values
    if name == "up":
        parse_targets(parsed.params["target"])


def _check_alembic(args: list[str]) -> None:
    from alembic.config import CommandLine

    try:
        parsed = CommandLine().parser.parse_args(args)
    except SystemExit as exc:
        raise AssertionError(f"alembic does not take {args}") from exc
    assert parsed.cmd[0].__name__ == "upgrade" and parsed.revision == "head", args


def _check_celery(args: list[str], env: dict[str, str]) -> None:
    from celery import Celery
    from celery.bin.base import CLIContext
    from celery.bin.celery import celery as celery_cli

    index = args.index("worker")
    ctx = celery_cli.make_context("celery", [*args[:index], "worker"])
    module = importlib.import_module(ctx.params["app"])
    app = getattr(module, "app", None) or getattr(module, "celery", None)
    assert isinstance(app, Celery), f"{ctx.params['app']} has no Celery `app`"
    ctx.obj = CLIContext(app=app, no_color=True, workdir=None, quiet=True)
    worker = celery_cli.get_command(ctx, "worker")
    parsed = worker.make_context("worker", args[index + 1:], parent=ctx)
    queue = env.get("FASHION_RETRAIN_QUEUE") or app.conf.task_default_queue
    assert parsed.params["queues"] == [queue], f"worker consumes {parsed.params['queues']}, tasks go to {queue}"


@pytest.mark.parametrize("workload", all_workloads(), ids=lambda w: w.where)
def test_every_command_exists(workload: Workload) -> None:
    if reason := pending(workload.role):
        pytest.skip(reason)
    check_command(workload)


def test_every_target_is_deployed() -> None:
    for workloads, where in ((compose_workloads(), "docker-compose.yml"), (k8s_workloads(), "deploy/k8s")):
        roles = {w.role for w in workloads}
        missing = [t for t in TARGETS if t not in roles and not pending(t)]
        assert not missing, f"{where} runs no container for {missing}"
        assert {"migrate", "retrain-worker"} <= roles, where
        for w in workloads:
            if w.role in TARGETS or w.role == "retrain-worker":
                assert w.name == w.role, f"{w.where}: name it after what it runs ({w.role})"


# -- environment ------------------------------------------------------------------------------------------------
def test_every_fashion_variable_is_a_setting() -> None:
    used: dict[str, set[str]] = {}
    for w in all_workloads():
        for name in w.env_names:
            used.setdefault(name, set()).add(w.role)
    for name in re.findall(r"\b(FASHION_[A-Z0-9_]+)=", _final_stage_text()):
        used.setdefault(name, set()).add("Dockerfile")
    for name in k8s_objects("ConfigMap").get("fashion-config", {}).get("data", {}):
        used.setdefault(name, set()).add("ConfigMap")
    unknown = {n: roles for n, roles in used.items() if n not in settings_envs()
               and not all(pending(role) for role in roles)}
    assert not unknown, f"not a field of any settings class (shared/config.py, services/*/settings.py): {unknown}"


@pytest.mark.parametrize("workload", all_workloads(), ids=lambda w: w.where)
def test_required_settings_are_set(workload: Workload) -> None:
    if reason := pending(workload.role):
        pytest.skip(reason)
    required = REQUIRED_ENV[workload.kind]
    assert required <= settings_envs(), f"renamed settings? {sorted(required - settings_envs())}"
    missing = required - workload.env_names
    assert not missing, f"{workload.where} must set {sorted(missing)}"
    if workload.role in grpc_roles():
        assert workload.env["FASHION_HOST"] == "0.0.0.0", "a container's server must listen on every interface"


def test_secrets_are_placeholders() -> None:
    for name, secret in k8s_objects("Secret").items():
        assert "data" not in secret, f"{name}: commit placeholders in stringData, never encoded values"
        for key, value in secret["stringData"].items():
            assert "CHANGE_ME" in value, f"Secret {name}.{key} must be a CHANGE_ME placeholder"
    referenced = {item["valueFrom"]["secretKeyRef"]["key"] for _, _, c in k8s_containers()
                  for item in c.get("env", []) if "secretKeyRef" in item.get("valueFrom", {})}
    for name, secret in k8s_objects("Secret").items():
        assert set(secret["stringData"]) <= referenced, f"unused keys in Secret {name}"


def test_compose_env_example_lists_every_substitution() -> None:
    example = dict(line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines()
                   if line.strip() and not line.startswith("#"))
    assert interpolation_defaults(COMPOSE_FILE.read_text()) == example


# -- ports, health checks, addresses ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", [n for n, s in compose()["services"].items() if "build" in s])
def test_compose_ports_and_health_checks(name: str) -> None:
    svc = compose()["services"][name]
    workload = next(w for w in compose_workloads() if w.name == name)
    test = (svc.get("healthcheck") or {}).get("test", [])
    if workload.role == "console":  # HTTP, not gRPC: its own port, checked on /healthz
        port = int(workload.env["FASHION_CONSOLE_PORT"])
        assert [int(str(p).rsplit(":", 1)[-1]) for p in svc["ports"]] == [port], "published port != its port"
        assert f"127.0.0.1:{port}/healthz" in " ".join(test), f"{name}: expected a check of /healthz"
        assert workload.env["FASHION_CONSOLE_HOST"] == "0.0.0.0", "a container's server must listen on every interface"
        return
    if workload.role not in grpc_roles():
        assert "ports" not in svc and "fashion-healthcheck" not in test, f"{name} serves no gRPC"
        return
    port = int(workload.env["FASHION_PORT"])
    assert [int(str(p).rsplit(":", 1)[-1]) for p in svc["ports"]] == [port], "published port != FASHION_PORT"
    assert test[:2] == ["CMD", "fashion-healthcheck"], f"{name}: expected a grpc.health.v1 check"
    args = dict(zip(test[2::2], test[3::2], strict=True))
    assert args["--service"] == health_service_names()[workload.role]
    assert int(args.get("--address", f"127.0.0.1:{port}").rsplit(":", 1)[-1]) == port


def _container_port(container: dict, name: str) -> int | None:
    return next((p["containerPort"] for p in container.get("ports", []) if p.get("name") == name), None)


def test_k8s_ports_and_probes() -> None:
    workloads = {w.where: w for w in k8s_workloads()}
    for where, _pod, c in k8s_containers():
        w = workloads[where]
        probes = [c.get(p) for p in ("startupProbe", "readinessProbe", "livenessProbe")]
        if w.role not in grpc_roles():
            assert not any(p and "grpc" in p for p in probes) and _container_port(c, "grpc") is None, where
            continue
        port = int(w.env["FASHION_PORT"])
        assert _container_port(c, "grpc") == port, f"{where}: containerPort grpc != FASHION_PORT"
        assert _container_port(c, "metrics") == int(w.env["FASHION_METRICS_PORT"]), where
        for probe in probes:
            assert probe and probe["grpc"] == {"port": port, "service": health_service_names()[w.role]}, where


def test_k8s_services_select_a_workload_and_its_ports() -> None:
    pods = {d["metadata"]["name"]: d["spec"]["template"] for d in k8s_objects("Deployment").values()}
    for name, svc in k8s_objects("Service").items():
        spec = svc["spec"]
        if spec.get("type") == "ExternalName":
            assert name in INFRA_PORTS and [p["port"] for p in spec["ports"]] == [INFRA_PORTS[name]], name
            continue
        matches = [d for d, t in pods.items() if spec["selector"].items() <= t["metadata"]["labels"].items()]
        assert matches == [name], f"Service {name} selects {matches}"
        container = pods[name]["spec"]["containers"][0]
        for port in spec["ports"]:
            target = port.get("targetPort", port["port"])
            number = _container_port(container, target) if isinstance(target, str) else target
            assert number is not None, f"Service {name}: no container port {target}"
            if spec.get("clusterIP") == "None":  # headless: clients dial the pod's port directly
                assert port["port"] == number, f"headless Service {name}: port must equal the container port"


def _host_port(value: str) -> tuple[str, int | None] | None:
    parts = urlsplit(value if "://" in value else f"//{value}")
    return (parts.hostname, parts.port) if parts.hostname else None


def test_addresses_name_existing_services() -> None:
    services = compose()["services"]
    app_ports = {w.name: int(w.env["FASHION_PORT"]) for w in compose_workloads() if "FASHION_PORT" in w.env}
    k8s_services = {n: {p["port"] for p in s["spec"]["ports"]} for n, s in k8s_objects("Service").items()}
    metrics_ports = {w.name: int(w.env["FASHION_METRICS_PORT"]) for w in compose_workloads()
                     if "FASHION_METRICS_PORT" in w.env}
    for w in all_workloads():
        for name, value in w.env.items():
            if name.endswith("_URLS"):  # a list: the console's metrics sources
                addresses = [hp for v in value.split(",") if (hp := _host_port(v.strip()))]
                assert addresses, f"{w.where}: {name} names no address"
            elif name.endswith(("_ADDRESS", "_URL", "_BOOTSTRAP")) and (hp := _host_port(value)):
                addresses = [hp]
            else:
                continue
            for host, port in addresses:
                if w.where.startswith("compose:"):
                    assert host in services, f"{w.where}: {name} names {host}, not a compose service"
                    wanted = {app_ports.get(host, INFRA_PORTS.get(host))}
                    if name.endswith("_URLS"):
                        wanted.add(metrics_ports.get(host))
                    assert port in wanted, f"{w.where}: {name} port {port}"
                else:
                    assert host in k8s_services, f"{w.where}: {name} names {host}, not a Service"
                    assert port in k8s_services[host], f"{w.where}: {name}: Service {host} has no port {port}"


# -- GPUs, scaling, ordering ------------------------------------------------------------------------------------
def _compose_gpu(svc: dict) -> bool:
    devices = (((svc.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get("devices") or []
    return any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)


def test_gpus_go_to_exactly_the_model_services() -> None:
    gpu = {name for name, svc in compose()["services"].items() if _compose_gpu(svc)}
    assert gpu == set(MODEL_TARGETS), f"compose GPU reservations: {sorted(gpu)}"
    override = yaml.load(CPU_OVERRIDE.read_text(), Loader=_ComposeLoader)["services"]
    assert set(override) == set(MODEL_TARGETS)
    for svc in override.values():
        assert svc["deploy"]["resources"]["reservations"]["devices"] == Tagged("!reset", [])
    workloads = {w.where: w for w in k8s_workloads()}
    for where, pod, c in k8s_containers():
        is_model = workloads[where].kind == "model"
        assert ("nvidia.com/gpu" in c["resources"].get("limits", {})) == is_model, where
        if is_model:
            assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
            assert pod["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"]), where
        assert c["resources"]["requests"] and c["resources"]["limits"].get("memory"), f"{where}: set resources"


def test_model_services_autoscale() -> None:
    hpas = {h["spec"]["scaleTargetRef"]["name"]: h["spec"] for h in k8s_objects("HorizontalPodAutoscaler").values()}
    for target in MODEL_TARGETS:
        assert target in hpas, f"no HorizontalPodAutoscaler for {target}"
        assert 1 <= hpas[target]["minReplicas"] <= hpas[target]["maxReplicas"]


def test_ingest_consumers_match_partitions() -> None:
    partitions = int(k8s_objects("ConfigMap")["fashion-config"]["data"]["FASHION_KAFKA_PARTITIONS"])
    assert k8s_objects("Deployment")["ingest"]["spec"]["replicas"] == partitions
    values = {w.env["FASHION_KAFKA_PARTITIONS"] for w in compose_workloads() if "FASHION_KAFKA_PARTITIONS" in w.env}
    assert values == {compose()["services"]["kafka"]["environment"]["KAFKA_NUM_PARTITIONS"]}


def test_compose_migrates_before_the_services() -> None:
    services = compose()["services"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for w in compose_workloads():
        depends = services[w.name].get("depends_on", {})
        for dependency in depends:
            assert dependency in services, f"{w.name} depends on unknown {dependency}"
        if "FASHION_DATABASE_URL" in w.env and w.role != "migrate":
            assert depends.get("migrate", {}).get("condition") == "service_completed_successfully", w.name


def test_one_image_and_pinned_infrastructure() -> None:
    services = compose()["services"]
    app = {name: (svc["image"], json.dumps(svc["build"], sort_keys=True))
           for name, svc in services.items() if "build" in svc}
    assert len(set(app.values())) == 1, f"every service must be built from one image: {app}"
    for name in INFRA_PORTS:
        image = services[name]["image"]
        assert ":" in image and not image.endswith(":latest"), f"pin {name}'s image"
    qdrant = tuple(int(x) for x in re.findall(r"\d+", services["qdrant"]["image"].rsplit(":", 1)[1])[:2])
    assert qdrant >= (1, 16), "collection metadata needs Qdrant >= 1.16"
    assert services["kafka"]["image"].startswith("apache/kafka:")
    images = {c["image"] for _, _, c in k8s_containers()}
    assert len(images) == 1, images


# -- files ------------------------------------------------------------------------------------------------------
def test_compose_validates_against_the_compose_specification() -> None:
    compose_spec = _validator("compose_spec", "compose-spec")
    compose_spec.PyCompose.from_json(json.dumps(compose())).validate()


def test_k8s_manifests_validate_against_the_kubernetes_schemas() -> None:
    kubernetes_validate = _validator("kubernetes_validate", "kubernetes-validate")
    for filename, doc in k8s_documents():
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            raise AssertionError(f"{filename} {doc['kind']}/{doc['metadata']['name']}: {path}: {exc.message}") from None


def test_k8s_objects_are_well_formed() -> None:
    """What the schemas leave open: namespace, labels, selectors, and the kustomization's resource list."""
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    files = {p.name for p in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(files)
    assert kustomization["namespace"] == NAMESPACE and NAMESPACE in k8s_objects("Namespace")
    for filename, doc in k8s_documents():
        assert doc.get("apiVersion") and doc.get("kind") and doc["metadata"].get("name"), filename
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == NAMESPACE, f"{filename}: {doc['metadata']['name']}"
        if doc["kind"] == "Deployment":
            selector = doc["spec"]["selector"]["matchLabels"]
            assert selector.items() <= doc["spec"]["template"]["metadata"]["labels"].items(), filename
    jobs = [w for w in k8s_workloads() if w.role == "migrate"]
    assert len(jobs) == 1 and jobs[0].where.startswith("k8s:Job/")
    assert k8s_objects("Deployment")["retrain-worker"]["spec"]["replicas"] == 1


def _stages() -> list[str]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return re.split(r"(?m)^FROM ", text)[1:]


def _final_stage_text() -> str:
    return _stages()[-1]


def _instructions(stage: str, name: str) -> list[str]:
    return [line.split(None, 1)[1].strip() for line in stage.splitlines() if line.startswith(name + " ")]


def test_dockerfile_final_stage_is_small_and_unprivileged() -> None:
    stages = _stages()
    assert len(stages) >= 2, "expected a multi-stage build"
    final = stages[-1]
    assert "slim" in final.splitlines()[0] and "devel" not in final.splitlines()[0]
    users = _instructions(final, "USER")
    assert users and users[-1].split(":")[0].isdigit() and users[-1].split(":")[0] != "0", \
        "the final stage must run as a numeric non-root USER (Kubernetes verifies runAsNonRoot by uid)"
    for run in _instructions(final, "RUN"):
        found = [tool for tool in BUILD_TOOLS if re.search(rf"(?<![\w-]){re.escape(tool)}(?![\w-])", run)]
        assert not found, f"final stage installs build tools {found}: {run}"
    assert any("--from=builder" in c and "/opt/venv" in c for c in _instructions(final, "COPY"))
    assert _instructions(final, "ENTRYPOINT") == ['["fashion"]']
    uids = {pod.get("securityContext", {}).get("runAsUser") for _, pod, _ in k8s_containers()}
    assert uids == {int(users[-1].split(":")[0])}, "k8s runAsUser must be the image's USER"


def test_dockerfile_builds_what_the_project_needs() -> None:
    builder = _stages()[0]
    assert "grpc_tools.protoc" in builder and "protos/fashion/v1/*.proto" in builder, "generate the protobuf code"
    assert "download.pytorch.org/whl/cpu" in builder and "ARG VARIANT" in builder
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    python = re.search(r"ARG PYTHON_VERSION=(\d+\.\d+)", DOCKERFILE.read_text()).group(1)
    assert f">={python}" in requires.replace(" ", ""), f"image Python {python} vs requires-python {requires}"
    alembic_ini = re.search(r"ALEMBIC_CONFIG=(\S+)", _final_stage_text()).group(1)
    assert alembic_ini == "/opt/venv/lib/python${PYTHON_VERSION}/site-packages/shared/db/alembic.ini"
    assert (ROOT / "shared" / "db" / "alembic.ini").is_file()
    allowed = {line.lstrip("!").rstrip("/") for line in DOCKERIGNORE.read_text().splitlines() if line.startswith("!")}
    for stage in _stages():
        for copy in _instructions(stage, "COPY"):
            sources = [s for s in copy.split()[:-1] if not s.startswith("--")]
            missing = [s for s in sources if "--from" not in copy and s.rstrip("/") not in allowed]
            assert not missing, f"COPY {missing}: not in the build context ({DOCKERIGNORE.name})"


def test_settings_table_in_docs_is_current() -> None:
    assert settings_table.table_in(DEPLOY_DOC.read_text()) == settings_table.render(), \
        "docs/DEPLOY.md is out of date: run .venv/bin/python deploy/settings_table.py --write docs/DEPLOY.md"
    rows = set(re.findall(r"^\| `(FASHION_[A-Z0-9_]+)`", DEPLOY_DOC.read_text(), flags=re.M))
    assert rows == settings_envs()


# -- the health check script ------------------------------------------------------------------------------------
@pytest.fixture
def health_server() -> Iterator[int]:
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    servicer.set("fashion.v1.SearchService", health_pb2.HealthCheckResponse.SERVING)
    servicer.set("fashion.v1.AnalysisService", health_pb2.HealthCheckResponse.NOT_SERVING)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port
    server.stop(None)


def test_healthcheck_reports_serving_status(health_server: int, monkeypatch: pytest.MonkeyPatch) -> None:
    address = f"127.0.0.1:{health_server}"
    assert healthcheck.main(["--address", address, "--service", "fashion.v1.SearchService"]) == 0
    assert healthcheck.main(["--address", address, "--service", "fashion.v1.AnalysisService"]) == 1
    assert healthcheck.main(["--address", address, "--service", "fashion.v1.Unknown"]) == 1
    monkeypatch.setenv("FASHION_PORT", str(health_server))
    assert healthcheck.main(["--service", "fashion.v1.SearchService"]) == 0, "default address: FASHION_PORT"


def test_healthcheck_fails_when_nothing_listens() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert healthcheck.main(["--address", f"127.0.0.1:{port}", "--timeout", "0.5"]) == 1


# -- TLS overlays -----------------------------------------------------------------------------------------------
TLS_ENV = {"FASHION_TLS_CERT_FILE", "FASHION_TLS_KEY_FILE", "FASHION_TLS_CLIENT_CA_FILE", "FASHION_TLS_CA_FILE",
           "FASHION_TLS_CLIENT_CERT_FILE", "FASHION_TLS_CLIENT_KEY_FILE"}
CLIENT_TLS_ENV = {"FASHION_TLS_CA_FILE", "FASHION_TLS_CLIENT_CERT_FILE", "FASHION_TLS_CLIENT_KEY_FILE"}
GRPC_CLIENTS_ONLY = {"console"}  # talk to the servers, serve no gRPC: the client half of TLS


def test_compose_tls_overlay_covers_every_grpc_service() -> None:
    overlay = yaml.safe_load((ROOT / "deploy" / "compose.tls.yml").read_text())["services"]
    base = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    served = {w.name for w in compose_workloads() if w.role in TARGETS}
    assert set(overlay) == served | GRPC_CLIENTS_ONLY and set(overlay) <= set(base)
    for name, service in overlay.items():
        wanted = CLIENT_TLS_ENV if name in GRPC_CLIENTS_ONLY else TLS_ENV
        assert set(service["environment"]) == wanted <= settings_envs(), name
        assert service["volumes"] == ["./deploy/tls/out:/etc/fashion/tls:ro"], name


def test_k8s_tls_overlay_patches_every_grpc_deployment_and_probes_with_tls() -> None:
    overlay = yaml.safe_load((K8S_DIR / "tls" / "kustomization.yaml").read_text())
    assert overlay["resources"] == [".."]
    patched = {p["target"]["name"]: yaml.safe_load(p["patch"]) for p in overlay["patches"]}
    assert set(patched) == {w.name for w in k8s_workloads() if w.role in TARGETS} | GRPC_CLIENTS_ONLY
    for name, patch in patched.items():
        spec = patch["spec"]["template"]["spec"]
        assert spec["volumes"] == [{"name": "tls", "secret": {"secretName": "fashion-tls"}}], name
        (container,) = spec["containers"]
        wanted = CLIENT_TLS_ENV if name in GRPC_CLIENTS_ONLY else TLS_ENV
        assert container["name"] == name and {e["name"] for e in container["env"]} == wanted, name
        if name in grpc_roles():  # native gRPC probes cannot speak TLS: the TLS-aware health check replaces them
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert container[probe]["grpc"] is None, (name, probe)
                assert container[probe]["exec"]["command"] == [
                    "fashion-healthcheck", "--service", health_service_names()[name]], (name, probe)
