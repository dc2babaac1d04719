"""The request guard in front of the ingress's routes: Host and Origin checks, then the body's size and
UTF-8, before anything parses a request."""

from fastapi.datastructures import Headers
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse

from nlpserve.schemas import IngressSettings


class RequestGuard:
    """Refuses foreign Host names and cross-site browser requests, then oversized or non-UTF-8 bodies,
    before anything parses them, and reads every POST body as JSON whatever its content type (so
    plain ``curl -d`` works)."""

    def __init__(self, app, state) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope, receive, send) -> None:
        # Health probes reveal no answers, and load balancers send them with a node's IP as their Host.
        # Serve puts the app's route prefix in root_path, and path starts with it.
        root = scope.get("root_path", "")
        probe = scope.get("method") == "GET" and scope.get("path") in (root + "/healthz", root + "/readyz")
        if scope["type"] != "http" or probe:
            return await self.app(scope, receive, send)
        settings: IngressSettings = self.state.settings
        headers = Headers(scope=scope)
        refused = _refusal(scope["method"], headers, settings)
        if refused:
            return await self._reject(scope, receive, send, *refused)
        app = self._read_body if scope["method"] == "POST" else self.app
        origin = headers.get("origin")
        if origin and _listed(origin, settings.cors_origins):
            # Around the body checks, so a listed site's page can read their 400 and 413 too.
            app = CORSMiddleware(
                app, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"], allow_headers=["Content-Type"]
            )
        await app(scope, receive, send)

    async def _read_body(self, scope, receive, send) -> None:
        limit = self.state.settings.max_body_bytes
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length", b"0")
        if not declared.isdigit():
            return await self._reject(scope, receive, send, 400, "invalid Content-Length header")
        if int(declared) > limit:
            return await self._reject(scope, receive, send, 413, f"request body is over {limit} bytes")
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return
            size += len(message.get("body", b""))
            if size > limit:
                return await self._reject(scope, receive, send, 413, f"request body is over {limit} bytes")
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as e:
            return await self._reject(
                scope, receive, send, 400, f"request body is not valid UTF-8 ({e.reason} at byte {e.start})"
            )
        headers[b"content-type"] = b"application/json"
        scope = dict(scope, headers=list(headers.items()))
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    @staticmethod
    async def _reject(scope, receive, send, status: int, detail: str) -> None:
        await JSONResponse({"detail": detail}, status_code=status)(scope, receive, send)


def _refusal(method: str, headers: Headers, settings: IngressSettings) -> tuple[int, str] | None:
    """(status, detail) for a request from a foreign Host name or another site's page, else None.

    The Host check stops DNS rebinding (a page whose name now points at 127.0.0.1 reading answers).
    Every POST body is read as JSON whatever its content type, so a cross-site form or "simple"
    fetch (text/plain, no CORS preflight) would reach the routes: the Origin and Sec-Fetch-Site
    checks are what stop them.
    """
    host = headers.get("host", "").lower()
    name = _host_name(host)
    if "*" not in settings.allowed_hosts and name not in settings.allowed_hosts:
        return 400, f"Host {name!r} is not allowed; add it to the Ingress's allowed_hosts"
    origin = headers.get("origin")
    if origin is not None:
        # The scheme is not compared: behind a TLS proxy the page is https and the ingress sees http.
        if origin.lower() in (f"http://{host}", f"https://{host}") or _listed(origin, settings.cors_origins):
            return None
        return 403, f"cross-site request from {origin!r} refused; add the origin to cors_origins to allow it"
    # No Origin: a browser's GET, e.g. an <img> or <script> (refused) or following a link (allowed,
    # the other site cannot read the answer).
    navigation = method == "GET" and headers.get("sec-fetch-mode") == "navigate"
    if headers.get("sec-fetch-site") == "cross-site" and not navigation:
        return 403, "cross-site browser request refused (Sec-Fetch-Site: cross-site)"
    return None


def _host_name(host: str) -> str:
    """A Host header without its port: 'localhost:8000' -> 'localhost', '[::1]:8000' -> '[::1]'."""
    name, colon, port = host.rpartition(":")
    return name if colon and port.isdigit() else host


def _listed(origin: str, origins: list[str]) -> bool:
    return "*" in origins or origin.lower() in origins
