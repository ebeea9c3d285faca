"""Server settings: where the index is, who may connect, and upload limits.

Query limits (text length, ``k``) are not a server setting: they are
:mod:`frozenlens.request`'s, the same for the CLI, the API and the page.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import FrozenLensError

TOKEN_ENV = "FROZENLENS_API_TOKEN"
MIN_TOKEN_CHARS = 16


class ServerConfigError(FrozenLensError):
    """The server cannot start with these settings (e.g. a public address
    without an API token)."""


@dataclass(frozen=True)
class Limits:
    """Upload limits of the REST API and the page.

    max_upload_bytes / max_upload_pixels: size of an uploaded query image.
    """

    max_upload_bytes: int = 20 * 1024 * 1024
    max_upload_pixels: int = 50_000_000


@dataclass(frozen=True)
class ServerSettings:
    """What ``frozenlens serve`` runs with.

    index_dir: the index to search (it may not exist yet: the page then says so).
    host/port: where to listen. Binding to anything but a loopback address
        requires ``token``.
    token: API token checked on every API route and the UI (``None``: no
        check, loopback only).
    index_roots: folders under which the page may start indexing; empty =
        indexing from the page is off.
    concurrency: searches run at the same time (``None``: one per usable core).
    allowed_hosts: without a token, requests must name a loopback host
        (``Host: localhost`` / ``127.0.0.1`` ...; see :mod:`frozenlens.server.hosts`); these
        names are accepted too (e.g. a reverse proxy's).
    """

    index_dir: Path
    host: str = "127.0.0.1"
    port: int = 7860
    token: str | None = None
    index_roots: tuple[Path, ...] = ()
    limits: Limits = field(default_factory=Limits)
    concurrency: int | None = None
    allowed_hosts: tuple[str, ...] = ()

    def check(self) -> None:
        """Raise :class:`ServerConfigError` when these settings are unsafe."""
        if self.token is not None and not re.fullmatch(rf"[A-Za-z0-9._~+/=-]{{{MIN_TOKEN_CHARS},}}", self.token):
            raise ServerConfigError(
                f"the API token must have at least {MIN_TOKEN_CHARS} characters from A-Z a-z 0-9 . _ ~ + / = - "
                "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
            )
        if not is_loopback(self.host) and self.token is None:
            raise ServerConfigError(
                f"refusing to listen on {self.host} without an API token: set {TOKEN_ENV} or pass --token-file "
                "(or listen on 127.0.0.1)"
            )
        if self.concurrency is not None and not 1 <= self.concurrency <= 64:
            raise ServerConfigError("--concurrency must be between 1 and 64")
        for name in self.allowed_hosts:
            if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})", name):
                raise ServerConfigError(f"--allowed-host must be a host name (letters, digits, dots, dashes), not {name!r}")
        for root in self.index_roots:
            if not root.is_dir():
                raise ServerConfigError(f"--allow-index folder does not exist: {root}")


def is_loopback(host: str) -> bool:
    """True for loopback addresses and ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_token(token_file: str | os.PathLike[str] | None = None, env: dict[str, str] | None = None) -> str | None:
    """The API token from ``token_file`` (first line) or the environment, else ``None``."""
    if token_file is not None:
        try:
            text = Path(token_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise ServerConfigError(f"cannot read the token file {token_file}: {exc.strerror or exc}") from exc
        token = text.strip().splitlines()[0].strip() if text.strip() else ""
        if not token:
            raise ServerConfigError(f"the token file {token_file} is empty")
        return token
    value = (os.environ if env is None else env).get(TOKEN_ENV, "").strip()
    return value or None
