"""deploy/ checked offline: the Kubernetes manifests against the API schemas that the
kubernetes-validate wheel ships, the compose file against the Compose Specification's JSON
schema, and every SDPO_* variable they (and the Dockerfiles) set against the settings.

compose_spec.json is the Compose Specification schema exactly as the PyPI wheel
docker-compose 1.29.2 ships it (compose/config/compose_spec.json); that package itself cannot
be installed next to our dev tools (it pins jsonschema < 4 and PyYAML < 6)."""

import copy
import json
import re
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from sdpo.settings import Settings
from sdpo.store import jobs_key

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE_SCHEMA = json.loads((Path(__file__).parent / "compose_spec.json").read_text())
KUBERNETES = kubernetes_validate.utils.latest_version()
CUSTOM_KINDS = {"ScaledObject"}  # KEDA's CRD: no schema in the wheel, checked by hand below
# What a Secret, the pod's own fields or the operator's shell provide: a value of that form.
SAMPLES = {
    "api_keys": "a-long-random-api-key-0123",
    "redis_url": "redis://redis:6379/0",
    "worker_name": "sdpo-worker-5d8f9-x2x7k",
}


def _manifests() -> list[tuple[str, dict]]:
    return [
        (f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc)
        for path in sorted((DEPLOY / "k8s").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def _compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


@pytest.mark.parametrize(
    "doc",
    [doc for _, doc in _manifests() if doc["kind"] not in CUSTOM_KINDS],
    ids=[name for name, doc in _manifests() if doc["kind"] not in CUSTOM_KINDS],
)
def test_kubernetes_manifests_follow_the_api_schemas(doc):
    kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def test_a_wrong_manifest_is_caught():
    deployment = next(d for _, d in _manifests() if d["kind"] == "Deployment")
    wrong = copy.deepcopy(deployment)
    wrong["spec"]["template"]["spec"]["containers"][0]["envv"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong, KUBERNETES, strict=True)


def test_the_keda_scaler_watches_the_workers_job_stream():
    [scaler] = [doc for _, doc in _manifests() if doc["kind"] == "ScaledObject"]
    deployments = {d["metadata"]["name"]: d for _, d in _manifests() if d["kind"] == "Deployment"}
    target = deployments[scaler["spec"]["scaleTargetRef"]["name"]]
    [trigger] = scaler["spec"]["triggers"]
    assert trigger["type"] == "redis-streams"
    assert trigger["metadata"]["stream"] == jobs_key("default")
    container = target["spec"]["template"]["spec"]["containers"][0]
    assert trigger["metadata"]["addressFromEnv"] in {e["name"] for e in container["env"]}


def test_the_compose_file_follows_the_compose_specification():
    validator = jsonschema.Draft201909Validator(COMPOSE_SCHEMA)
    validator.validate(_compose())
    wrong = _compose()
    wrong["services"]["worker"]["stop_grace_periodd"] = "60s"
    assert not validator.is_valid(wrong)


# -- SDPO_* variables: each one a setting, each value parsed ------------------------------------
def _dockerfile_env(dockerfile: str) -> dict[str, str]:
    env = {}
    for line in (DEPLOY / dockerfile).read_text().splitlines():
        if line.startswith("ENV "):
            env |= dict(item.split("=", 1) for item in line[4:].split())
    return env


def _containers() -> list[tuple[str, dict[str, str | None]]]:
    """Every container's SDPO_* environment: its image's ENV lines, then what deploy/ sets
    (None: from a Secret or the operator's shell)."""
    found = []
    for name, doc in _manifests():
        if doc["kind"] != "Deployment":
            continue
        for container in doc["spec"]["template"]["spec"]["containers"]:
            image = container["image"].split(":")[0].removeprefix("sdpo-")
            env: dict[str, str | None] = dict(_dockerfile_env(f"Dockerfile.{image}"))
            env |= {e["name"]: e.get("value") for e in container.get("env", [])}
            found.append((f"{name}/{container['name']}", env))
    for service, spec in _compose()["services"].items():
        if "build" not in spec:
            continue
        env = dict(_dockerfile_env(Path(spec["build"]["dockerfile"]).name))
        for key, value in spec.get("environment", {}).items():
            env[key] = None if re.search(r"\$\{", str(value)) else str(value)
        found.append((f"docker-compose.yml/{service}", env))
    return found


@pytest.mark.parametrize(
    "env", [env for _, env in _containers()], ids=[name for name, _ in _containers()]
)
def test_every_sdpo_variable_is_a_setting_whose_value_parses(env, monkeypatch):
    ours = {k: v for k, v in env.items() if k.startswith("SDPO_")}
    unknown = [k for k in ours if k.removeprefix("SDPO_").lower() not in Settings.model_fields]
    assert not unknown, f"not settings: {unknown}"
    for key, value in ours.items():
        field = key.removeprefix("SDPO_").lower()
        monkeypatch.setenv(key, SAMPLES[field] if value is None else value)
    settings = Settings()
    for key, value in ours.items():
        parsed = getattr(settings, key.removeprefix("SDPO_").lower())
        assert (parsed is None) == (value == ""), f"{key}={value!r} parsed as {parsed!r}"
