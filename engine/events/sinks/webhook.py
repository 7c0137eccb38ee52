"""HTTP webhook: each event as a JSON POST (standard library only, so nothing to install).

The body is the event's line of ``events.jsonl``. A bearer token, if any, is read from the environment
variable the config names (never from the rules file or the command line, which other users can read).
Connection errors, timeouts, HTTP 408, 429 and 5xx are retried with capped backoff; any other 4xx means
the receiver will never take this event, so it is counted as refused and the next one goes. A redirect is
not followed (urllib would resend the POST as a bodiless GET, with the token, to wherever it points): it is
refused, naming the address to configure instead. ``user:password@`` in the URL is sent as HTTP Basic
authentication (urllib does not take it from the URL) and never shown.
"""
from __future__ import annotations

import base64
import os
import socket
import urllib.error
import urllib.parse
import urllib.request

from ..._version import __version__
from ...errors import ConfigError
from ...stream.sources import redact
from ..delivery import EventSink, Payload, Reject, Retry
from ..rules import WebhookConfig

RETRIED_STATUS = frozenset({408, 425, 429})


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D102 - urllib's hook
        return None  # urllib then raises the 3xx as an HTTPError


_OPENER = urllib.request.build_opener(_NoRedirect)


class WebhookSink(EventSink):
    """POST events to ``config.url``.

    Args:
        config: URL, token variable, timeout.
        queue_size: events held while the receiver is down.
        backoff_max: cap of the delay between retries, seconds (default ``config.retry_max``).
    """

    def __init__(self, config: WebhookConfig, queue_size: int = 1000, backoff_max: float | None = None) -> None:
        super().__init__("webhook", queue_size, config.retry_max if backoff_max is None else backoff_max)
        url = urllib.parse.urlsplit(config.url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ConfigError(f"webhook URL '{redact(config.url)}' is not an http:// or https:// URL",
                              "pass --webhook https://host/path")
        self.config, self.label = config, redact(config.url)
        try:
            port = url.port
        except ValueError:
            raise ConfigError(f"webhook URL '{self.label}' has a bad port",
                              "pass --webhook https://host[:port]/path") from None
        self._address = (url.hostname, port or (443 if url.scheme == "https" else 80))
        self._headers = {"Content-Type": "application/json", "User-Agent": f"yolo-deploy/{__version__}"}
        host = url.netloc.rpartition("@")[2]
        self._url = urllib.parse.urlunsplit(url._replace(netloc=host))  # no credentials in what urllib sees
        if url.username is not None:
            if config.token_env:
                raise ConfigError(f"webhook URL '{self.label}' carries a user and password and a token is set too",
                                  "use one: the token variable (Bearer) or user:password@ in the URL (Basic)")
            pair = f"{urllib.parse.unquote(url.username)}:{urllib.parse.unquote(url.password or '')}"
            self._headers["Authorization"] = "Basic " + base64.b64encode(pair.encode("utf-8")).decode("ascii")
        if config.token_env:
            token = os.environ.get(config.token_env)
            if not token:
                raise ConfigError(f"the webhook token variable {config.token_env} is not set",
                                  f"export {config.token_env}=<token> before starting, or drop the token setting")
            self._headers["Authorization"] = f"Bearer {token}"

    def open(self) -> None:
        try:  # only to warn early: an event is what really goes out, and it is retried
            socket.create_connection(self._address, timeout=self.config.timeout).close()
        except OSError as e:
            raise OSError(f"cannot reach {self.label} ({e})") from None

    def deliver(self, payload: Payload) -> None:
        request = urllib.request.Request(self._url, data=payload.body.encode("utf-8"), headers=self._headers,
                                         method="POST")
        try:
            with _OPENER.open(request, timeout=self.config.timeout) as response:
                response.read()
        except urllib.error.HTTPError as e:
            if 300 <= e.code < 400:
                where = redact(e.headers.get("Location", "") or "") or "an address it did not give"
                raise Reject(f"{self.label} answered HTTP {e.code}, a redirect to {where}: not followed; "
                             "configure that address instead") from None
            if e.code in RETRIED_STATUS or e.code >= 500:
                raise Retry(f"{self.label} answered HTTP {e.code}") from None
            raise Reject(f"{self.label} answered HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError) as e:  # refused, unreachable, timed out
            raise Retry(f"{self.label}: {getattr(e, 'reason', e)}") from None
