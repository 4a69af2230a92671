"""Security of deploy/: Kubernetes manifests against the real schema, the network policy, the
compose file's TLS and publishing, the Prefect auth settings, and the image's lock file.

No Docker engine and no Kubernetes cluster can run on the development machines or in CI, so
nothing here starts a container or applies a manifest. What is real:

- the Kubernetes manifests are validated with ``kubernetes-validate`` (the Kubernetes OpenAPI
  schema, strict: unknown fields fail), the DaskCluster's pod specs and Service as a core Pod
  and Service, the flow-run pod template as a Pod once Prefect's own templating has filled
  its placeholders;
- the compose file is parsed by ``compose-spec`` (the Compose Specification's Rust parser:
  unknown keys, wrong types, bad values fail), after Compose's interpolation and merge keys;
- the compose prefect-server's command and environment start a real ``prefect server`` with
  the env file the README's recipe writes;
- the compose file's ``dask scheduler`` and ``dask worker`` commands are run as they are
  (with the certificate paths and ports moved to a temporary directory and free ports), with
  certificates from deploy/docker/make_certs.py, and a client configured with the compose
  flow runner's DASK_ environment connects; clients without a certificate, or with one from
  another CA, are refused;
- the lock file is checked against pyproject.toml and against the metadata of the packages
  installed here.

The NetworkPolicy is checked by evaluating its rules for sample pods in Python (a model of
Kubernetes' rules, since no network plugin runs here).
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "docker" / "docker-compose.yml"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
LOCK = DEPLOY / "docker" / "requirements.lock"
MAKE_CERTS = DEPLOY / "docker" / "make_certs.py"
K8S = DEPLOY / "kubernetes"
README = DEPLOY / "README.md"
#: The image's extras (Dockerfile); the lock must cover the project with these.
IMAGE_EXTRAS = ("flows", "s3", "gcs", "azure")
#: Oldest Kubernetes still commonly run, and the newest the validator knows.
K8S_VERSIONS = ("1.29.0", "latest")
#: Job variables as a Prefect Kubernetes worker fills them in (env already as a list).
FLOW_RUN_VALUES = {
    "image": "registry.example.org/diaggmm-dist:0.1.0",
    "image_pull_policy": "IfNotPresent",
    "command": ["prefect", "flow-run", "execute"],
    "env": [{"name": "PREFECT_API_URL", "value": "http://prefect-server:4200/api"}],
    "service_account_name": "default",
}


def load(path):
    return yaml.safe_load(Path(path).read_text())


# =========================================================================== Kubernetes


def daskcluster():
    return load(K8S / "daskcluster.yaml")


def flow_run_pod_template():
    """flow-run-pod-template.yaml with its placeholders filled by Prefect's own templating."""
    from prefect.utilities.templating import apply_values, find_placeholders

    template = load(K8S / "flow-run-pod-template.yaml")
    names = {p.name for p in find_placeholders(template)}
    assert names == set(FLOW_RUN_VALUES), names
    return apply_values(template, FLOW_RUN_VALUES)


def pod_specs():
    """(role, pod metadata, pod spec) of every pod deploy/kubernetes makes."""
    cluster = daskcluster()["spec"]
    template = flow_run_pod_template()
    # The Dask operator labels the pods it makes with these.
    dask = {"dask.org/cluster-name": daskcluster()["metadata"]["name"]}
    return [
        (
            "scheduler",
            {"labels": {**dask, "dask.org/component": "scheduler"}},
            cluster["scheduler"]["spec"],
        ),
        ("worker", {"labels": {**dask, "dask.org/component": "worker"}}, cluster["worker"]["spec"]),
        ("flow-run", template["metadata"], template["spec"]),
    ]


def k8s_resources():
    """(where, resource) for everything validated against the Kubernetes schema."""
    resources = []
    for role, meta, spec in pod_specs():
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": role, **meta}, "spec": spec}
        resources.append((f"{role} pod", pod))
    service = daskcluster()["spec"]["scheduler"]["service"]
    resources.append(
        (
            "scheduler service",
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": service},
        )
    )
    for document in yaml.safe_load_all((K8S / "networkpolicy.yaml").read_text()):
        resources.append((f"NetworkPolicy {document['metadata']['name']}", document))
    return resources


def validate_k8s(resource, version):
    import kubernetes_validate

    if version == "latest":
        version = kubernetes_validate.latest_version()
    kubernetes_validate.validate(resource, version, strict=True)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_kubernetes_manifests_pass_the_strict_schema(version):
    import kubernetes_validate

    resources = k8s_resources()
    assert len(resources) == 7, [w for w, _ in resources]  # 3 pods, 1 service, 3 policies
    problems = []
    for where, resource in resources:
        try:
            validate_k8s(resource, version)
        except kubernetes_validate.ValidationError as error:
            problems.append(f"{where}: {'.'.join(map(str, error.path))}: {error.message}")
    assert not problems, "\n".join(problems)


def test_the_validator_rejects_broken_manifests():
    # Guards the test above: a misspelt field, a wrong type and a bad port each fail.
    import kubernetes_validate

    (_, _, spec), *_ = pod_specs()
    breakages = [
        lambda s: s["containers"][0]["securityContext"].update(readOnlyRootFilesystem="yes"),
        lambda s: s["containers"][0]["securityContext"].update(capabilites={"drop": ["ALL"]}),
        lambda s: s["securityContext"].update(seccompProfile="RuntimeDefault"),
        lambda s: s["containers"][0].update(ports=[{"containerPort": "eighty"}]),
    ]
    for breakage in breakages:
        broken = copy.deepcopy(spec)
        breakage(broken)
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": broken}
        with pytest.raises(kubernetes_validate.ValidationError):
            validate_k8s(pod, "latest")


_QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)(m|Ki|Mi|Gi|Ti|k|M|G)?$")
_FACTOR = {
    None: 1,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


def quantity(value):
    match = _QUANTITY.match(str(value))
    assert match, f"not a Kubernetes quantity: {value!r}"
    return float(match.group(1)) * _FACTOR[match.group(2)]


@pytest.mark.parametrize("role", ["scheduler", "worker", "flow-run"])
def test_every_pod_is_hardened_with_scratch_volumes_and_resources(role):
    _, _, spec = next(p for p in pod_specs() if p[0] == role)
    pod = spec.get("securityContext") or {}
    assert pod.get("runAsNonRoot") is True and pod.get("runAsUser", 0) != 0, pod
    assert pod.get("seccompProfile") == {"type": "RuntimeDefault"}, pod
    assert spec.get("automountServiceAccountToken") is False, "pods need no Kubernetes API token"
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for container in spec["containers"]:
        name = container["name"]
        context = container.get("securityContext") or {}
        assert context.get("allowPrivilegeEscalation") is False, name
        assert context.get("readOnlyRootFilesystem") is True, name
        assert context.get("capabilities", {}).get("drop") == ["ALL"], name
        assert not context.get("capabilities", {}).get("add"), name
        assert not context.get("privileged"), name
        resources = container.get("resources") or {}
        for resource in ("cpu", "memory"):
            request = resources.get("requests", {}).get(resource)
            limit = resources.get("limits", {}).get(resource)
            assert request is not None and limit is not None, f"{name}: {resource} {resources}"
            assert quantity(request) <= quantity(limit), f"{name}: {resource} {request} > {limit}"
        # Writable scratch: /tmp and HOME are emptyDir volumes (the root filesystem is not
        # writable); every directory the command writes to lies in one.
        writable = {
            m["mountPath"]
            for m in container.get("volumeMounts", [])
            if not m.get("readOnly")
            and ("emptyDir" in volumes[m["name"]] or "persistentVolumeClaim" in volumes[m["name"]])
        }
        scratch = {
            m["mountPath"]
            for m in container.get("volumeMounts", [])
            if "emptyDir" in volumes[m["name"]]
        }
        assert {"/tmp", "/home/diaggmm"} <= scratch, f"{name}: emptyDir mounts {scratch}"
        args = [str(a) for a in container.get("args", [])]
        for flag in ("--local-directory",):
            if flag in args:
                path = args[args.index(flag) + 1]
                assert any(Path(path).is_relative_to(w) for w in writable), (name, path)
        for volume in volumes.values():
            if "emptyDir" in volume:
                assert volume["emptyDir"].get("sizeLimit"), f"{volume['name']}: no sizeLimit"
        limit = quantity(resources["limits"].get("ephemeral-storage", 0))
        disk = sum(
            quantity(v["emptyDir"]["sizeLimit"]) for v in volumes.values() if "emptyDir" in v
        )
        assert limit >= disk, f"{name}: ephemeral-storage limit below its emptyDir sizes"


@pytest.mark.parametrize(
    "role, secret", [("scheduler", "scheduler"), ("worker", "worker"), ("flow-run", "client")]
)
def test_each_pod_mounts_only_its_own_role_certificate_secret(role, secret):
    _, _, spec = next(p for p in pod_specs() if p[0] == role)
    secrets = [v for v in spec["volumes"] if "secret" in v]
    assert [v["secret"]["secretName"] for v in secrets] == [f"diaggmm-dask-tls-{secret}"]
    assert secrets[0]["secret"].get("defaultMode", 0o644) & 0o007 == 0, "keys readable by others"
    container = spec["containers"][0]
    mount = next(m for m in container["volumeMounts"] if m["name"] == secrets[0]["name"])
    assert mount["readOnly"] is True and mount["mountPath"] == "/tls"
    args = [str(a) for a in container.get("args", [])]
    if role != "flow-run":
        for flag in ("--tls-ca-file", "--tls-cert", "--tls-key"):
            assert args[args.index(flag) + 1].startswith("/tls/"), (role, flag)
    if role == "scheduler":
        assert args[args.index("--protocol") + 1] == "tls"
    if role == "worker":
        assert args[2].startswith("tls://"), args
    env = {e["name"]: e.get("value") for e in container.get("env") or [] if isinstance(e, dict)}
    if role != "flow-run":
        assert env.get("DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION") == "true", env


# --------------------------------------------------------------------------- NetworkPolicy
def _matches(selector, labels):
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values")
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
    return True


def allowed(policies, target_labels, source, port, namespace="diaggmm"):
    """Kubernetes' rule: ingress to a pod selected by any Ingress policy is allowed only if some
    rule of one of them admits the source pod (same namespace unless a namespaceSelector says
    otherwise) on the port; a pod no policy selects accepts everything."""
    selecting = [
        p
        for p in policies
        if p["metadata"]["namespace"] == namespace
        and _matches(p["spec"]["podSelector"], target_labels)
        and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
    ]
    if not selecting:
        return True
    source_ns, source_labels, namespace_labels = source
    for policy in selecting:
        for rule in policy["spec"].get("ingress") or []:
            ports = rule.get("ports")
            if ports and not any(p.get("port") == port for p in ports):
                continue
            peers = rule.get("from")
            if peers is None:
                return True
            for peer in peers:
                ns_selector, pod_selector = peer.get("namespaceSelector"), peer.get("podSelector")
                if ns_selector is None:
                    ns_ok = source_ns == namespace
                else:
                    ns_ok = _matches(ns_selector, namespace_labels) or ns_selector == {}
                pod_ok = (
                    pod_selector is None
                    or pod_selector == {}
                    or _matches(pod_selector, source_labels)
                )
                if ns_ok and pod_ok and (ns_selector is not None or pod_selector is not None):
                    return True
    return False


def test_only_workers_and_flow_run_pods_reach_the_scheduler():
    policies = list(yaml.safe_load_all((K8S / "networkpolicy.yaml").read_text()))
    labels = {role: meta["labels"] for role, meta, _ in pod_specs()}
    ns = {"kubernetes.io/metadata.name": "diaggmm"}

    def pod(role_labels, namespace="diaggmm"):
        return (namespace, role_labels, {"kubernetes.io/metadata.name": namespace})

    scheduler, worker, flow_run = labels["scheduler"], labels["worker"], labels["flow-run"]
    assert allowed(policies, scheduler, pod(worker), 8786)
    assert allowed(policies, scheduler, pod(flow_run), 8786)
    # Anything else in the namespace, including the Prefect worker pod and another
    # DaskCluster's workers, is refused; so are flow-run-labelled pods of other namespaces.
    refused = [
        pod({"app": "shell"}),
        pod(
            {
                "app.kubernetes.io/name": "prefect-worker",
                "app.kubernetes.io/instance": "prefect-worker",
            }
        ),
        pod({"dask.org/cluster-name": "other", "dask.org/component": "worker"}),
        pod(flow_run, namespace="elsewhere"),
        pod(worker, namespace="elsewhere"),
    ]
    for source in refused:
        assert not allowed(policies, scheduler, source, 8786), source
        assert not allowed(policies, scheduler, source, 8787), source
    # The flow-run pods talk to the scheduler only; the workers only to each other and it.
    assert not allowed(policies, worker, pod(flow_run), 40000)
    assert allowed(policies, worker, pod(scheduler), 40000)
    assert allowed(policies, worker, pod(worker), 40000)
    assert not allowed(policies, worker, pod({"app": "shell"}), 40000)
    # The Dask operator reaches the scheduler's HTTP port (retiring workers), not its comm port.
    operator = pod(
        {"app.kubernetes.io/name": "dask-kubernetes-operator"}, namespace="dask-operator"
    )
    assert allowed(policies, scheduler, operator, 8787)
    assert not allowed(policies, scheduler, operator, 8786)
    assert ns  # the namespace label the operator rule matches on exists since Kubernetes 1.22


def test_prefect_auth_string_comes_from_a_secret_on_kubernetes():
    worker = load(K8S / "prefect-worker-values.yaml")["worker"]
    env = {e["name"]: e for e in worker["extraEnvVars"]}
    ref = env["PREFECT_API_AUTH_STRING"]
    assert "value" not in ref, "the auth string must not be a literal in the values"
    assert ref["valueFrom"]["secretKeyRef"] == {
        "name": "diaggmm-prefect-auth",
        "key": "auth-string",
    }
    server = load(K8S / "prefect-server-values.yaml")
    assert server["server"]["basicAuth"] == {
        "enabled": True,
        "existingSecret": "diaggmm-prefect-auth",
    }
    server_env = {e["name"]: e.get("value") for e in server["server"]["env"]}
    assert server_env["PREFECT_SERVER_CSRF_PROTECTION_ENABLED"] == "true"
    assert server["service"]["type"] == "ClusterIP"
    text = README.read_text()
    assert "kubectl -n prefect create secret generic diaggmm-prefect-auth" in text
    assert "kubectl -n diaggmm create secret generic diaggmm-prefect-auth" in text
    for role in ("scheduler", "worker", "client"):
        assert f"create secret generic diaggmm-dask-tls-{role}" in text, role


# =========================================================================== compose


def compose():
    return load(COMPOSE)


def interpolate(text, environment):
    """Compose's ${VAR:-default} and ${VAR} interpolation."""

    def replace(match):
        name, default = match.group(1), match.group(3)
        value = environment.get(name)
        return value if value else (default or "")

    return re.sub(r"\$\{(\w+)(:-([^}]*))?\}", replace, text)


def published(environment):
    out = []
    for name, service in compose()["services"].items():
        for port in service.get("ports") or []:
            text = interpolate(str(port), environment)
            parts = text.split(":")
            assert len(parts) == 3, f"{name}: port {port} does not name a host address"
            out.append((name, parts[0], int(parts[1]), int(parts[2])))
    return out


def compose_document(environment):
    """The compose file as Compose reads it: variables interpolated, YAML merge keys resolved."""
    return yaml.safe_load(interpolate(COMPOSE.read_text(), environment))


def validate_compose(document):
    import json

    from compose_spec import PyCompose

    # The compose-spec crate's parser (Rust): unknown keys, wrong types, bad enum values,
    # invalid host addresses fail.
    return PyCompose.from_json(json.dumps(document))


@pytest.mark.parametrize("environment", [{}, {"DIAGGMM_PUBLISH_ADDRESS": "0.0.0.0"}], ids=str)
def test_compose_file_passes_the_compose_specification(environment):
    parsed = validate_compose(compose_document(environment))
    assert set(parsed.service_names()) == set(compose()["services"])


def test_the_compose_validator_rejects_broken_files():
    # Guards the test above: a misspelt key, a wrong type, a bad condition and a bad address.
    document = compose_document({})
    breakages = [
        lambda d: d["services"]["scheduler"].update(read_only="maybe"),
        lambda d: d["services"]["scheduler"].update(cap_dorp=["ALL"]),
        lambda d: d["services"]["scheduler"]["volumes"][0]["volume"].update(subpat="x"),
        lambda d: d["services"]["scheduler"]["depends_on"]["certs"].update(condition="later"),
        lambda d: d["services"]["prefect-server"].update(ports=["127.0.0.300:4200:4200"]),
    ]
    for breakage in breakages:
        broken = copy.deepcopy(document)
        breakage(broken)
        with pytest.raises(ValueError):
            validate_compose(broken)


def test_compose_publishes_on_localhost_unless_the_operator_opts_out():
    ports = published({})
    assert {(n, c) for n, _, _, c in ports} == {("prefect-server", 4200), ("scheduler", 8787)}
    assert {host for _, host, _, _ in ports} == {"127.0.0.1"}
    # The opt-out the README documents.
    assert {host for _, host, _, _ in published({"DIAGGMM_PUBLISH_ADDRESS": "0.0.0.0"})} == {
        "0.0.0.0"
    }
    assert "DIAGGMM_PUBLISH_ADDRESS=0.0.0.0" in README.read_text()


def test_compose_prefect_auth_and_csrf():
    services = compose()["services"]
    for name in ("prefect-server", "prefect-worker"):
        files = services[name].get("env_file") or []
        paths = [f["path"] if isinstance(f, dict) else f for f in files]
        assert paths == ["./prefect-auth.env"], (name, files)
        assert all(f.get("required", True) for f in files if isinstance(f, dict)), name
        environment = services[name].get("environment") or {}
        assert not any("AUTH_STRING" in key for key in environment), (
            f"{name}: an auth string literal in the compose file"
        )
    assert (
        services["prefect-server"]["environment"]["PREFECT_SERVER_CSRF_PROTECTION_ENABLED"]
        == "true"
    )
    assert (
        services["prefect-worker"]["environment"]["PREFECT_CLIENT_CSRF_SUPPORT_ENABLED"] == "true"
    )
    # The env file stays out of git and out of the image.
    assert "prefect-auth.env" in (DEPLOY / "docker" / ".gitignore").read_text().split()
    ignore = (DEPLOY / "docker" / "Dockerfile.dockerignore").read_text().splitlines()
    assert ignore[[i for i, line in enumerate(ignore) if not line.startswith("#")][0]] == "*"
    assert not any("prefect-auth" in line for line in ignore), (
        "the env file would be sent to the builder"
    )
    # The README's recipe writes both settings the two services read.
    text = README.read_text()
    for variable in ("PREFECT_SERVER_API_AUTH_STRING", "PREFECT_API_AUTH_STRING"):
        assert re.search(rf"{variable}=\$", text) or f"{variable}=%s" in text, variable


def test_compose_containers_are_hardened():
    for name, service in compose()["services"].items():
        assert service.get("read_only") is True, name
        assert service.get("cap_drop") == ["ALL"], name
        assert "no-new-privileges:true" in service.get("security_opt", []), name
        assert any(str(t).split(":")[0] == "/tmp" for t in service.get("tmpfs", [])), name


def _readme_auth_recipe():
    """The README's shell lines that write prefect-auth.env."""
    text = README.read_text()
    start = text.index("umask 077")
    end = text.index("> prefect-auth.env", start) + len("> prefect-auth.env")
    return text[start:end]


def test_compose_prefect_server_environment_runs_an_authenticated_server(tmp_path):
    """The compose prefect-server's command and environment, with the env file the README's
    recipe writes, start a real Prefect server (on 127.0.0.1 and a free port here, the image's
    /home/diaggmm moved to a temporary directory) that refuses callers without the string,
    serves the UI from the writable static directory, and accepts the worker's settings."""
    import base64
    import urllib.error
    import urllib.request

    from prefect_harness import QUIET, _tail, free_port, stop_process_group

    bin_dir = Path(sys.executable).parent
    recipe = subprocess.run(
        ["bash", "-euc", _readme_auth_recipe()],
        cwd=tmp_path,
        env={"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
    )
    assert recipe.returncode == 0, recipe.stderr
    env_file = tmp_path / "prefect-auth.env"
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"
    values = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
    assert set(values) == {"PREFECT_SERVER_API_AUTH_STRING", "PREFECT_API_AUTH_STRING"}
    auth = values["PREFECT_API_AUTH_STRING"]
    assert auth == values["PREFECT_SERVER_API_AUTH_STRING"] and len(auth) >= 32

    home = tmp_path / "home"
    service = compose()["services"]["prefect-server"]
    port = free_port()
    command = service["command"].replace("0.0.0.0", "127.0.0.1").replace("4200", str(port))
    words = command.split()
    environment = {
        k: str(v).replace("/home/diaggmm", str(home)) for k, v in service["environment"].items()
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        environment, PREFECT_HOME=str(home / ".prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false"
    )
    env.update({k: v for k, v in values.items() if k.startswith("PREFECT_SERVER_")})
    log = tmp_path / "server.log"
    url = f"http://127.0.0.1:{port}/api"

    def get(path, token=None):
        request = urllib.request.Request(url + path)
        if token is not None:
            request.add_header(
                "Authorization", "Basic " + base64.b64encode(token.encode()).decode()
            )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code

    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(bin_dir / words[0]), *words[1:]],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        import time

        for _ in range(900):
            assert process.poll() is None, _tail(log)
            try:
                if get("/health") == 200:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        else:
            pytest.fail(f"the server did not start:\n{_tail(log)}", pytrace=False)
        assert get("/admin/version") == 401
        assert get("/admin/version", "wrong") == 401
        assert get("/admin/version", auth) == 200
        static = Path(environment["PREFECT_SERVER_UI_STATIC_DIRECTORY"])
        assert static.is_relative_to(home / ".prefect"), static  # the prefect-home volume
        assert any(static.rglob("index.html")), f"no UI under {static}"
        # The compose worker's settings (URL moved) reach it through Prefect's own client.
        worker = compose()["services"]["prefect-worker"]["environment"]
        client_env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        client_env.update(QUIET, PREFECT_HOME=str(tmp_path / "client"))
        client_env.update({k: str(v) for k, v in worker.items() if k.startswith("PREFECT_")})
        client_env.update(PREFECT_API_URL=url, PREFECT_API_AUTH_STRING=auth)
        script = (
            "from prefect.client.orchestration import get_client\n"
            "from prefect.client.schemas.actions import WorkPoolCreate\n"
            "with get_client(sync_client=True) as c:\n"
            "    pool = c.create_work_pool(WorkPoolCreate(name='diaggmm', type='process'))\n"
            "    print('POOL', pool.name)\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", script],
            env=client_env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0 and "POOL diaggmm" in done.stdout, done.stderr[-3000:]
    finally:
        stop_process_group(process, grace=10)


def _tls_mounts(service):
    return [
        v
        for v in service.get("volumes") or []
        if isinstance(v, dict) and v.get("source") == "dask-tls"
    ]


def test_compose_dask_roles_mount_only_their_certificates():
    services = compose()["services"]
    roles = {
        "scheduler": "scheduler",
        "dask-worker-1": "worker",
        "dask-worker-2": "worker",
        "prefect-worker": "client",
    }
    for name, role in roles.items():
        mounts = _tls_mounts(services[name])
        assert len(mounts) == 1, (name, services[name].get("volumes"))
        assert mounts[0]["read_only"] is True and mounts[0]["target"] == "/tls", name
        assert mounts[0]["volume"]["subpath"] == role, name
        assert (
            services[name]["depends_on"]["certs"]["condition"] == "service_completed_successfully"
        )
    assert not _tls_mounts(services["prefect-server"]), "the Prefect server needs no Dask key"
    certs = services["certs"]
    assert certs["volumes"] == ["dask-tls:/tls"] and certs["restart"] == "no"
    command = certs["command"].split()
    assert command[:2] == ["python", "/opt/diaggmm/deploy/docker/make_certs.py"], command
    assert (
        "COPY deploy/docker/make_certs.py ./deploy/docker/make_certs.py" in DOCKERFILE.read_text()
    )
    env = services["prefect-worker"]["environment"]
    assert env["DASK_SCHEDULER_ADDRESS"].startswith("tls://")
    for key in ("CA_FILE", "CLIENT__CERT", "CLIENT__KEY"):
        assert env[f"DASK_DISTRIBUTED__COMM__TLS__{key}"].startswith("/tls/"), key


# --------------------------------------------------------------------------- a real TLS cluster
def _free_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _client_run(address, env, timeout=60, connect=15):
    script = (
        "import sys\n"
        "from distributed import Client\n"
        f"with Client({address!r}, timeout={connect}) as c:\n"
        "    workers = len(c.scheduler_info()['workers'])\n"
        "    print('RESULT', c.submit(sum, [1, 2, 3]).result(), workers)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=timeout
    )


def test_compose_dask_commands_run_a_mutual_tls_cluster(tmp_path):
    """The scheduler and worker commands of the compose file, run as they are (paths and ports
    moved), with make_certs.py's certificates; the flow runner's DASK_ settings connect."""
    from prefect_harness import stop_process_group

    tls = tmp_path / "tls"
    done = subprocess.run(
        [sys.executable, str(MAKE_CERTS), str(tls)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert oct((tls / "worker" / "key.pem").stat().st_mode & 0o777) == "0o600"
    services = compose()["services"]
    port, dashboard, worker_dashboard = _free_port(), _free_port(), _free_port()

    def argv(name, role):
        text = services[name]["command"]
        text = text.replace("/tls/", f"{tls / role}/").replace(
            "scheduler:8786", f"127.0.0.1:{port}"
        )
        text = text.replace("--port 8786", f"--port {port}").replace(
            ":8787", f"127.0.0.1:{dashboard}"
        )
        text = text.replace(":8789", f"127.0.0.1:{worker_dashboard}")
        text = text.replace("/tmp/dask-worker", str(tmp_path / "dask-worker"))
        words = text.split()
        # Only on 127.0.0.1 here (in its container the compose process listens on all).
        return [str(Path(sys.executable).parent / words[0]), *words[1:], "--host", "127.0.0.1"]

    base = {k: v for k, v in os.environ.items() if not k.startswith("DASK_")}
    env = {**base, **{k: str(v) for k, v in services["scheduler"].get("environment", {}).items()}}
    processes = []
    try:
        for name, role in (("scheduler", "scheduler"), ("dask-worker-1", "worker")):
            log = open(tmp_path / f"{name}.log", "wb")
            processes.append(
                subprocess.Popen(
                    argv(name, role),
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
            if name == "scheduler":
                _wait_for_log(tmp_path / "scheduler.log", "Scheduler at:", processes[0])
        scheduler_log = (tmp_path / "scheduler.log").read_text()
        assert f"tls://127.0.0.1:{port}" in scheduler_log, scheduler_log
        client_env = {
            k: (v.replace("/tls/", f"{tls / 'client'}/") if isinstance(v, str) else str(v))
            for k, v in services["prefect-worker"]["environment"].items()
            if k.startswith("DASK_DISTRIBUTED__")
        }
        address = f"tls://127.0.0.1:{port}"
        result = _client_run(address, {**base, **client_env})
        for _ in range(20):  # the worker may still be registering
            if result.returncode == 0 and result.stdout.split()[-1] == "1":
                break
            result = _client_run(address, {**base, **client_env})
        assert result.returncode == 0 and "RESULT 6 1" in result.stdout, (
            result.stdout,
            result.stderr[-3000:],
        )
        # Without TLS: the scheduler drops the connection.
        result = _client_run(f"tcp://127.0.0.1:{port}", base, connect=4)
        assert result.returncode != 0 and "RESULT" not in result.stdout, result.stdout
        assert "CommClosedError" in result.stderr, result.stderr[-2000:]
        # TLS that trusts the CA but shows no certificate of its own: the scheduler sends
        # nothing and closes (mutual TLS); with the client certificate it answers.
        refused = _raw_tls_read(port, tls / "client" / "ca.pem", None)
        assert refused[0] is False and "CERTIFICATE_REQUIRED" in refused[1], refused
        answered, first = _raw_tls_read(port, tls / "client" / "ca.pem", tls / "client")
        assert answered and first, first
        # A certificate from another CA: refused.
        other = tmp_path / "other-ca"
        subprocess.run(
            [sys.executable, str(MAKE_CERTS), str(other)], check=True, capture_output=True
        )
        foreign = {
            k: v.replace(str(tls / "client"), str(other / "client")) for k, v in client_env.items()
        }
        result = _client_run(address, {**base, **foreign}, connect=4)
        assert result.returncode != 0 and "RESULT" not in result.stdout, result.stdout
        assert "TLS certificate does not match" in result.stderr, result.stderr[-2000:]
    finally:
        for process in reversed(processes):
            stop_process_group(process, grace=10)


def _raw_tls_read(port, ca, client_dir):
    """(whether the scheduler sent bytes, what) over a bare TLS connection to it."""
    import socket
    import ssl

    context = ssl.create_default_context(cafile=str(ca))
    context.check_hostname = False  # as Dask does: the CA is the identity
    if client_dir is not None:
        context.load_cert_chain(client_dir / "cert.pem", client_dir / "key.pem")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        try:
            with context.wrap_socket(raw) as conn:
                data = conn.recv(64)
        except (ssl.SSLError, ConnectionError) as error:
            return False, repr(error)
    return bool(data), data


def _wait_for_log(path, text, process, tries=600):
    import time

    for _ in range(tries):
        if text in path.read_text(errors="replace"):
            return
        assert process.poll() is None, path.read_text()
        time.sleep(0.1)
    pytest.fail(f"{path.name}: no {text!r}:\n{path.read_text()[-3000:]}", pytrace=False)


# =========================================================================== the image's lock


def lock_entries():
    """{canonical name: (version, [sha256 hashes])} from requirements.lock."""
    from packaging.utils import canonicalize_name

    text = re.sub(r"\\\n\s*", " ", LOCK.read_text())
    entries = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)((?:\s+--hash=sha256:[0-9a-f]{64})+)", line)
        assert match, f"requirements.lock: not a pinned, hashed requirement: {line[:120]}"
        name = canonicalize_name(match.group(1))
        assert name not in entries, f"{name} pinned twice"
        entries[name] = (match.group(2), re.findall(r"sha256:([0-9a-f]{64})", match.group(3)))
    return entries


def _top_level_requirements():
    from packaging.requirements import Requirement

    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    project = pyproject["project"]
    requirements = [Requirement(r) for r in project["dependencies"]]
    for extra in IMAGE_EXTRAS:
        requirements += [Requirement(r) for r in project["optional-dependencies"][extra]]
    # The Dockerfile builds the project without build isolation from the locked backend.
    requirements += [Requirement(r) for r in pyproject["build-system"]["requires"]]
    return requirements


def test_lock_pins_the_image_install_with_hashes():
    from packaging.utils import canonicalize_name

    entries = lock_entries()
    assert len(entries) > 100, len(entries)
    problems = []
    for requirement in _top_level_requirements():
        name = canonicalize_name(requirement.name)
        if name not in entries:
            problems.append(f"{requirement} is not in the lock")
        elif not requirement.specifier.contains(entries[name][0], prereleases=True):
            problems.append(f"{requirement}: the lock pins {entries[name][0]}")
    assert not problems, "\n".join(problems)
    # Made for the image's Python, and installed by the Dockerfile with hash checking.
    header = LOCK.read_text().split("\n\n", 1)[0]
    base = re.search(r"^FROM python:(\d+\.\d+)\.\d+", DOCKERFILE.read_text(), re.M)
    assert base and f"pip-compile with Python {base.group(1)}" in header, header
    assert all(f"--extra={extra}" in header for extra in IMAGE_EXTRAS), header
    dockerfile = DOCKERFILE.read_text()
    assert "pip install --require-hashes -r deploy/docker/requirements.lock" in dockerfile
    project_install = re.search(
        r"RUN pip install (--no-deps --no-build-isolation --no-index) ", dockerfile
    )
    assert project_install, "the project must be installed from the lock only"


def test_lock_is_closed_under_the_dependencies_of_what_it_pins():
    """Every dependency of a locked package (read from the metadata of the packages installed
    here at the locked version, markers evaluated for the image: Linux, CPython 3.11) is locked
    at a version its requirement allows."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    entries = lock_entries()
    environment = {
        "python_version": "3.11",
        "python_full_version": "3.11.14",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "os_name": "posix",
        "platform_machine": "x86_64",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
    }
    queue = [(canonicalize_name(r.name), frozenset(r.extras)) for r in _top_level_requirements()]
    seen, checked, unchecked, problems = set(), set(), set(), []
    while queue:
        name, extras = queue.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        try:
            distribution = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            unchecked.add(name)
            continue
        if distribution.version != entries[name][0]:
            unchecked.add(name)
            continue
        checked.add(name)
        for line in distribution.requires or []:
            requirement = Requirement(line)
            wanted = [""] + sorted(extras)
            if requirement.marker and not any(
                requirement.marker.evaluate({**environment, "extra": e}) for e in wanted
            ):
                continue
            dependency = canonicalize_name(requirement.name)
            if dependency not in entries:
                problems.append(f"{name} needs {requirement}: not in the lock")
            elif not requirement.specifier.contains(entries[dependency][0], prereleases=True):
                problems.append(
                    f"{name} needs {requirement}: the lock pins {entries[dependency][0]}"
                )
            else:
                queue.append((dependency, frozenset(requirement.extras)))
    assert not problems, "\n".join(problems)
    # Only what is installed here at the locked version can be checked (a fresh install may
    # resolve newer releases than the lock); the rest is checked by pip at image build time.
    assert len(checked) >= 10, f"only {sorted(checked)} checked; not: {sorted(unchecked)}"
