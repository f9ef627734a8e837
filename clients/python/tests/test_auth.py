"""Tokens against a real cluster: no token or a wrong one is
UNAUTHENTICATED, a role may only make its own calls, and a client token sees
only its tenant's batches and memory. Plus the client's own handling of
tokens (where it finds them, what it refuses) without a cluster."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from cluster import Cluster, auth_supported

from volley import Client, NotFound, PermissionDenied, Unauthenticated
from volley._proto.volley.v1 import volley_pb2 as pb
from volley._proto.volley.v1 import volley_pb2_grpc as pb_grpc
from volley.connection import resolve_connection

needs_auth = pytest.mark.skipif(
    not auth_supported(), reason="this volley has no authentication (--admin-token-file)"
)

NOOP = {"ops": [{"id": "a", "kind": "noop"}]}


# ------------------------------------------------------------- real cluster


@needs_auth
def test_a_call_without_a_token_is_unauthenticated(cluster: Cluster) -> None:
    with cluster.client(token="", timeout=30) as anonymous:
        with pytest.raises(Unauthenticated, match="this client sends no token"):
            anonymous.list_batches()
        with pytest.raises(Unauthenticated):
            anonymous.submit(NOOP)  # a client-streaming call
        with pytest.raises(Unauthenticated):
            anonymous.memory(namespace="n").get("k")


@needs_auth
def test_a_wrong_token_is_unauthenticated(cluster: Cluster) -> None:
    with cluster.client() as admin:
        batch_id = admin.submit(NOOP)
    with cluster.client(token="not-a-token-" + uuid.uuid4().hex, timeout=30) as stranger:
        with pytest.raises(Unauthenticated, match=r"token from token= was refused"):
            stranger.status(batch_id)
        with pytest.raises(Unauthenticated):
            list(stranger.watch(batch_id))  # a server-streaming call, not retried


@needs_auth
def test_a_client_token_submits_and_watches_its_own_batch(cluster: Cluster) -> None:
    token = cluster.create_token("client", tenant="a")
    with cluster.client(token=token, timeout=30) as team_a:
        batch_id = team_a.submit({"ops": [{"id": "hi", "kind": "echo", "args": {"text": "a"}}]})
        events = list(team_a.watch(batch_id, timeout=30))
        status = team_a.status(batch_id)
        listed = [summary.batch_id for summary in team_a.list_batches()]
    assert events[-1].batch_state is not None and status.ok
    assert status.outputs == {"hi": "a"}
    assert batch_id in listed


@needs_auth
def test_another_tenants_batch_is_not_found(cluster: Cluster) -> None:
    with cluster.client(token=cluster.create_token("client", tenant="a"), timeout=30) as team_a:
        batch_id = team_a.submit(
            {"ops": [{"id": "slow", "kind": "sleep", "args": {"ms": 600_000}}]}
        )
    try:
        token_b = cluster.create_token("client", tenant="b")
        with cluster.client(token=token_b, timeout=30) as team_b:
            with pytest.raises(NotFound):
                team_b.status(batch_id)
            with pytest.raises(NotFound):
                list(team_b.watch(batch_id, timeout=30))
            with pytest.raises(NotFound):
                team_b.cancel(batch_id)
            assert batch_id not in [summary.batch_id for summary in team_b.list_batches()]
    finally:
        with cluster.client() as admin:
            admin.cancel(batch_id)  # the admin token sees every tenant


@needs_auth
def test_memory_namespaces_are_per_tenant(cluster: Cluster, namespace: str) -> None:
    token_a = cluster.create_token("client", tenant="a")
    token_b = cluster.create_token("client", tenant="b")
    with cluster.client(token=token_a) as team_a, cluster.client(token=token_b) as team_b:
        team_a.memory(namespace=namespace).put("k", "from a")
        assert team_b.memory(namespace=namespace).get("k") is None
        team_b.memory(namespace=namespace).put("k", "from b")
        entry = team_a.memory(namespace=namespace).get("k")
    assert entry is not None and entry.text == "from a"


@needs_auth
def test_a_worker_token_may_not_submit(cluster: Cluster) -> None:
    assert cluster.worker_token is not None
    worker = cluster.client(token=cluster.worker_token, timeout=30)
    with worker, pytest.raises(PermissionDenied):
        worker.submit(NOOP)


def token_id(client: Client) -> str:
    """The token's public id, as the coordinator names it (WhoAmI)."""
    stub = pb_grpc.TokenServiceStub(client._channel)
    return str(stub.WhoAmI(pb.WhoAmIRequest(), timeout=30).token_id)


def refused_within(client: Client, seconds: float) -> Unauthenticated:
    """Calls until the token is refused; the Unauthenticated error."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            client.list_batches()
        except Unauthenticated as error:
            return error
        assert time.monotonic() < deadline, f"the token still works after {seconds} s"
        time.sleep(0.05)


@needs_auth
def test_a_revoked_token_is_refused(cluster: Cluster) -> None:
    with cluster.client(token=cluster.create_token("client", tenant="a"), timeout=30) as team_a:
        team_a.list_batches()
        revoked = cluster.volley("token", "revoke", token_id(team_a))
        assert revoked.returncode == 0, revoked.stderr
        error = refused_within(team_a, 30)
    assert "was refused" in str(error)


@needs_auth
def test_an_expired_token_is_refused(cluster: Cluster) -> None:
    result = cluster.volley("token", "create", "--role", "client", "--ttl", "1s")
    assert result.returncode == 0, result.stderr
    with cluster.client(token=result.stdout.strip(), timeout=30) as short_lived:
        refused_within(short_lived, 30)


# ------------------------------------------------------ settings, no cluster


def test_the_token_comes_from_the_argument_then_the_environment(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    env = {"VOLLEY_TOKEN": "from-env", "VOLLEY_TOKEN_FILE": str(token_file)}

    assert resolve_connection("h:1", token="given", environ=env).token == "given"
    assert resolve_connection("h:1", token_file=token_file, environ={}).token == "from-file"
    assert resolve_connection("h:1", environ=env).token == "from-env"
    assert resolve_connection("h:1", environ={"VOLLEY_TOKEN_FILE": str(token_file)}).token == (
        "from-file"
    )
    assert resolve_connection("h:1", token="", environ=env).token is None
    assert resolve_connection("h:1", environ={}).token is None


def test_a_bad_token_is_refused_before_any_call(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        Client("127.0.0.1:1", token_file=empty)
    with pytest.raises(ValueError, match="spaces or control characters"):
        Client("127.0.0.1:1", token="two words")
    with pytest.raises(ValueError, match="cannot read the token file"):
        Client("127.0.0.1:1", token_file=tmp_path / "missing")
    with pytest.raises(ValueError, match="not both"):
        Client("127.0.0.1:1", token="t", token_file=empty)


def test_the_token_is_never_shown(tmp_path: Path) -> None:
    client = Client("127.0.0.1:1", token="do-not-print-me")
    try:
        assert "do-not-print-me" not in repr(client)
        assert "do-not-print-me" not in repr(client.connection)
    finally:
        client.close()
