"""Dask with TLS and mutual authentication: a real ``dask scheduler`` and ``dask worker``.

Both are started from their command lines on 127.0.0.1 with ``--tls-ca-file``, ``--tls-cert``
and ``--tls-key``; the certificates are made here (a CA of the cluster, a certificate for its
scheduler and workers, one for its clients; and a stranger's CA and client certificate). A
client without the cluster's credentials is refused; with them, a fit (library, CLI, flow) is
bit for bit the fit without TLS. The library's own LocalCluster uses TLS by default.
"""

import datetime
import ipaddress
import json
import os
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import zarr
from prefect_harness import prefect_api, prefect_server, stop_process_group  # noqa: F401, I001
from sklearn.exceptions import ConvergenceWarning

from diaggmm_dist import DiagGMM
from diaggmm_dist.cli import main
from diaggmm_dist.cluster import SchedulerUnreachableError, dask_client
from diaggmm_dist.datasets.synthetic import mixture_parameters, write_mixture_zarr
from diaggmm_dist.tls import TLSCredentialsError, TLSFiles, credentials_folder

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `flows` is a package at the repository root
    sys.path.insert(0, str(REPO))

pytestmark = pytest.mark.timeout(300)

BIN = Path(sys.executable).parent
FIT = dict(n_components=3, tol=0.0, max_iter=6, random_state=4, dtype="float64")
CLI_FIT = ["--k", "3", "--tol", "0", "--max-iter", "6", "--seed", "4", "--dtype", "float64"]
CONFIG_VARIABLES = (
    "DASK_DISTRIBUTED__COMM__TLS__CA_FILE",
    "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT",
    "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY",
)


# ------------------------------------------------------------------------- certificates
def _certificate(subject, issuer, public_key, signing_key, ca):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def make_credentials(root, name, roles=("node", "client")):
    """A CA ``name`` and, per role, a folder ``root/<name>-<role>`` with ca.pem, cert.pem,
    key.pem (the role's certificate signed by the CA)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate(f"{name}-ca", f"{name}-ca", ca_key.public_key(), ca_key, ca=True)
    folders = {}
    for role in roles:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(f"{name}-{role}", f"{name}-ca", key.public_key(), ca_key, ca=False)
        folder = Path(root) / f"{name}-{role}"
        folder.mkdir()
        (folder / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (folder / "key.pem").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        folders[role] = folder
    return folders


def tls_flags(folder):
    return [
        "--tls-ca-file",
        str(folder / "ca.pem"),
        "--tls-cert",
        str(folder / "cert.pem"),
        "--tls-key",
        str(folder / "key.pem"),
    ]


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory):
    """``dask scheduler`` and two ``dask worker`` processes with TLS, on 127.0.0.1."""
    root = tmp_path_factory.mktemp("tls")
    cluster = make_credentials(root, "cluster")
    stranger = make_credentials(root, "stranger", roles=("client",))
    scheduler_file = root / "scheduler.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASK_DISTRIBUTED__COMM__TLS")}
    env["DASK_DISTRIBUTED__WORKER__DAEMON"] = "False"
    logs = [open(root / "scheduler.log", "wb"), open(root / "worker.log", "wb")]  # noqa: SIM115
    common = dict(cwd=root, env=env, stderr=subprocess.STDOUT, start_new_session=True)
    scheduler = subprocess.Popen(
        [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard"]
        + ["--scheduler-file", str(scheduler_file), *tls_flags(cluster["node"])],
        stdout=logs[0],
        **common,
    )
    workers = subprocess.Popen(
        [str(BIN / "dask"), "worker", "--scheduler-file", str(scheduler_file)]
        + ["--nworkers", "2", "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1"]
        + ["--local-directory", str(root), *tls_flags(cluster["node"])],
        stdout=logs[1],
        **common,
    )
    try:
        deadline = time.monotonic() + 120
        while not scheduler_file.exists():
            if time.monotonic() > deadline or scheduler.poll() is not None:
                raise RuntimeError(f"dask scheduler did not start: {root / 'scheduler.log'}")
            time.sleep(0.2)
        address = json.loads(scheduler_file.read_text())["address"]
        with dask_client(address, security=TLSFiles.from_folder(cluster["client"])) as client:
            client.wait_for_workers(2, timeout=120)
        yield SimpleNamespace(
            address=address, client=cluster["client"], stranger=stranger["client"], env=env
        )
    finally:
        stop_process_group(workers, scheduler, grace=30)
        for log in logs:
            log.close()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls-data")
    params = mixture_parameters(3, 5, seed=2, spread=1.5)
    write_mixture_zarr(folder / "d.zarr", 24_000, *params, chunk_rows=3000, seed=2, dtype="float64")
    return str(folder / "d.zarr" / "X")


@pytest.fixture(scope="module")
def plain_fit(data):
    """The fit without TLS and without a cluster: dask's threads."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # tol=0
        return DiagGMM(**FIT).fit(data)


def assert_identical(a, b):
    for name in ("weights_", "means_", "covariances_", "lower_bounds_"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.n_iter_ == b.n_iter_


# -------------------------------------------------------------------------------- refused
def test_a_plain_tcp_client_is_refused(tls_cluster):
    port = tls_cluster.address.rsplit(":", 1)[1]
    with pytest.raises(SchedulerUnreachableError, match="tls:// address and credentials"):
        with dask_client(f"tcp://127.0.0.1:{port}", timeout=5):
            pass


def test_a_client_of_another_ca_is_refused_both_ways(tls_cluster):
    from distributed import Client

    # the stranger's CA: the client does not trust the scheduler's certificate
    with pytest.raises(SchedulerUnreachableError, match="TLS"):
        with dask_client(
            tls_cluster.address, security=TLSFiles.from_folder(tls_cluster.stranger), timeout=5
        ):
            pass
    # the cluster's CA trusted, but a certificate it did not sign: the scheduler refuses it
    impostor = TLSFiles(
        str(tls_cluster.client / "ca.pem"),
        str(tls_cluster.stranger / "cert.pem"),
        str(tls_cluster.stranger / "key.pem"),
    )
    with pytest.raises(SchedulerUnreachableError, match="signed by the cluster's CA"):
        with dask_client(tls_cluster.address, security=impostor, timeout=5):
            pass
    with pytest.raises(OSError):  # distributed's own client, not the library's checks
        Client(tls_cluster.address, security=impostor.security(), timeout="5s")


def test_a_tls_address_without_credentials_is_refused_before_connecting(tls_cluster):
    start = time.monotonic()
    with pytest.raises(TLSCredentialsError) as err:
        with dask_client(tls_cluster.address, timeout=30):
            pass
    assert time.monotonic() - start < 30  # not the connection's timeout: nothing connected
    message = str(err.value)
    for needed in ("distributed.comm.tls.ca-file", "--tls-ca", "tls_directory", "TLSFiles"):
        assert needed in message


# ----------------------------------------------------------------------- the same model
def test_a_fit_with_tls_is_the_fit_without(tls_cluster, data, plain_fit):
    with dask_client(tls_cluster.address, security=TLSFiles.from_folder(tls_cluster.client)):
        on_tls = DiagGMM(**FIT).fit(data)
    assert_identical(on_tls, plain_fit)


def test_dask_config_credentials_need_no_flag(tls_cluster, data, plain_fit):
    import dask

    folder = tls_cluster.client
    config = {
        "distributed.comm.tls.ca-file": str(folder / "ca.pem"),
        "distributed.comm.tls.client.cert": str(folder / "cert.pem"),
        "distributed.comm.tls.client.key": str(folder / "key.pem"),
    }
    with dask.config.set(config), dask_client(tls_cluster.address) as client:
        assert client.scheduler.address == tls_cluster.address
        assert_identical(DiagGMM(**FIT).fit(data), plain_fit)


def test_a_folders_credentials_as_dask_config_and_environment_join_the_cluster(
    tls_cluster, tmp_path
):
    """diaggmm_dist.tls's one helper for dask's TLS settings (used by the flows and by
    deploy/slurm): a checked folder, its config, its environment for a subprocess."""
    import dask

    files = credentials_folder(tls_cluster.client)
    assert files == TLSFiles.from_folder(tls_cluster.client)
    config = files.dask_config()
    assert config["distributed.comm.require-encryption"] is True
    assert config["distributed.comm.tls.client.key"] == str(tls_cluster.client / "key.pem")
    # the environment says the same to dask
    from_environment = dask.config.collect_env(files.environment())
    for key, value in config.items():
        assert dask.config.get(key, config=from_environment) == value, key
    with dask.config.set(config), dask_client(tls_cluster.address) as client:
        assert client.submit(sum, [1, 2], pure=False).result() == 3
    # distributed's own Client, in a subprocess with nothing but the environment
    code = "import sys; from distributed import Client\n"
    code += "with Client(sys.argv[1], timeout='30s') as c: print(c.submit(sum, [1, 2]).result())"
    env = dict(tls_cluster.env, **files.environment())
    done = subprocess.run(
        [sys.executable, "-c", code, tls_cluster.address],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (done.returncode, done.stdout.strip()) == (0, "3"), done.stderr[-3000:]
    assert "BEGIN" not in repr(files) + repr(config)  # paths, never key material
    # a folder of files that do not fit together is refused, naming the folder as given
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for name, folder in (("ca.pem", tls_cluster.client), ("cert.pem", tls_cluster.stranger)):
        (mixed / name).write_bytes((folder / name).read_bytes())
    (mixed / "key.pem").write_bytes((tls_cluster.client / "key.pem").read_bytes())
    with pytest.raises(TLSCredentialsError, match="--tls-dir's CA .* do not load") as err:
        credentials_folder(mixed, name="--tls-dir")
    assert "BEGIN" not in str(err.value)


def test_the_library_local_cluster_uses_tls_by_default_and_fits_the_same(data, plain_fit):
    with dask_client(n_workers=1) as client:
        assert client.scheduler.address.startswith("tls://")
        assert client.cluster.scheduler_address.startswith("tls://")
        assert all(w.startswith("tls://") for w in client.scheduler_info()["workers"])
        with_tls = DiagGMM(**FIT).fit(data)
    with dask_client(n_workers=1, security=False) as client:
        assert client.scheduler.address.startswith("tcp://")
        without = DiagGMM(**FIT).fit(data)
    assert_identical(with_tls, plain_fit)
    assert_identical(without, plain_fit)


# ------------------------------------------------------------------------------------ CLI
def test_cli_fit_and_predict_on_a_tls_scheduler(tls_cluster, data, plain_fit, tmp_path):
    files = [
        "--tls-ca",
        str(tls_cluster.client / "ca.pem"),
        "--tls-cert",
        str(tls_cluster.client / "cert.pem"),
        "--tls-key",
        str(tls_cluster.client / "key.pem"),
    ]
    model = tmp_path / "model"
    done = subprocess.run(
        [str(BIN / "diaggmm"), "fit", data, *CLI_FIT, "--out", str(model)]
        + ["--scheduler", tls_cluster.address, *files],
        env=tls_cluster.env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    assert f"scheduler {tls_cluster.address}" in done.stdout
    assert_identical(DiagGMM.load(str(model)), plain_fit)
    # predict with dask's config from the environment only: no flag
    files = (str(tls_cluster.client / name) for name in ("ca.pem", "cert.pem", "key.pem"))
    env = dict(tls_cluster.env, **dict(zip(CONFIG_VARIABLES, files, strict=True)))
    done = subprocess.run(
        [str(BIN / "diaggmm"), "predict", str(model), data, "--out", str(tmp_path / "scores")]
        + ["--scheduler", tls_cluster.address, "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    labels = zarr.open_array(str(tmp_path / "scores"), path="labels", mode="r")[:]
    np.testing.assert_array_equal(labels, plain_fit.predict(data))


def test_cli_tls_dir_in_process(tls_cluster, data, plain_fit, tmp_path, capsys):
    out = tmp_path / "model"
    code = main(
        ["fit", data, *CLI_FIT, "--out", str(out), "--quiet"]
        + ["--scheduler", tls_cluster.address, "--tls-dir", str(tls_cluster.client)]
    )
    assert code == 0, capsys.readouterr().err
    assert_identical(DiagGMM.load(str(out)), plain_fit)


@pytest.mark.parametrize(
    "flags, says",
    [
        (["--tls-ca", "{client}/ca.pem"], "--tls-cert and --tls-key missing"),
        (
            ["--tls-ca", "{client}/ca.pem", "--tls-cert", "{client}/cert.pem"]
            + ["--tls-key", "{client}/nope.pem"],
            "--tls-key '{client}/nope.pem': no such file",
        ),
        (
            ["--tls-ca", "{client}/key.pem", "--tls-cert", "{client}/cert.pem"]
            + ["--tls-key", "{client}/key.pem"],
            "do not load",
        ),
        (
            ["--tls-ca", "{stranger}/ca.pem", "--tls-cert", "{client}/cert.pem"]
            + ["--tls-key", "{stranger}/key.pem"],
            "do not load",
        ),
        (["--tls-dir", "{client}/.."], "holds no complete set of TLS credentials"),
        (["--tls-dir", "{client}", "--tls-ca", "{client}/ca.pem"], "not both"),
        ([], "no TLS credentials were given"),
    ],
)
def test_cli_bad_tls_settings_are_refused_before_any_work(
    tls_cluster, tmp_path, capsys, flags, says
):
    where = {"client": tls_cluster.client, "stranger": tls_cluster.stranger}
    flags = [flag.format(**where) for flag in flags]
    # the data does not exist: the TLS settings are refused before it is looked at
    code = main(
        ["fit", str(tmp_path / "missing.zarr"), "--k", "2", "--out", str(tmp_path / "m")]
        + ["--scheduler", tls_cluster.address, *flags]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert says.format(**where) in err
    assert "BEGIN" not in err  # never a certificate's or a key's content
    assert not (tmp_path / "m").exists()


# ---------------------------------------------------------------------------------- flows
def test_flow_tasks_reconnect_with_the_flows_credentials(tls_cluster, monkeypatch):
    from distributed import Client

    from flows.runtime import flow_client, on_scheduler

    seen = {}

    def task_in_another_thread():
        with on_scheduler(tls_cluster.address) as client:
            seen["other"] = client is not flow_side
            seen["sum"] = client.submit(sum, [1, 2, 3]).result()

    with flow_client(tls_cluster.address, str(tls_cluster.client)) as flow_side:
        with on_scheduler(tls_cluster.address) as client:  # the flow's thread: its own client
            assert client is flow_side

        def no_client_here(*args, **kwargs):
            raise ValueError("No clients found")

        # a thread that does not see the flow's client (as under another current client)
        monkeypatch.setattr(Client, "current", staticmethod(no_client_here))
        thread = threading.Thread(target=task_in_another_thread)
        thread.start()
        thread.join(60)
    assert seen == {"other": True, "sum": 6}
    with pytest.raises(TLSCredentialsError, match="tls_directory"):
        with flow_client(tls_cluster.address, str(tls_cluster.client / "..")):
            pass


def test_train_flow_on_a_tls_scheduler(prefect_api, tls_cluster, data, plain_fit, tmp_path):
    from flows.train import train

    model_url = str(tmp_path / "model")
    result = train(
        data,
        FIT["n_components"],
        model_url,
        init_params="kmeans",
        tol=FIT["tol"],
        max_iter=FIT["max_iter"],
        dtype=FIT["dtype"],
        random_state=FIT["random_state"],
        scheduler_address=tls_cluster.address,
        tls_directory=str(tls_cluster.client),
    )
    assert result["n_iter"] == FIT["max_iter"]
    assert_identical(DiagGMM.load(model_url), plain_fit)
