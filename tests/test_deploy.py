"""Checks of deploy/ that need no Docker engine, Kubernetes cluster or SLURM.

None of the set-ups in deploy/ can be started on the development machines or in CI, so these
tests check what can be checked statically and against the installed tools: the files parse;
prefect.yaml's deployments point at real Prefect flows whose signatures take the parameters set
there; the retrain schedule is a valid cron; every ``diaggmm`` subcommand and option used is one
the CLI's parser has; every command's executable is installed (``diaggmm`` as a console script
of pyproject.toml) and every ``dask``/``prefect`` flag is one the installed tool lists; the
files agree with each other (image name, work pool, scheduler address, code directory).

The CLI (diaggmm_dist/cli/) and the flows (flows/) are imported inside the tests that need
them, so until they exist those tests fail with a message saying so, and the rest still run.
"""

from __future__ import annotations

import ast
import fnmatch
import inspect
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from functools import lru_cache
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
PREFECT_YAML = DEPLOY / "prefect.yaml"
COMPOSE = DEPLOY / "docker" / "docker-compose.yml"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
DOCKERIGNORE = DEPLOY / "docker" / "Dockerfile.dockerignore"
DASKCLUSTER = DEPLOY / "kubernetes" / "daskcluster.yaml"
WORKER_VALUES = DEPLOY / "kubernetes" / "prefect-worker-values.yaml"
SLURM = DEPLOY / "slurm" / "jobqueue_cluster.py"
README = DEPLOY / "README.md"
VENV_BIN = Path(sys.executable).parent

EXPECTED_DEPLOYMENTS = {
    "train": "flows/train.py:train",
    "score": "flows/score.py:score",
    "retrain": "flows/retrain.py:retrain",
}
COMPOSE_SERVICES = {
    "prefect-server",
    "prefect-worker",
    "scheduler",
    "dask-worker-1",
    "dask-worker-2",
}
# Command prefixes whose flags are checked against the installed tool's --help.
TOOL_COMMANDS = [
    ("dask", "scheduler"),
    ("dask", "worker"),
    ("prefect", "server", "start"),
    ("prefect", "worker", "start"),
]


def rel(path):
    return str(Path(path).relative_to(REPO))


def load_yaml(path):
    return yaml.safe_load(Path(path).read_text())


# --------------------------------------------------------------------------- parsing helpers


def dockerfile_instructions():
    """(INSTRUCTION, arguments) pairs, with line continuations joined and comments dropped."""
    logical, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        logical.append(current + stripped)
        current = ""
    if current:
        logical.append(current)
    out = []
    for entry in logical:
        keyword, _, arguments = entry.partition(" ")
        out.append((keyword.upper(), arguments.strip()))
    return out


def exec_form(arguments):
    """A Dockerfile CMD/ENTRYPOINT as an argv list (JSON exec form or shell form)."""
    try:
        value = json.loads(arguments)
    except json.JSONDecodeError:
        return ["/bin/sh", "-c", arguments]
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), arguments
    return value


def env_dict(environment):
    if environment is None:
        return {}
    if isinstance(environment, dict):
        return {k: "" if v is None else str(v) for k, v in environment.items()}
    return dict(item.split("=", 1) for item in environment)


def compose_services():
    return load_yaml(COMPOSE)["services"]


def compose_command(service):
    command = service.get("command")
    if command is None:
        return None
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def daskcluster_containers():
    spec = load_yaml(DASKCLUSTER)["spec"]
    return [("scheduler", c) for c in spec["scheduler"]["spec"]["containers"]] + [
        ("worker", c) for c in spec["worker"]["spec"]["containers"]
    ]


def all_commands():
    """(where, argv) for every process the deploy files start."""
    commands = []
    for keyword, arguments in dockerfile_instructions():
        if keyword in ("CMD", "ENTRYPOINT"):
            commands.append((f"Dockerfile {keyword}", exec_form(arguments)))
    for name, service in compose_services().items():
        argv = compose_command(service)
        if argv:
            commands.append((f"compose {name} command", argv))
        test = (service.get("healthcheck") or {}).get("test")
        if isinstance(test, list) and test and test[0] == "CMD":
            commands.append((f"compose {name} healthcheck", [str(t) for t in test[1:]]))
        elif isinstance(test, list) and test and test[0] == "CMD-SHELL":
            commands.append((f"compose {name} healthcheck", shlex.split(test[1])))
        elif isinstance(test, str):
            commands.append((f"compose {name} healthcheck", shlex.split(test)))
    for role, container in daskcluster_containers():
        argv = [str(a) for a in (container.get("command") or []) + (container.get("args") or [])]
        if argv:
            commands.append((f"DaskCluster {role}", argv))
    return commands


def deployments():
    return {d["name"]: d for d in load_yaml(PREFECT_YAML)["deployments"]}


def scanned_files():
    return sorted(p for p in DEPLOY.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


_WRAP = "\"',[]()"
_SUBCOMMAND = re.compile(r"[a-z][a-z0-9_-]*")
_STOP = {"|", "||", "&&", ";", "#", "\\", ">", "2>&1"}


def _is_diaggmm(token):
    word = token.strip(_WRAP)
    if word.startswith("`") and word.endswith("`"):
        return False  # `diaggmm` in prose: a name (work pool, user, namespace), not a command
    return word.lstrip("`") == "diaggmm"


def diaggmm_invocations(path):
    """(line number, subcommand, --options on that line) for each ``diaggmm <subcommand>``.

    Shell-style text only: a ``diaggmm`` that follows an option (``--pool diaggmm``,
    ``-n diaggmm``) is a value, not a command, and list elements are left to the structured
    scans (``all_commands``, ``python_diaggmm_lists``). Options are read up to the end of the
    line, a shell separator, or the end of an inline code span.
    """
    found = []
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        if "diaggmm" not in line:
            continue
        try:
            tokens = shlex.split(line)
        except ValueError:
            tokens = line.split()
        for i, token in enumerate(tokens[:-1]):
            if not _is_diaggmm(token) or (i > 0 and tokens[i - 1].startswith("-")):
                continue
            if token.endswith(","):
                # an element of a list ([diaggmm, scheduled]); argv lists are checked structurally
                continue
            sub = tokens[i + 1].strip(_WRAP + "`")
            if not _SUBCOMMAND.fullmatch(sub):
                continue
            options = []
            if not tokens[i + 1].rstrip(_WRAP).endswith("`"):
                for rest in tokens[i + 2 :]:
                    if rest in _STOP:
                        break
                    word = rest.strip(_WRAP + "`")
                    if word.startswith("--"):
                        options.append(word.split("=", 1)[0])
                    if rest.rstrip(_WRAP).endswith("`"):
                        break
            found.append((lineno, sub, options))
    return found


def python_diaggmm_lists(path):
    """For each list literal ``["diaggmm", "<sub>", ...]`` in a Python file: the subcommand and
    every ``--option`` string constant in the function that builds the command."""
    tree = ast.parse(Path(path).read_text())
    found = []
    for func in [
        n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
    ]:
        for node in ast.walk(func):
            if (
                isinstance(node, ast.List)
                and len(node.elts) >= 2
                and all(isinstance(e, ast.Constant) for e in node.elts[:2])
                and node.elts[0].value == "diaggmm"
            ):
                options = sorted(
                    {
                        c.value
                        for c in ast.walk(func)
                        if isinstance(c, ast.Constant)
                        and isinstance(c.value, str)
                        and c.value.startswith("--")
                    }
                )
                found.append((node.lineno, node.elts[1].value, options))
    return found


# --------------------------------------------------------------------------- CLI and flows


def cli_subparsers():
    try:
        from diaggmm_dist.cli import build_parser
    except ImportError as exc:
        pytest.fail(
            f"diaggmm_dist.cli.build_parser cannot be imported ({exc}); deploy/ runs "
            "`diaggmm` subcommands and needs the CLI",
            pytrace=False,
        )
    import argparse

    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    pytest.fail("diaggmm_dist.cli.build_parser() has no subcommands", pytrace=False)


_FLOWS = {}


def load_flow(entrypoint):
    """The Flow at a prefect.yaml entrypoint, loaded as a worker does after the pull step:
    from the repository root as working directory, with Prefect's own entrypoint loader."""
    if entrypoint in _FLOWS:
        return _FLOWS[entrypoint]
    path = entrypoint.rsplit(":", 1)[0]
    if not (REPO / path).is_file():
        pytest.fail(
            f"{path} does not exist: deploy/prefect.yaml has a deployment with entrypoint "
            f"{entrypoint} (the Prefect flows are written with issue 3)",
            pytrace=False,
        )
    from prefect import Flow
    from prefect.flows import load_flow_from_entrypoint

    cwd = os.getcwd()
    sys.path.insert(0, str(REPO))
    os.chdir(REPO)
    try:
        flow = load_flow_from_entrypoint(entrypoint, use_placeholder_flow=False)
    except Exception as exc:  # noqa: BLE001 - report any import-time failure as a test failure
        pytest.fail(
            f"loading the flow {entrypoint} failed: {type(exc).__name__}: {exc}", pytrace=False
        )
    finally:
        os.chdir(cwd)
        sys.path.remove(str(REPO))
    assert isinstance(flow, Flow), f"{entrypoint} is a {type(flow).__name__}, not a Prefect Flow"
    _FLOWS[entrypoint] = flow
    return flow


@lru_cache(maxsize=None)
def tool_flags(prefix):
    """Every --flag the installed tool's --help lists for the command ``prefix``."""
    exe = VENV_BIN / prefix[0]
    result = subprocess.run(
        [str(exe), *prefix[1:], "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"COLUMNS": "200", "PATH": str(VENV_BIN), "HOME": str(Path.home())},
    )
    assert result.returncode == 0, f"{' '.join(prefix)} --help failed: {result.stderr[-2000:]}"
    return frozenset(re.findall(r"--[a-z][a-z0-9-]*", result.stdout))


# =========================================================================== tests: files parse


@pytest.mark.parametrize("path", sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")]), ids=rel)
def test_yaml_files_parse(path):
    documents = list(yaml.safe_load_all(path.read_text()))
    assert documents and all(isinstance(d, dict) for d in documents), (
        f"{rel(path)} is not a YAML mapping"
    )


def test_slurm_example_compiles():
    compile(SLURM.read_text(), str(SLURM), "exec")


def test_deploy_files_exist():
    for path in (
        PREFECT_YAML,
        COMPOSE,
        DOCKERFILE,
        DOCKERIGNORE,
        DASKCLUSTER,
        WORKER_VALUES,
        SLURM,
        README,
        DEPLOY / "docker" / "requirements.lock",
        DEPLOY / "docker" / "make_certs.py",
        DEPLOY / "kubernetes" / "networkpolicy.yaml",
        DEPLOY / "kubernetes" / "flow-run-pod-template.yaml",
        DEPLOY / "kubernetes" / "prefect-server-values.yaml",
    ):
        assert path.is_file(), f"{rel(path)} is missing"
    assert "land here with issue 3" not in README.read_text(), (
        "deploy/README.md is still the placeholder"
    )


# =========================================================================== tests: prefect.yaml


def test_prefect_yaml_has_the_three_deployments_on_the_diaggmm_pool():
    found = deployments()
    assert set(found) == set(EXPECTED_DEPLOYMENTS)
    for name, deployment in found.items():
        assert deployment["entrypoint"] == EXPECTED_DEPLOYMENTS[name]
        assert deployment["work_pool"]["name"] == "diaggmm", name


def test_prefect_yaml_is_valid_for_prefect_deploy():
    try:
        from prefect.cli.deploy._models import PrefectYamlModel
    except ImportError:
        pytest.skip("this Prefect version has no PrefectYamlModel to validate against")
    model = PrefectYamlModel.model_validate(load_yaml(PREFECT_YAML))
    assert [d.name for d in model.deployments] == list(deployments())


def test_pull_step_enters_the_directory_the_image_puts_the_flows_in():
    workdir, flows_dir = None, None
    for keyword, arguments in dockerfile_instructions():
        if keyword == "WORKDIR":
            workdir = arguments if arguments.startswith("/") else f"{workdir}/{arguments}"
        if keyword == "COPY":
            *sources, destination = shlex.split(arguments)
            if any(s.rstrip("/") == "flows" for s in sources):
                flows_dir = (
                    destination if destination.startswith("/") else str(Path(workdir) / destination)
                )
                code_dir = workdir
    assert flows_dir is not None, "the Dockerfile does not copy flows/ into the image"
    assert Path(flows_dir) == Path(code_dir) / "flows", flows_dir
    pull = load_yaml(PREFECT_YAML)["pull"]
    steps = [s for s in pull if "prefect.deployments.steps.set_working_directory" in s]
    assert steps, "prefect.yaml has no set_working_directory pull step"
    directory = steps[0]["prefect.deployments.steps.set_working_directory"]["directory"]
    assert Path(directory) == Path(code_dir), (directory, code_dir)


@pytest.mark.parametrize("name", sorted(EXPECTED_DEPLOYMENTS))
def test_entrypoint_is_a_flow_in_the_repository(name):
    entrypoint = deployments()[name]["entrypoint"]
    path, function = entrypoint.rsplit(":", 1)
    assert (REPO / path).resolve().is_relative_to(REPO), entrypoint
    flow = load_flow(entrypoint)
    assert flow.fn.__name__ == function, (entrypoint, flow.fn.__name__)


@pytest.mark.parametrize("name", sorted(EXPECTED_DEPLOYMENTS))
def test_deployment_parameters_fit_the_flow_signature(name):
    deployment = deployments()[name]
    flow = load_flow(deployment["entrypoint"])
    signature = inspect.signature(flow.fn).parameters
    parameters = deployment.get("parameters") or {}
    unknown = sorted(set(parameters) - set(signature))
    assert not unknown, f"{name}: prefect.yaml sets parameters the flow does not take: {unknown}"
    # The same validation the Prefect server applies when the deployment is created.
    from prefect.utilities.callables import parameter_schema
    from prefect.utilities.schema_tools import validate

    errors = validate(
        parameters, parameter_schema(flow).model_dump_for_openapi(), ignore_required=True
    )
    assert not errors, f"{name}: {errors}"
    if deployment.get("schedules"):
        # A scheduled run has only these parameters: every required one must be set.
        required = [
            p
            for p, v in signature.items()
            if v.default is inspect.Parameter.empty
            and v.kind not in (v.VAR_POSITIONAL, v.VAR_KEYWORD)
        ]
        missing = sorted(set(required) - set(parameters))
        assert not missing, (
            f"{name} is scheduled but prefect.yaml does not set its required {missing}"
        )


def test_retrain_has_a_valid_weekly_cron_schedule():
    schedules = deployments()["retrain"].get("schedules")
    assert schedules, "retrain has no schedules"
    crons = [s["cron"] for s in schedules if "cron" in s]
    assert crons, "retrain has no cron schedule"
    field = r"[0-9A-Za-z*/,\-]+"
    for schedule in schedules:
        cron = schedule["cron"]
        assert re.fullmatch(rf"{field}( {field}){{4}}", cron), f"not a 5-field cron: {cron!r}"
        try:
            from croniter import croniter
        except ImportError:
            pass
        else:
            assert croniter.is_valid(cron), cron
        # Prefect validates the string (with its vendored croniter) and the timezone.
        from prefect.client.schemas.schedules import CronSchedule

        CronSchedule(
            cron=cron, **({"timezone": schedule["timezone"]} if schedule.get("timezone") else {})
        )
        day_of_week = cron.split()[4]
        assert re.fullmatch(r"[0-7]|(MON|TUE|WED|THU|FRI|SAT|SUN)", day_of_week, re.I), (
            f"expected a weekly schedule (one day of week), got {cron!r}"
        )


def test_no_deployment_pins_the_scheduler_address():
    # Runs take the scheduler from DASK_SCHEDULER_ADDRESS of their runner (see deploy/README.md).
    for name, deployment in deployments().items():
        assert "scheduler_address" not in (deployment.get("parameters") or {}), name


# ========================================================================== tests: diaggmm commands


def test_the_scanners_see_the_diaggmm_commands():
    # Guards the two tests below against a scanner that silently finds nothing.
    assert any(sub == "fit" for _, sub, _ in python_diaggmm_lists(SLURM))
    readme = {sub for _, sub, _ in diaggmm_invocations(README)}
    assert {"fit", "predict", "info"} <= readme, readme


def test_cli_has_the_subcommands_deploy_relies_on():
    assert {"fit", "predict", "info"} <= set(cli_subparsers())


def test_every_diaggmm_subcommand_and_option_in_deploy_exists():
    subparsers = cli_subparsers()
    problems = []
    uses = [
        (f"{rel(p)}:{n}", sub, opts)
        for p in scanned_files()
        for n, sub, opts in diaggmm_invocations(p)
    ]
    uses += [(f"{rel(SLURM)}:{n}", sub, opts) for n, sub, opts in python_diaggmm_lists(SLURM)]
    uses += [
        (where, argv[1], [a.split("=", 1)[0] for a in argv[2:] if a.startswith("--")])
        for where, argv in all_commands()
        if argv[0] == "diaggmm" and len(argv) > 1 and not argv[1].startswith("-")
    ]
    for where, sub, options in uses:
        if sub not in subparsers:
            problems.append(
                f"{where}: `diaggmm {sub}` is not a subcommand (have {sorted(subparsers)})"
            )
            continue
        known = set(subparsers[sub]._option_string_actions)
        problems += [
            f"{where}: `diaggmm {sub}` has no option {o}" for o in options if o not in known
        ]
    assert not problems, "\n".join(problems)


# =========================================================================== tests: executables


def test_diaggmm_is_a_console_script_of_the_project():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"].get("scripts", {})
    assert scripts.get("diaggmm") == "diaggmm_dist.cli:main", (
        'pyproject.toml [project.scripts] must define diaggmm = "diaggmm_dist.cli:main": the '
        "image's CMD "
        f"and the deploy examples run `diaggmm` (have {scripts})"
    )


def test_every_command_names_an_installed_executable():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"].get("scripts", {})
    commands = all_commands()
    assert len(commands) >= 12, (
        commands
    )  # Dockerfile CMD, 5 compose commands + healthchecks, 2 DaskCluster
    problems = []
    for where, argv in commands:
        exe = argv[0]
        if exe == "diaggmm":
            if "diaggmm" not in scripts:
                problems.append(
                    f"{where} runs `diaggmm`, which pyproject.toml [project.scripts] does not "
                    "install"
                )
        elif exe != "/bin/sh" and not (VENV_BIN / exe).exists():
            problems.append(f"{where} runs `{exe}`, which is not in {VENV_BIN}")
    assert not problems, "\n".join(problems)


def test_dask_and_prefect_flags_exist_in_the_installed_tools():
    problems = []
    for where, argv in all_commands():
        if argv[0] not in ("dask", "prefect"):
            continue
        prefix = next((p for p in TOOL_COMMANDS if tuple(argv[: len(p)]) == p), None)
        if prefix is None:
            problems.append(
                f"{where}: {' '.join(argv[:3])} is not one of the checked commands {TOOL_COMMANDS}"
            )
            continue
        flags = tool_flags(prefix)
        for token in argv[len(prefix) :]:
            if token.startswith("--") and token.split("=", 1)[0] not in flags:
                problems.append(f"{where}: `{' '.join(prefix)}` has no option {token}")
    assert not problems, "\n".join(problems)


# =========================================================================== tests: Docker


def test_dockerfile_base_user_and_sources():
    instructions = dockerfile_instructions()
    froms = [a for k, a in instructions if k == "FROM"]
    # Pinned to a Python patch release on a Debian release (optionally also by digest).
    assert froms and re.fullmatch(
        r"python:3\.11\.\d+-slim-(bookworm|trixie)(@sha256:[0-9a-f]{64})?", froms[0].split()[0]
    ), froms
    users = [a for k, a in instructions if k == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), (
        "the image must run as a non-root user"
    )
    for keyword, arguments in instructions:
        if keyword == "RUN" and "pip install" in arguments:
            assert "[test]" not in arguments and "pytest" not in arguments, (
                "no test/dev tools in the image"
            )
    # Build context is the repository root (compose: context ../..).
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path):
        result = False
        for pattern in patterns:
            negate = pattern.startswith("!")
            pattern = pattern.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(path, pattern):
                result = not negate
        return result

    for keyword, arguments in instructions:
        if keyword == "COPY" and "--from" not in arguments:
            *sources, _ = shlex.split(arguments)
            for source in sources:
                assert (REPO / source).exists(), (
                    f"COPY {source}: no such file in the build context (repo root)"
                )
                assert not ignored(source.rstrip("/")), (
                    f"COPY {source}: excluded by {rel(DOCKERIGNORE)}"
                )


def test_the_image_installs_the_object_storage_clients_as_extras():
    """s3://, gs:// and az:// URLs work in the image: their extras exist and are installed."""
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    clients = {"s3": "s3fs", "gcs": "gcsfs", "azure": "adlfs"}
    for extra, package in clients.items():
        assert any(requirement.startswith(package) for requirement in extras.get(extra, ())), (
            f"pyproject.toml has no [{extra}] extra with {package}"
        )
    installs = [
        arguments
        for keyword, arguments in dockerfile_instructions()
        if keyword == "RUN" and "pip install" in arguments
    ]
    for extra in clients:
        assert any(re.search(rf"\.\[[^\]]*\b{extra}\b[^\]]*\]", install) for install in installs), (
            f"the Dockerfile does not install the [{extra}] extra: {installs}"
        )


def test_compose_builds_one_image_from_the_repository_root():
    services = compose_services()
    missing = COMPOSE_SERVICES - set(services)
    assert not missing, f"compose services missing: {sorted(missing)}"
    images = {name: s.get("image") for name, s in services.items()}
    assert len(set(images.values())) == 1 and None not in images.values(), images
    for name in COMPOSE_SERVICES:
        build = services[name].get("build")
        if build:
            context = (COMPOSE.parent / build["context"]).resolve()
            assert context == REPO, f"{name}: build context {context} is not the repository root"
            assert (context / build["dockerfile"]).resolve() == DOCKERFILE.resolve(), name


def test_compose_roles_and_flow_runner_environment():
    services = compose_services()
    commands = {name: compose_command(services[name]) for name in COMPOSE_SERVICES}
    server = commands["prefect-server"]
    assert (
        server[:3] == ["prefect", "server", "start"]
        and "--host" in server
        and server[server.index("--host") + 1] == "0.0.0.0"
    ), server
    worker = commands["prefect-worker"]
    assert worker[:3] == ["prefect", "worker", "start"], worker
    pool = worker[worker.index("--pool") + 1]
    assert pool == deployments()["train"]["work_pool"]["name"], (
        "compose worker polls another work pool"
    )
    scheduler = commands["scheduler"]
    assert scheduler[:2] == ["dask", "scheduler"], scheduler
    port = scheduler[scheduler.index("--port") + 1] if "--port" in scheduler else "8786"
    # TLS: the scheduler listens on tls:// only, and everything else dials tls://.
    assert scheduler[scheduler.index("--protocol") + 1] == "tls", scheduler
    address = f"tls://scheduler:{port}"
    for name in ("dask-worker-1", "dask-worker-2"):
        assert commands[name][:3] == ["dask", "worker", address], commands[name]
    env = env_dict(services["prefect-worker"].get("environment"))
    assert env.get("DASK_SCHEDULER_ADDRESS") == address, env
    api = re.fullmatch(r"http://([\w.-]+):(\d+)/api", env.get("PREFECT_API_URL", ""))
    assert api and api.group(1) == "prefect-server", env.get("PREFECT_API_URL")
    assert api.group(2) == (server[server.index("--port") + 1] if "--port" in server else "4200")


def test_compose_shares_one_volume_between_flow_runner_and_workers():
    data = load_yaml(COMPOSE)
    declared = set(data.get("volumes") or {})

    def mounts(name):
        out = {}
        for volume in data["services"][name].get("volumes") or []:
            source, target = (
                volume.split(":")[:2]
                if isinstance(volume, str)
                else (volume["source"], volume["target"])
            )
            out[target] = source
        return out

    shared = None
    for name in ("prefect-worker", "dask-worker-1", "dask-worker-2"):
        current = {(t, s) for t, s in mounts(name).items() if s in declared}
        shared = current if shared is None else shared & current
    assert shared, (
        "no named volume mounted at the same path in the flow runner and both Dask workers"
    )


# =========================================================================== tests: Kubernetes


def test_daskcluster_uses_the_compose_image():
    manifest = load_yaml(DASKCLUSTER)
    assert manifest["apiVersion"] == "kubernetes.dask.org/v1" and manifest["kind"] == "DaskCluster"
    compose_image = next(iter({s["image"] for s in compose_services().values()}))
    for role, container in daskcluster_containers():
        assert container["image"] == compose_image, (
            f"{role}: {container['image']} != {compose_image}"
        )
    roles = {
        role: [str(a) for a in container.get("args") or []]
        for role, container in daskcluster_containers()
    }
    assert roles["scheduler"][:2] == ["dask", "scheduler"] and roles["worker"][:2] == [
        "dask",
        "worker",
    ]


def test_prefect_worker_values_point_at_the_daskcluster_scheduler():
    values = load_yaml(WORKER_VALUES)["worker"]
    assert values["config"]["workPool"] == deployments()["train"]["work_pool"]["name"]
    assert values["config"]["type"] == "kubernetes"
    manifest = load_yaml(DASKCLUSTER)
    name, namespace = manifest["metadata"]["name"], manifest["metadata"].get("namespace", "default")
    ports = manifest["spec"]["scheduler"].get("service", {}).get("ports", [])
    comm = next((p["port"] for p in ports if "comm" in p["name"]), 8786)
    # The operator names the scheduler Service `<DaskCluster name>-scheduler`.
    address = f"tls://{name}-scheduler.{namespace}.svc.cluster.local:{comm}"
    env = {e["name"]: e.get("value") for e in values.get("extraEnvVars", [])}
    assert env.get("DASK_SCHEDULER_ADDRESS") == address, env
    assert address in README.read_text(), (
        "deploy/README.md gives the flow runs another scheduler address"
    )


# =========================================================================== tests: docs and SLURM


def test_readme_deployment_runs_name_existing_flow_and_deployment():
    found = deployments()
    flow_names = {name: load_flow(d["entrypoint"]).name for name, d in found.items()}
    runs = re.findall(r"prefect deployment run '?([\w-]+)/([\w-]+)'?", README.read_text())
    assert runs, "README shows no `prefect deployment run`"
    for flow_name, deployment_name in runs:
        assert deployment_name in found, f"README runs unknown deployment {deployment_name}"
        assert flow_names[deployment_name] == flow_name, (
            f"README runs {flow_name}/{deployment_name}, but that deployment's flow is named "
            f"{flow_names[deployment_name]!r}"
        )


def test_slurm_example_calls_the_train_flow_with_its_parameters():
    signature = inspect.signature(load_flow(EXPECTED_DEPLOYMENTS["train"]).fn).parameters
    tree = ast.parse(SLURM.read_text())
    calls = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "train"
    ]
    assert calls, "the SLURM example does not call the train flow"
    for call in calls:
        keywords = {k.arg for k in call.keywords}
        assert "scheduler_address" in keywords
        assert keywords <= set(signature), sorted(keywords - set(signature))
