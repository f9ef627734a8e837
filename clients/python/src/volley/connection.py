"""How a :class:`~volley.Client` reaches a coordinator: the URL, the bearer
token sent on every call, and TLS (server verification, and a client
certificate for mTLS).

Every RPC of BatchService, MemoryService and WorkerService needs gRPC
metadata ``authorization: Bearer <token>``. The token is added by a client
interceptor on the channel, not by each call site, so no call can forget it:
unary calls, the streamed submit, watches and each reconnection of a
watch all go through the same interceptor.

Settings come from the arguments, else from the environment, like the CLI:

========================  ===================================================
argument                  environment
========================  ===================================================
``url``                   ``VOLLEY_COORDINATOR`` (default ``127.0.0.1:7070``)
``token``                 ``VOLLEY_TOKEN``
``token_file``            ``VOLLEY_TOKEN_FILE`` (used when no token is given)
``tls_ca``                ``VOLLEY_TLS_CA``
``tls_cert``/``tls_key``  ``VOLLEY_TLS_CERT`` / ``VOLLEY_TLS_KEY``
========================  ===================================================
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, List, Mapping, Optional, Tuple, Union

import grpc

__all__ = ["DEFAULT_ADDRESS", "MAX_MESSAGE_BYTES", "Connection", "resolve_connection"]

DEFAULT_ADDRESS = "127.0.0.1:7070"

#: Largest message either side accepts (reports of large batches may exceed
#: gRPC's 4 MiB default); the coordinator uses the same.
MAX_MESSAGE_BYTES = 512 * 1024 * 1024

PathLike = Union[str, "os.PathLike[str]"]

# What a token may contain: it travels in an HTTP/2 header, so no spaces or
# control characters (the coordinator's tokens are URL-safe base64-ish text).
_TOKEN_CHARS = re.compile(r"^[\x21-\x7e]+$")


@dataclass(frozen=True)
class Connection:
    """The resolved settings of one client (never printed with the token)."""

    url: str
    """As given: ``host:port``, ``http://host:port`` or ``https://host:port``."""
    target: str
    """``host:port``, what gRPC dials."""
    tls: bool
    """Whether the channel uses TLS (the URL is ``https://``)."""
    token: Optional[str]
    """The bearer token, or None to send none."""
    token_source: str
    """Where the token came from (``token=``, ``$VOLLEY_TOKEN``, a file
    path…), or ``"none"``; shown in errors, the token itself never is."""
    root_certificates: Optional[bytes] = None
    private_key: Optional[bytes] = None
    certificate_chain: Optional[bytes] = None

    def __repr__(self) -> str:
        return f"Connection(url={self.url!r}, tls={self.tls}, token from {self.token_source})"

    def channel(self, options: List[Tuple[str, Any]]) -> grpc.Channel:
        """A new channel with these settings (the token interceptor included)."""
        if self.tls:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=self.root_certificates,
                private_key=self.private_key,
                certificate_chain=self.certificate_chain,
            )
            channel = grpc.secure_channel(self.target, credentials, options=options)
        else:
            channel = grpc.insecure_channel(self.target, options=options)
        return self.authorize(channel)

    def authorize(self, channel: grpc.Channel) -> grpc.Channel:
        """``channel`` with the token added to every call (as is without one)."""
        if self.token is None:
            return channel
        return grpc.intercept_channel(channel, BearerToken(self.token))


def resolve_connection(
    url: Optional[str] = None,
    *,
    token: Optional[str] = None,
    token_file: Optional[PathLike] = None,
    tls_ca: Optional[PathLike] = None,
    tls_cert: Optional[PathLike] = None,
    tls_key: Optional[PathLike] = None,
    environ: Optional[Mapping[str, str]] = None,
) -> Connection:
    """The settings from the arguments, falling back to the environment.

    An explicit ``token=""`` sends no token even when ``VOLLEY_TOKEN`` is
    set. TLS files need an ``https://`` URL: with ``http://`` or a bare
    ``host:port`` this raises ``ValueError`` rather than silently talking
    plaintext to a coordinator the caller meant to verify.
    """
    env = os.environ if environ is None else environ
    url = url or env.get("VOLLEY_COORDINATOR") or DEFAULT_ADDRESS
    tls = url.startswith("https://")
    if tls:
        target = url[len("https://") :]
    elif url.startswith("http://"):
        target = url[len("http://") :]
    else:
        target = url
    target = target.rstrip("/")
    if "://" in target or "/" in target or not target:
        raise ValueError(
            f"coordinator URL {url!r}: expected host:port, http://host:port or https://host:port"
        )

    token_value, token_source = _resolve_token(token, token_file, env)

    files = {
        "tls_ca": _setting(tls_ca, env, "VOLLEY_TLS_CA"),
        "tls_cert": _setting(tls_cert, env, "VOLLEY_TLS_CERT"),
        "tls_key": _setting(tls_key, env, "VOLLEY_TLS_KEY"),
    }
    given = {name: value for name, value in files.items() if value is not None}
    if given and not tls:
        names = ", ".join(f"{name} ({source})" for name, (_, source) in given.items())
        raise ValueError(
            f"{names} given, but the coordinator URL {url!r} is not TLS: "
            f"use https://{target} to connect with TLS"
        )
    if (files["tls_cert"] is None) != (files["tls_key"] is None):
        raise ValueError("tls_cert and tls_key go together (a client certificate and its key)")
    return Connection(
        url=url,
        target=target,
        tls=tls,
        token=token_value,
        token_source=token_source,
        root_certificates=_read(files["tls_ca"]),
        certificate_chain=_read(files["tls_cert"]),
        private_key=_read(files["tls_key"]),
    )


def _setting(
    value: Optional[PathLike], env: Mapping[str, str], variable: str
) -> Optional[Tuple[Path, str]]:
    """A file setting and where it came from: the argument, else $variable."""
    if value is not None:
        return Path(value), "argument"
    from_env = env.get(variable)
    if from_env:
        return Path(from_env), f"${variable}"
    return None


def _read(setting: Optional[Tuple[Path, str]]) -> Optional[bytes]:
    if setting is None:
        return None
    path, source = setting
    try:
        return path.read_bytes()
    except OSError as error:
        raise ValueError(f"cannot read {path} (from {source}): {error.strerror}") from None


def _resolve_token(
    token: Optional[str], token_file: Optional[PathLike], env: Mapping[str, str]
) -> Tuple[Optional[str], str]:
    """(token, where it came from). Order: ``token=``, ``token_file=``,
    ``$VOLLEY_TOKEN``, ``$VOLLEY_TOKEN_FILE``; ``token=""`` means none."""
    if token is not None and token_file is not None:
        raise ValueError("give token= or token_file=, not both")
    if token is not None:
        return (_checked(token, "token=") if token else None), ("token=" if token else "none")
    if token_file is not None:
        return _token_from_file(Path(token_file), "token_file="), str(token_file)
    if env.get("VOLLEY_TOKEN"):
        return _checked(env["VOLLEY_TOKEN"].strip(), "$VOLLEY_TOKEN"), "$VOLLEY_TOKEN"
    if env.get("VOLLEY_TOKEN_FILE"):
        path = Path(env["VOLLEY_TOKEN_FILE"])
        return _token_from_file(path, "$VOLLEY_TOKEN_FILE"), f"{path} ($VOLLEY_TOKEN_FILE)"
    return None, "none"


def _token_from_file(path: Path, source: str) -> str:
    """The file's content without surrounding whitespace (a trailing newline
    from ``echo`` or a Kubernetes Secret is fine)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ValueError(
            f"cannot read the token file {path} ({source}): {error.strerror}"
        ) from None
    return _checked(text.strip(), f"the token file {path} ({source})")


def _checked(token: str, source: str) -> str:
    if not _TOKEN_CHARS.match(token):
        what = "is empty" if not token else "has spaces or control characters"
        raise ValueError(f"the token from {source} {what}: expected the token alone")
    return token


class _CallDetails(grpc.ClientCallDetails):
    """The details of a call, with the token added to its metadata."""

    def __init__(
        self, details: grpc.ClientCallDetails, metadata: Tuple[Tuple[str, Union[str, bytes]], ...]
    ) -> None:
        self.method = details.method
        self.timeout = details.timeout
        self.metadata = metadata
        self.credentials = details.credentials
        self.wait_for_ready = getattr(details, "wait_for_ready", None)
        self.compression = getattr(details, "compression", None)


class BearerToken(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds ``authorization: Bearer <token>`` to every call of a channel."""

    def __init__(self, token: str) -> None:
        self._header: Tuple[str, Union[str, bytes]] = ("authorization", f"Bearer {token}")

    def __repr__(self) -> str:
        return "BearerToken(<hidden>)"

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        metadata = [
            (key, value)
            for key, value in (details.metadata or ())
            if key.lower() != "authorization"
        ]
        metadata.append(self._header)
        return _CallDetails(details, tuple(metadata))

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request_iterator: Any
    ) -> Any:
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request_iterator: Any
    ) -> Any:
        return continuation(self._details(client_call_details), request_iterator)
