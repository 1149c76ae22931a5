"""Each run in its own Kubernetes pod (customer_assets/deploy: Dockerfile, dagster-k8s.yaml,
helm-values.yaml).

What runs here without a cluster or Docker: the Kubernetes instance through Dagster's own instance
config validation, with the run launcher's class resolved and its config processed against its
schema (then the real K8sRunLauncher built with a kubeconfig that is never contacted, and the run
pod's Job it would submit); the Helm values against what the prod deployment's code needs; and the
image's entry point, run as a subprocess.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pydantic
import pytest
import yaml
from dagster._config import process_config
from dagster._core.code_pointer import ModuleCodePointer
from dagster._core.instance.ref import InstanceRef
from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._core.storage.dagster_run import DagsterRun
from dagster._grpc.client import DagsterGrpcClient
from dagster._grpc.types import ListRepositoriesResponse
from dagster._serdes import deserialize_value

import customer_assets
from customer_assets.deployments import resources_for
from customer_assets.io_managers.intermediate_root import IntermediateRoot

DEPLOY = Path(customer_assets.__file__).parent / "deploy"
K8S_YAML = DEPLOY / "dagster-k8s.yaml"
HELM_VALUES = DEPLOY / "helm-values.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
PG_ENV = {
    "DAGSTER_PG_HOST": "dagster-postgres.example.internal",
    "DAGSTER_PG_PORT": "5432",
    "DAGSTER_PG_USER": "dagster",
    "DAGSTER_PG_PASSWORD": "from-a-secret",
    "DAGSTER_PG_DB": "dagster_instance",
}
SECRET_LIKE = re.compile(r"PASSWORD|KEY|TOKEN|CREDENTIALS|SECRET|WEBHOOK")
# A values key holding a secret itself (postgresqlPassword, apiKey, token), not naming one
# (postgresqlSecretName).
SECRET_KEY_LIKE = re.compile(r"PASSWORD|TOKEN|API_?KEY|CREDENTIALS|SECRET_?KEY|PRIVATE_?KEY")
# What a pod has besides the pipeline's settings (the test process's own environment is not the
# pod's).
SYSTEM_ENV = {"PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ", "VIRTUAL_ENV", "PYTHONPATH"}


def _load_class(data):
    return getattr(importlib.import_module(data.module_name), data.class_name)


@pytest.fixture
def k8s_ref(tmp_path, monkeypatch) -> InstanceRef:
    """The shipped file, read and validated by Dagster itself (``dagster_instance_config``), as the
    daemon would load $DAGSTER_HOME/dagster.yaml; nothing is instantiated that would connect."""
    for name, value in PG_ENV.items():
        monkeypatch.setenv(name, value)
    return InstanceRef.from_dir(
        str(tmp_path), config_dir=str(DEPLOY), config_filename=K8S_YAML.name
    )


def _launcher(launcher_data, config: dict, tmp_path):
    """The real K8sRunLauncher, out of the cluster: a kubeconfig whose server is never contacted."""
    from dagster_k8s import K8sRunLauncher

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "test",
                "clusters": [{"name": "test", "cluster": {"server": "https://127.0.0.1:9"}}],
                "users": [{"name": "test", "user": {"token": "unused"}}],
                "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
            }
        )
    )
    return K8sRunLauncher.from_config_value(
        launcher_data,
        {**config, "load_incluster_config": False, "kubeconfig_file": str(kubeconfig)},
    )


def _run(image: str, container_context: dict | None = None) -> DagsterRun:
    """A run of the weekly job of the code location served from ``image`` (with the container
    context its code server gives its runs, if any)."""
    origin = JobPythonOrigin(
        "weekly_customer_pipeline",
        RepositoryPythonOrigin(
            executable_path="/usr/local/bin/python",
            code_pointer=ModuleCodePointer("customer_assets", "defs", None),
            container_image=image,
            container_context=container_context,
        ),
    )
    return DagsterRun(
        job_name="weekly_customer_pipeline",
        run_id="0123abcd-0000-0000-0000-000000000000",
        job_code_origin=origin,
    )


def _run_pod(launcher, image: str, container_context: dict | None = None):
    """The pod spec of the Job the launcher would submit for ``_run(image, container_context)``."""
    from dagster_k8s.job import construct_dagster_k8s_job

    context = launcher.get_container_context_for_run(_run(image, container_context))
    job = construct_dagster_k8s_job(
        job_config=context.get_k8s_job_config(job_image=image, run_launcher=launcher),
        args=["dagster", "api", "execute_run", "{}"],
        job_name="dagster-run-0123abcd",
        pod_name="dagster-run-0123abcd",
        component="run_worker",
        user_defined_k8s_config=context.run_k8s_config,
    )
    return job.spec.template.spec


def test_the_k8s_instance_validates_with_k8s_run_launcher(k8s_ref, tmp_path):
    from dagster_k8s import K8sRunLauncher
    from dagster_postgres import DagsterPostgresStorage

    launcher_data = k8s_ref.run_launcher_data
    assert _load_class(launcher_data) is K8sRunLauncher
    launcher_config = process_config(K8sRunLauncher.config_type(), launcher_data.config_dict)
    assert launcher_config.success, launcher_config.errors
    config = launcher_config.value
    assert config["instance_config_map"] == "dagster-instance"
    assert config["dagster_home"] == "/opt/dagster/dagster_home"
    assert config["env_secrets"] == ["customer-assets-secrets"]
    assert config["load_incluster_config"] is True

    # PostgreSQL storage, its credentials resolved from the environment (env: form), not written in
    # the file.
    storage_data = k8s_ref.storage_data
    assert _load_class(storage_data) is DagsterPostgresStorage
    assert "password: from-a-secret" not in storage_data.config_yaml
    storage = process_config(DagsterPostgresStorage.config_type(), storage_data.config_dict)
    assert storage.success, storage.errors
    assert storage.value["postgres_db"]["password"] == "from-a-secret"
    assert storage.value["postgres_db"]["hostname"] == PG_ENV["DAGSTER_PG_HOST"]

    # The queue: 4 runs at once, one run per week (partition) at a time.
    coordinator = k8s_ref.run_coordinator_data.rehydrate(QueuedRunCoordinator)
    queue = coordinator.get_run_queue_config()
    assert queue.max_concurrent_runs == 4
    assert [
        (limit["key"], limit["value"], limit["limit"]) for limit in queue.tag_concurrency_limits
    ] == [("dagster/partition", {"applyLimitPerUniqueValue": True}, 1)]

    settings = k8s_ref.settings
    assert settings["run_monitoring"]["enabled"] is True
    assert settings["run_monitoring"]["max_runtime_seconds"] == 21600
    assert settings["run_retries"] == {
        "enabled": True,
        "max_retries": 2,
        "retry_on_asset_or_op_failure": False,
    }
    assert settings["telemetry"] == {"enabled": False}

    # The same choices as the single-machine dagster.yaml: only the run launcher (and its comments)
    # differ.
    single = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    k8s = yaml.safe_load(K8S_YAML.read_text())
    assert set(k8s) - set(single) == {"run_launcher"}
    for section in ("storage", "run_coordinator", "run_retries", "retention", "telemetry"):
        assert k8s[section] == single[section], section
    assert {
        k: v for k, v in k8s["run_monitoring"].items() if k in single["run_monitoring"]
    } == single["run_monitoring"]

    launcher = _launcher(launcher_data, config, tmp_path)
    assert launcher.job_namespace == "dagster" and launcher.fail_pod_on_run_failure is True
    assert launcher.supports_check_run_worker_health  # what run monitoring asks the launcher

    # The Job it would submit for a run of the code location served from the image.
    image = "registry.example.internal/customer-assets:0.1.0"
    pod = _run_pod(launcher, image)
    container = pod.containers[0]
    assert container.image == image
    assert {e.secret_ref.name for e in container.env_from if e.secret_ref} == {
        "customer-assets-secrets"
    }
    assert "customer-assets-env" in {
        e.config_map_ref.name for e in container.env_from if e.config_map_ref
    }
    assert {(m.name, m.mount_path) for m in container.volume_mounts} >= {("data", "/data")}
    assert any(
        v.persistent_volume_claim and v.persistent_volume_claim.claim_name == "customer-assets-data"
        for v in pod.volumes
    )
    assert pod.security_context.run_as_non_root and pod.security_context.run_as_user == 10001
    assert pod.service_account_name == "customer-assets"
    assert container.resources.limits["memory"] == "8Gi"
    # No secret value travels in the Job's spec.
    assert not [e.name for e in container.env or [] if SECRET_LIKE.search(e.name) and e.value]


# --- Helm values
# ---------------------------------------------------------------------------------------------


def _helm() -> dict:
    return yaml.safe_load(HELM_VALUES.read_text())


def _code_location(values: dict) -> dict:
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    return deployment


def _env_entries(node, path=()):
    """Every environment variable set anywhere in the values: (where, name, entry) for the
    Kubernetes list form ({name, value | valueFrom}), the chart's map form (env: {NAME: value}) and
    launcher envVars ("K=V")."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "env" and isinstance(value, list):
                for entry in value:
                    yield path + (key,), entry["name"], entry
            elif key == "env" and isinstance(value, dict):
                for name, entry in value.items():
                    yield path + (key,), name, {"name": name, "value": entry}
            elif key == "envVars" and isinstance(value, list):
                for entry in value:
                    name, _, val = str(entry).partition("=")
                    yield path + (key,), name, {"name": name, "value": val or None}
            else:
                yield from _env_entries(value, path + (key,))
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _env_entries(item, path + (index,))


def _secret_like_values(node, path=()):
    """Any non-empty scalar under a key that names a secret (postgresqlPassword: ..., apiKey:
    ...)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, (dict, list)):
                yield from _secret_like_values(value, path + (key,))
            elif SECRET_KEY_LIKE.search(str(key).upper()) and value not in (None, "", False):
                yield path + (key,), value
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _secret_like_values(item, path + (index,))


def _env_var_names(value, seen=None) -> set[str]:
    """The environment variables a built resource reads through Dagster (EnvVar / EnvVar.int), at
    any depth."""
    seen = set() if seen is None else seen
    if id(value) in seen:
        return set()
    seen.add(id(value))
    # EnvVar("X"), EnvVar.int("X")
    if isinstance(value, dg.EnvVar) or type(value).__name__ == "IntEnvVar":
        return {value.env_var_name}
    if isinstance(value, (str, bytes, int, float, bool)) or value is None:
        return set()
    if isinstance(value, dict):
        return set().union(*(_env_var_names(v, seen) for v in value.values()))
    if isinstance(value, (list, tuple, set)):
        return set().union(*(_env_var_names(v, seen) for v in value))
    # ConfigurableResource / ConfigurableIOManager and nested config
    if isinstance(value, pydantic.BaseModel):
        return set().union(*(_env_var_names(v, seen) for v in vars(value).values()))
    return set()


def test_helm_values_name_the_image_the_launcher_and_no_secret_in_clear():
    values = _helm()
    location = _code_location(values)
    assert location["image"]["repository"].endswith("/customer-assets") and location["image"]["tag"]
    assert location["image"]["tag"] != "latest"
    assert location["codeServerArgs"] == ["-m", "customer_assets"]
    # runs get the env, secrets and volume
    assert location["includeConfigInLaunchedRuns"]["enabled"] is True
    assert location["podSecurityContext"]["runAsNonRoot"] is True
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert "k8sRunLauncher" in values["runLauncher"]["config"]

    daemon = values["dagsterDaemon"]
    assert daemon["enabled"] and daemon["runMonitoring"]["enabled"] is True
    queue = daemon["runCoordinator"]
    assert queue["enabled"] and queue["type"] == "QueuedRunCoordinator"
    assert queue["config"]["queuedRunCoordinator"]["maxConcurrentRuns"] == 4
    assert queue["config"]["queuedRunCoordinator"]["tagConcurrencyLimits"] == [
        {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
    ]

    # The instance's PostgreSQL password comes from the chart's secret, never from the values.
    assert values["generatePostgresqlPasswordSecret"] is False
    assert values["global"]["postgresqlSecretName"]
    assert list(_secret_like_values(values)) == []

    entries = list(_env_entries(values))
    assert entries, "the values set no environment at all"
    in_clear = [
        (where, name)
        for where, name, entry in entries
        if SECRET_LIKE.search(name) and "valueFrom" not in entry
    ]
    assert in_clear == [], f"secret-like variables with a value in the Helm values: {in_clear}"
    for where, name, entry in entries:
        if "valueFrom" in entry:
            ref = entry["valueFrom"]["secretKeyRef"]
            assert ref["name"] == "customer-assets-secrets" and ref["key"] == name, (where, name)


def test_helm_run_pods_get_the_memory_of_a_week_not_the_code_servers(k8s_ref, tmp_path):
    """The chart hands the code server's container settings to every run it launches
    (includeConfigInLaunchedRuns: its k8sContainerContext template, resources among them), and
    Dagster lets them win over the run launcher's. So a run pod of the Helm values must get the run
    launcher's resources, the memory of a week as dagster-k8s.yaml gives it, not a code server's
    (which, set on the code location, would cap every run)."""
    from dagster_k8s import K8sRunLauncher

    values = _helm()
    location = _code_location(values)
    helm_run = values["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]
    launcher_data = k8s_ref.run_launcher_data
    config = process_config(K8sRunLauncher.config_type(), launcher_data.config_dict).value
    config["run_k8s_config"] = {
        "pod_spec_config": helm_run["podSpecConfig"],
        "container_config": helm_run["containerConfig"],
    }
    launcher = _launcher(launcher_data, config, tmp_path)
    fields = {"resources": "resources", "env": "env", "volumes": "volumes"}
    chart_context = {"k8s": {key: location[f] for f, key in fields.items() if location.get(f)}}
    image = "registry.example.internal/customer-assets:0.1.0"
    container = _run_pod(launcher, image, chart_context).containers[0]
    single = yaml.safe_load(K8S_YAML.read_text())["run_launcher"]["config"]["run_k8s_config"]
    week = single["container_config"]["resources"]
    assert container.resources.limits == week["limits"]
    assert container.resources.requests == week["requests"]


def test_helm_values_set_every_variable_the_prod_deployment_reads(monkeypatch):
    """The list is the code's: the prod resources are built from the code location's environment in
    the values (secret references stand in as placeholders), which must not fail (DB_HOST is
    required by ``uses_embedded_demo``), and every variable the built resources read through
    Dagster's EnvVar (required ones such as GCP_PROJECT_ID and PII_HASH_KEY, whether set or not)
    must be set there."""
    entries = {name: entry for _, name, entry in _env_entries(_code_location(_helm()))}
    required_secrets = {
        name
        for name, entry in entries.items()
        if "valueFrom" in entry and not entry["valueFrom"]["secretKeyRef"].get("optional")
    }
    pod_env = {
        name: (entry.get("value", f"<secret {name}>"))
        for name, entry in entries.items()
        if "value" in entry or name in required_secrets
    }
    assert pod_env["DAGSTER_DEPLOYMENT"] == "prod"

    for name in list(os.environ):
        if name not in SYSTEM_ENV and not name.startswith("PYTEST_"):
            monkeypatch.delenv(name)
    for name, value in pod_env.items():
        monkeypatch.setenv(name, value)

    resources = resources_for("prod")
    read = _env_var_names(resources)
    assert {
        "DB_HOST",
        "GCP_PROJECT_ID",
        "PII_HASH_KEY",
    } <= read  # the prod requirements as the code has them
    assert read - set(pod_env) == set(), (
        f"read by the prod resources but not set in the Helm values: {read - set(pod_env)}"
    )
    # Every one of them resolves in the pod's environment (as Dagster resolves them when a run
    # starts).
    assert all(os.environ.get(name) for name in read)

    # The one requirement that is not an EnvVar: without DB_HOST prod refuses to build (no embedded
    # demo).
    monkeypatch.delenv("DB_HOST")
    with pytest.raises(ValueError, match="DB_HOST"):
        resources_for("prod")


def test_the_bucket_for_runs_without_a_shared_disk_is_shown_and_picks_the_bucket(monkeypatch):
    """The values show, commented out, what a team sets when runs do not share a disk; set as
    shown, the prod resources put the intermediates in that bucket (the default stays the shared
    volume's DATA_DIR)."""
    text = HELM_VALUES.read_text()
    example = re.search(
        r"# - name: CUSTOMER_ASSETS_INTERMEDIATES_URL\n\s*#   value: (gs://\S+)", text
    )
    assert example, "helm-values.yaml should show CUSTOMER_ASSETS_INTERMEDIATES_URL (commented out)"
    assert "CUSTOMER_ASSETS_INTERMEDIATES_URL" in K8S_YAML.read_text()
    entries = {name: entry for _, name, entry in _env_entries(_code_location(_helm()))}
    assert "CUSTOMER_ASSETS_INTERMEDIATES_URL" not in entries
    for name in list(os.environ):  # the pod's environment only, not this process's
        if name not in SYSTEM_ENV and not name.startswith("PYTEST_"):
            monkeypatch.delenv(name)
    for name, entry in entries.items():
        if "value" in entry or not entry["valueFrom"]["secretKeyRef"].get("optional"):
            monkeypatch.setenv(name, entry.get("value", f"<secret {name}>"))
    data_dir = entries["DATA_DIR"]["value"]
    assert resources_for("prod")["io_manager"]._root() == IntermediateRoot(data_dir)
    monkeypatch.setenv("CUSTOMER_ASSETS_INTERMEDIATES_URL", example.group(1))
    manager = resources_for("prod")["io_manager"]
    assert manager._root() == IntermediateRoot(example.group(1))
    assert manager.base_dir == data_dir  # the writes in progress, and the copies read in batches


# --- The image's entry point
# ---------------------------------------------------------------------------------


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
        for line in (raw.strip() for raw in text.splitlines())
        if line and not line.startswith("#")
    ]


def _entry_point() -> list[str]:
    instructions = _dockerfile_instructions()
    assert not [arg for op, arg in instructions if op == "ENTRYPOINT"], (
        "an ENTRYPOINT would be prepended to the chart's and the run launcher's commands"
    )
    (cmd,) = [arg for op, arg in instructions if op == "CMD"]
    return json.loads(cmd)  # exec form: no shell between Kubernetes' signals and dagster


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_image_is_slim_pinned_non_root_and_without_secrets():
    instructions = _dockerfile_instructions()
    (base,) = [arg for op, arg in instructions if op == "FROM"]
    python = ".".join(map(str, sys.version_info[:3]))
    assert re.fullmatch(rf"python:{re.escape(python)}-slim(-\w+)?", base), (base, python)
    users = [arg for op, arg in instructions if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert any(
        op == "RUN" and "pip install" in arg and '".[k8s]"' in arg for op, arg in instructions
    )
    declared = [
        word.split("=")[0]
        for op, arg in instructions
        if op in ("ENV", "ARG")
        for word in shlex.split(arg)
    ]
    assert not [name for name in declared if SECRET_LIKE.search(name)]
    assert not [
        arg
        for op, arg in instructions
        if op in ("COPY", "ADD") and re.search(r"\.env\b|data/|\.venv", arg)
    ]
    assert "docker build -f customer_assets/deploy/Dockerfile" in DOCKERFILE.read_text()


def test_the_image_entry_point_serves_the_definitions(tmp_path):
    argv = _entry_point()
    assert argv[:3] == ["dagster", "code-server", "start"]
    assert argv[argv.index("-m") + 1] == "customer_assets"
    assert argv[argv.index("-h") + 1] == "0.0.0.0"
    assert argv[argv.index("-p") + 1] == str(_code_location(_helm())["port"])

    # The same command, from this venv, on a free loopback port; the local default (no
    # DAGSTER_DEPLOYMENT: this machine has no BigQuery), with the image the chart would announce to
    # the runs.
    port = _free_port()
    argv = [str(Path(sys.executable).with_name("dagster")), *argv[1:]]
    argv[argv.index("-p") + 1], argv[argv.index("-h") + 1] = str(port), "127.0.0.1"
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    image = "registry.example.internal/customer-assets:0.1.0"
    env = {
        name: value
        for name, value in os.environ.items()
        if name in SYSTEM_ENV or name.startswith("PYTEST_")
    }
    env.update(DAGSTER_HOME=str(home), DATA_DIR=str(tmp_path / "data"), DAGSTER_CURRENT_IMAGE=image)
    assert "DAGSTER_DEPLOYMENT" not in env
    log = tmp_path / "code_server.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            argv,
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        client = DagsterGrpcClient(port=port, host="127.0.0.1")
        deadline = time.monotonic() + 180
        response = None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                if client.health_check_query() == "SERVING":
                    response = deserialize_value(client.list_repositories())
                    break
            except Exception:  # not listening yet
                pass
            time.sleep(1)
        assert response is not None, f"the code server did not come up:\n{log.read_text()[-3000:]}"
        # an error here = the definitions failed
        assert isinstance(response, ListRepositoriesResponse), response
        assert response.repository_symbols and response.repository_code_pointer_dict
        assert response.container_image == image  # what K8sRunLauncher starts each run from

        # The chart's readiness probe, as it runs it in the pod.
        probe = subprocess.run(
            [argv[0], "api", "grpc-health-check", "-p", str(port)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert probe.returncode == 0, probe.stdout + probe.stderr
    finally:
        if server.poll() is None:
            # the session we started: the server and its gRPC child
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(timeout=10)
