"""TLS against real coordinators: one serving TLS (reachable over https://
with the CA), and one asking for client certificates (mTLS). Certificates
are made for the test by certs.py. Skipped while the binary has no
`--tls-cert`."""

from __future__ import annotations

from concurrent import futures
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import grpc
import pytest
from certs import TlsFiles, make_tls_files
from cluster import Cluster, tls_supported

from volley import Client, Unavailable, VolleyError
from volley._proto.volley.v1 import volley_pb2 as pb
from volley._proto.volley.v1 import volley_pb2_grpc as pb_grpc

needs_tls = pytest.mark.skipif(
    not tls_supported(), reason="this volley has no TLS (volley coordinator --tls-cert)"
)

NOOP = {"ops": [{"id": "a", "kind": "noop"}]}


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory, tls_files: TlsFiles) -> Iterator[Cluster]:
    running = Cluster(tmp_path_factory.mktemp("tls-cluster"), workers=1, tls=tls_files).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def mtls_cluster(
    tmp_path_factory: pytest.TempPathFactory, tls_files: TlsFiles
) -> Iterator[Cluster]:
    running = Cluster(
        tmp_path_factory.mktemp("mtls-cluster"), workers=1, tls=tls_files, mtls=True
    ).start()
    try:
        yield running
    finally:
        running.stop()


@needs_tls
def test_a_tls_coordinator_is_reachable_over_https_with_its_ca(
    tls_cluster: Cluster, tls_files: TlsFiles
) -> None:
    with Client(tls_cluster.url, tls_cluster.admin_token, tls_ca=tls_files.ca) as client:
        batch_id = client.submit(NOOP)
        status = client.wait(batch_id, timeout=30)
    assert tls_cluster.url.startswith("https://")
    assert status.ok


@needs_tls
def test_a_tls_coordinator_is_not_reachable_without_its_ca_or_in_plaintext(
    tls_cluster: Cluster,
) -> None:
    # The system's roots do not know the test CA.
    unverified = Client(tls_cluster.url, tls_cluster.admin_token, timeout=5)
    with unverified, pytest.raises(Unavailable):
        unverified.list_batches()
    plain = Client(f"http://{tls_cluster.address}", tls_cluster.admin_token, timeout=5)
    with plain, pytest.raises(VolleyError):
        plain.list_batches()


@needs_tls
def test_mtls_needs_the_client_certificate(mtls_cluster: Cluster, tls_files: TlsFiles) -> None:
    url, token = mtls_cluster.url, mtls_cluster.admin_token
    no_certificate = Client(url, token, tls_ca=tls_files.ca, timeout=5)
    with no_certificate, pytest.raises(Unavailable):
        no_certificate.list_batches()
    with Client(
        url,
        token,
        tls_ca=tls_files.ca,
        tls_cert=tls_files.client_cert,
        tls_key=tls_files.client_key,
        timeout=30,
    ) as client:
        assert client.wait(client.submit(NOOP), timeout=30).ok


@needs_tls
def test_the_cli_reaches_a_tls_coordinator(tls_cluster: Cluster) -> None:
    result = tls_cluster.volley("list")
    assert result.returncode == 0, result.stderr


# ------------------------------------------- a TLS server in this process

# The client's side of TLS does not depend on the coordinator: a Python gRPC
# server with the same certificates checks it even while the binary has no
# TLS, and checks that the token travels inside TLS.


class RecordingBatches(pb_grpc.BatchServiceServicer):
    def __init__(self) -> None:
        self.authorizations: List[Optional[str]] = []

    def ListBatches(
        self, request: pb.ListBatchesRequest, context: grpc.ServicerContext
    ) -> pb.ListBatchesResponse:
        metadata = {key: str(value) for key, value in context.invocation_metadata()}
        self.authorizations.append(metadata.get("authorization"))
        return pb.ListBatchesResponse()


@contextmanager
def tls_server(tls_files: TlsFiles, mtls: bool) -> Iterator[Tuple[str, RecordingBatches]]:
    batches = RecordingBatches()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_BatchServiceServicer_to_server(batches, server)
    credentials = grpc.ssl_server_credentials(
        [(tls_files.server_key.read_bytes(), tls_files.server_cert.read_bytes())],
        root_certificates=tls_files.ca.read_bytes() if mtls else None,
        require_client_auth=mtls,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    try:
        yield f"https://127.0.0.1:{port}", batches
    finally:
        server.stop(grace=None)


def test_https_verifies_the_server_with_the_ca_and_sends_the_token(tls_files: TlsFiles) -> None:
    with tls_server(tls_files, mtls=False) as (url, batches):
        with Client(url, "tok-1", tls_ca=tls_files.ca, timeout=10) as client:
            assert client.list_batches() == []
        unverified = Client(url, "tok-2", timeout=10)  # system roots: not our CA
        with unverified, pytest.raises(Unavailable):
            unverified.list_batches()
    assert batches.authorizations == ["Bearer tok-1"]


def test_https_with_a_client_certificate_for_mtls(tls_files: TlsFiles) -> None:
    with tls_server(tls_files, mtls=True) as (url, batches):
        no_certificate = Client(url, "tok", tls_ca=tls_files.ca, timeout=10)
        with no_certificate, pytest.raises(Unavailable):
            no_certificate.list_batches()
        with Client(
            url,
            "tok",
            tls_ca=tls_files.ca,
            tls_cert=tls_files.client_cert,
            tls_key=tls_files.client_key,
            timeout=10,
        ) as client:
            assert client.list_batches() == []
    assert batches.authorizations == ["Bearer tok"]


def test_tls_settings_come_from_the_environment(
    tls_files: TlsFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    with tls_server(tls_files, mtls=True) as (url, batches):
        monkeypatch.setenv("VOLLEY_COORDINATOR", url)
        monkeypatch.setenv("VOLLEY_TOKEN", "tok-env")
        monkeypatch.setenv("VOLLEY_TLS_CA", str(tls_files.ca))
        monkeypatch.setenv("VOLLEY_TLS_CERT", str(tls_files.client_cert))
        monkeypatch.setenv("VOLLEY_TLS_KEY", str(tls_files.client_key))
        with Client(timeout=10) as client:
            assert client.list_batches() == []
    assert batches.authorizations == ["Bearer tok-env"]


# ------------------------------------------------------ settings, no cluster


def test_tls_files_with_a_plaintext_url_are_refused(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("not read")
    for url in ("http://127.0.0.1:7070", "127.0.0.1:7070"):
        with pytest.raises(ValueError, match=r"use https://127\.0\.0\.1:7070"):
            Client(url, token="t", tls_ca=ca)


def test_tls_files_from_the_environment_name_their_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("not read")
    monkeypatch.setenv("VOLLEY_TLS_CA", str(ca))
    with pytest.raises(ValueError, match=r"\$VOLLEY_TLS_CA"):
        Client("http://127.0.0.1:7070", token="t")


def test_a_client_certificate_needs_its_key(tls_files: TlsFiles) -> None:
    with pytest.raises(ValueError, match="go together"):
        Client("https://127.0.0.1:7070", token="t", tls_cert=tls_files.client_cert)


def test_a_missing_ca_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="missing.crt"):
        Client("https://127.0.0.1:7070", token="t", tls_ca=tmp_path / "missing.crt")
