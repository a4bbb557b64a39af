"""HTTP for remote sources: authentication, TLS, timeouts, retries with backoff, redaction.

:class:`HttpClient` is the one place where vfanalytics talks to a Prometheus-API
server or Loki. It wraps a :class:`requests.Session` and adds

* credentials: bearer token, basic auth, extra headers (``X-Scope-OrgID`` for
  Mimir / Cortex / Thanos tenants); taken from arguments, environment variables or
  files (:func:`read_secret`), and never shown: :meth:`HttpClient.redact` removes them
  from any text that leaves (errors, logs, the ``pulls`` table);
* retries with exponential backoff and full jitter on connection errors, timeouts,
  truncated bodies, 429 (honouring ``Retry-After``), 500, 502, 503 and 504, up to a
  budget (:class:`RetryPolicy`), then :class:`~vfanalytics.exceptions.RetryBudgetExceeded`;
* any other error status at once as :class:`~vfanalytics.exceptions.SourceHTTPError`
  carrying the server's own message (Prometheus' ``error`` field, Loki's plain text).

Example
-------
>>> client = HttpClient("http://127.0.0.1:9090/", token="s3cret")
>>> client.base_url
'http://127.0.0.1:9090'
>>> client.redact("Authorization: Bearer s3cret")
'Authorization: Bearer ***'
"""

from __future__ import annotations

import os
import random
import threading
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import orjson
import requests

from vfanalytics.exceptions import ConfigError, RetryBudgetExceeded, SourceError, SourceHTTPError

__all__ = ["HttpClient", "RetryPolicy", "read_secret", "Response"]

#: statuses worth retrying: throttling and the gateway / overload family (500 included: Loki and
#: Thanos answer 500 for transient store errors)
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to retry transient faults.

    Parameters
    ----------
    attempts:
        Total tries per request (first try included).
    backoff:
        Base delay in seconds; try ``n`` waits a random time in ``[0, backoff * 2**n]``
        ("full jitter"), capped at ``max_backoff``.
    max_backoff:
        Cap of one delay (also caps ``Retry-After``).
    """

    attempts: int = 6
    backoff: float = 0.25
    max_backoff: float = 10.0
    seed: int | None = None

    def delay(self, attempt: int, rng: random.Random, retry_after: float | None = None) -> float:
        """Seconds to wait before try ``attempt + 1`` (``attempt`` counts from 0)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_backoff)
        return rng.uniform(0.0, min(self.max_backoff, self.backoff * (2**attempt)))


@dataclass
class Response:
    """A successful answer: status, headers (lower-case names) and the complete body."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    attempts: int = 1

    def json(self) -> Any:
        return orjson.loads(self.body)


def read_secret(
    value: str | None = None, *, env: str | None = None, file: str | os.PathLike[str] | None = None
) -> str | None:
    """A credential from (first that is set) ``value``, the file ``file``, or ``$env``.

    File contents are stripped of surrounding whitespace (a trailing newline is usual).
    """
    if value:
        return value
    if file:
        try:
            return Path(file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"cannot read credential file {file}: {exc.strerror}") from None
    if env:
        found = os.environ.get(env)
        if found:
            return found
    return None


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


@dataclass
class HttpClient:
    """A session to one server with credentials, TLS options, timeouts and retries.

    Parameters
    ----------
    base_url:
        ``http(s)://host:port[/prefix]``; user info in the URL is moved into basic auth.
    token:
        Bearer token.
    username, password:
        Basic auth.
    headers:
        Extra headers sent with every request (e.g. ``{"X-Scope-OrgID": "tenant-1"}``).
    ca_file:
        CA bundle to verify the server; ``verify=False`` turns verification off.
    timeout:
        Seconds for connect and for each read.
    retry:
        The :class:`RetryPolicy`.
    sleep:
        The function used to wait between tries (tests pass a no-op or a recorder).
    compress:
        Ask for gzip answers; default: yes, except on loopback, where compressing
        costs the server more than it saves.
    """

    base_url: str
    token: str | None = None
    username: str | None = None
    password: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    ca_file: str | None = None
    verify: bool = True
    timeout: float = 60.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    sleep: Any = time.sleep
    compress: bool | None = None

    def __post_init__(self) -> None:
        parts = urllib.parse.urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"not an http(s) URL: {self._strip_userinfo(self.base_url)!r}")
        if parts.username is not None:
            self.username = self.username or urllib.parse.unquote(parts.username)
            self.password = self.password or urllib.parse.unquote(parts.password or "")
        netloc = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        if parts.port is not None:
            netloc += f":{parts.port}"
        self.base_url = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        if self.compress is None:
            self.compress = parts.hostname not in ("127.0.0.1", "localhost", "::1")
        self._local = threading.local()
        self._rng = random.Random(self.retry.seed)
        self._rng_lock = threading.Lock()
        self.requests_sent = 0
        self._count_lock = threading.Lock()

    @staticmethod
    def _strip_userinfo(url: str) -> str:
        parts = urllib.parse.urlsplit(url)
        if parts.username is None:
            return url
        host = parts.netloc.rsplit("@", 1)[-1]
        return urllib.parse.urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))

    def __repr__(self) -> str:  # never show credentials
        return f"HttpClient({self.base_url!r})"

    # -- secrets ---------------------------------------------------------------------------------
    def _secrets(self) -> list[str]:
        out = [s for s in (self.token, self.password) if s]
        for name, value in self.headers.items():
            if name.lower() in ("authorization", "cookie", "x-api-key") and value:
                out.append(value)
        return out

    def redact(self, text: str) -> str:
        """``text`` with every credential of this client replaced by ``***``."""
        for secret in sorted(self._secrets(), key=len, reverse=True):
            text = text.replace(secret, "***")
            quoted = urllib.parse.quote(secret, safe="")
            if quoted != secret:
                text = text.replace(quoted, "***")
        return text

    # -- session ---------------------------------------------------------------------------------
    def _session(self) -> requests.Session:
        # one session per thread: requests.Session is not documented as thread-safe
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = False  # no proxies or .netrc credentials from the environment
            session.headers.update(
                {"User-Agent": "vfanalytics", "Accept-Encoding": "gzip" if self.compress else "identity"}
            )
            session.headers.update(dict(self.headers))
            if self.token:
                session.headers["Authorization"] = f"Bearer {self.token}"
            elif self.username is not None:
                session.auth = (self.username, self.password or "")
            session.verify = self.ca_file if self.ca_file else self.verify
            self._local.session = session
        return session

    def close(self) -> None:
        session = getattr(self._local, "session", None)
        if session is not None:
            session.close()
            self._local.session = None

    # -- requests --------------------------------------------------------------------------------
    def get(self, path: str, params: Mapping[str, Any] | list[tuple[str, Any]] | None = None) -> Response:
        """GET ``base_url + path`` with retries; returns the complete 2xx :class:`Response`."""
        return self.request("GET", path, params=params)

    def post_form(self, path: str, data: Mapping[str, Any] | list[tuple[str, Any]]) -> Response:
        """POST a form (Prometheus accepts long queries this way)."""
        return self.request("POST", path, data=data)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | list[tuple[str, Any]] | None = None,
        data: Mapping[str, Any] | list[tuple[str, Any]] | None = None,
    ) -> Response:
        url = self.base_url + path
        last_problem = "no attempt made"
        for attempt in range(self.retry.attempts):
            retry_after: float | None = None
            with self._count_lock:
                self.requests_sent += 1
            try:
                resp = self._session().request(
                    method, url, params=params, data=data, timeout=(self.timeout, self.timeout), stream=False
                )
                body = resp.content
                declared = resp.headers.get("Content-Length")
                # requests does not notice a body cut short when the server closes early
                if declared is not None and "Content-Encoding" not in resp.headers and int(declared) != len(body):
                    raise requests.exceptions.ChunkedEncodingError(
                        f"truncated body: {len(body)} of {declared} bytes"
                    )
            except requests.exceptions.SSLError as exc:
                raise SourceError(self.redact(f"{self.base_url}: TLS error: {exc}")) from None
            except (
                requests.exceptions.ConnectionError,
                requests.exceptions.Timeout,
                requests.exceptions.ChunkedEncodingError,
                requests.exceptions.ContentDecodingError,
            ) as exc:
                last_problem = f"{type(exc).__name__}: {exc}"
            else:
                if 200 <= resp.status_code < 300:
                    return Response(resp.status_code, {k.lower(): v for k, v in resp.headers.items()}, body, attempt + 1)
                message = self._server_message(body)
                if resp.status_code not in RETRY_STATUSES:
                    raise SourceHTTPError(
                        self.redact(f"{self.base_url}{path}: HTTP {resp.status_code}: {message}"), resp.status_code
                    )
                last_problem = f"HTTP {resp.status_code}: {message}"
                if resp.status_code == 429 or resp.headers.get("Retry-After"):
                    retry_after = _retry_after(resp.headers.get("Retry-After"))
            if attempt + 1 < self.retry.attempts:
                with self._rng_lock:
                    pause = self.retry.delay(attempt, self._rng, retry_after)
                self.sleep(pause)
        raise RetryBudgetExceeded(
            self.redact(
                f"{self.base_url}{path}: giving up after {self.retry.attempts} tries; last: {last_problem[:300]}"
            )
        )

    @staticmethod
    def _server_message(body: bytes) -> str:
        """The server's own words: Prometheus' JSON ``error`` field, else the body text."""
        text = body.decode("utf-8", "replace").strip()
        try:
            obj = orjson.loads(body)
        except orjson.JSONDecodeError:
            return " ".join(text.split())[:1000] or "(empty body)"
        if isinstance(obj, dict) and obj.get("error"):
            kind = obj.get("errorType")
            return f"{kind}: {obj['error']}" if kind else str(obj["error"])
        if isinstance(obj, str):
            return obj
        return " ".join(text.split())[:1000]
