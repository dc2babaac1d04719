"""RequestGuard without Ray: Host names, cross-site browser requests and CORS, so that DNS-rebinding and
other sites' pages cannot make a visitor's browser use the service (docs/api.md)."""

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import ValidationError

from deployments.guard import RequestGuard
from deployments.ingress import api
from nlpserve.schemas import IngressSettings

BASE = "http://127.0.0.1:8000"
TEXT = '{"text": "Tim Cook visited Berlin."}'
FOREIGN = "evil.example"


def client(root_path: str = "", **settings) -> TestClient:
    """An app with the ingress's routes' methods, behind the guard with these settings."""
    app = FastAPI()
    app.state.settings = IngressSettings(**settings)
    app.add_middleware(RequestGuard, state=app.state)

    @app.post("/analyze")
    async def analyze(body: dict) -> dict:
        return body

    @app.get("/")
    async def page() -> str:
        return "page"

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    return TestClient(app, base_url=BASE, root_path=root_path)


def post(c: TestClient, **headers: str):
    # curl -d: a form content type, read as JSON all the same.
    return c.post("/analyze", content=TEXT, headers={"content-type": "application/x-www-form-urlencoded", **headers})


@pytest.mark.parametrize("host", ["127.0.0.1:8000", "localhost:8000", "LocalHost", "[::1]:8000", "127.0.0.1:9"])
def test_curl_without_origin_to_a_local_host_passes(host):
    r = post(client(), host=host)
    assert r.status_code == 200, r.text
    assert r.json() == {"text": "Tim Cook visited Berlin."}


@pytest.mark.parametrize("host", [FOREIGN, FOREIGN + ":8000", "localhost.evil.example", "127.0.0.1.nip.io:8000", ""])
@pytest.mark.parametrize("method,path", [("POST", "/analyze"), ("GET", "/"), ("GET", "/docs"), ("POST", "/healthz")])
def test_a_foreign_host_is_refused_on_every_route(host, method, path):
    """A DNS-rebinding page sends its own name as Host: it gets neither answers nor the page."""
    r = client().request(method, path, content=TEXT, headers={"host": host})
    assert r.status_code == 400, r.text
    assert r.json()["detail"] == f"Host {host.split(':')[0]!r} is not allowed; add it to the Ingress's allowed_hosts"


def test_listed_hosts_pass_with_any_port_and_replace_the_defaults():
    c = client(allowed_hosts=["nlp.internal", "NLP.example.com"])
    assert post(c, host="nlp.internal:9000").status_code == 200
    assert post(c, host="nlp.example.com").status_code == 200
    assert post(c, host="localhost:8000").status_code == 400


def test_star_allows_any_host():
    c = client(allowed_hosts=["*"])
    assert post(c, host="nlpserve.default.svc.cluster.local:8000").status_code == 200
    assert c.get("/", headers={"host": "10.0.3.7:8000"}).status_code == 200


@pytest.mark.parametrize("root_path", ["", "/faulty"])
def test_healthz_answers_a_probe_with_any_host(root_path):
    """Load balancers probe with a node's IP as Host; the app may be under a Serve route prefix."""
    r = client(root_path).get(root_path + "/healthz", headers={"host": "10.0.3.7:8000"})
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    assert client(root_path).get(root_path + "/", headers={"host": "10.0.3.7:8000"}).status_code == 400


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example",
        "http://127.0.0.1:3000",  # another local service's page: same site, another origin
        "http://localhost:8000",  # the Host is 127.0.0.1:8000
        "http://127.0.0.1:8000.evil.example",
        "null",  # a sandboxed frame or a file:// page
    ],
)
def test_a_cross_site_origin_is_refused(origin):
    r = post(client(), origin=origin)
    assert r.status_code == 403, r.text
    assert r.json()["detail"] == (
        f"cross-site request from {origin!r} refused; add the origin to cors_origins to allow it"
    )


def test_a_cross_site_request_is_refused_before_its_body_is_read():
    r = post(client(max_body_bytes=10), origin="https://evil.example")
    assert r.status_code == 403  # not 413: the body was never read


def test_a_cross_site_fetch_of_a_get_route_is_refused():
    r = client().get("/", headers={"origin": "https://evil.example", "sec-fetch-site": "cross-site"})
    assert r.status_code == 403


@pytest.mark.parametrize("scheme", ["http", "https"])  # https: the page behind a TLS proxy
def test_the_page_posting_to_its_own_origin_passes(scheme):
    r = post(client(), origin=f"{scheme}://127.0.0.1:8000", **{"sec-fetch-site": "same-origin"})
    assert r.status_code == 200, r.text
    assert "access-control-allow-origin" not in r.headers


def test_a_cross_site_request_without_origin_is_refused():
    """Sec-Fetch-Site tells a browser's request from another site even without an Origin header."""
    c = client()
    assert post(c, **{"sec-fetch-site": "cross-site"}).status_code == 403
    r = c.get("/", headers={"sec-fetch-site": "cross-site", "sec-fetch-mode": "no-cors"})  # an <img> or <script>
    assert r.status_code == 403
    assert r.json()["detail"] == "cross-site browser request refused (Sec-Fetch-Site: cross-site)"


def test_following_a_link_from_another_site_to_the_page_passes():
    r = client().get("/", headers={"sec-fetch-site": "cross-site", "sec-fetch-mode": "navigate"})
    assert r.status_code == 200, r.text
    # A form posted from another site is a navigation too: refused by its Origin, or without one
    # (stripped by a privacy extension) by Sec-Fetch-Site.
    form = {"sec-fetch-site": "cross-site", "sec-fetch-mode": "navigate"}
    assert post(client(), origin="https://evil.example", **form).status_code == 403
    assert post(client(), **form).status_code == 403


@pytest.mark.parametrize("site", ["same-origin", "same-site", "none"])  # none: typed in the address bar
def test_browser_requests_that_are_not_cross_site_pass(site):
    assert post(client(), **{"sec-fetch-site": site}).status_code == 200


def test_a_listed_cors_origin_gets_the_cors_answer_on_a_preflight_and_a_post():
    c = client(cors_origins=["https://app.example"])
    preflight = {"access-control-request-method": "POST", "access-control-request-headers": "content-type"}
    r = c.options("/analyze", headers={"origin": "https://app.example", **preflight})
    assert r.status_code == 200, r.text
    assert r.headers["access-control-allow-origin"] == "https://app.example"
    assert "POST" in r.headers["access-control-allow-methods"]
    assert "content-type" in r.headers["access-control-allow-headers"].lower()

    r = post(c, origin="https://app.example", **{"sec-fetch-site": "cross-site"})
    assert r.status_code == 200, r.text
    assert r.headers["access-control-allow-origin"] == "https://app.example"

    assert c.options("/analyze", headers={"origin": "https://evil.example", **preflight}).status_code == 403
    assert post(c, origin="https://evil.example").status_code == 403
    assert "access-control-allow-origin" not in post(c).headers  # curl gets no CORS headers


def test_cors_headers_come_with_the_body_checks_answers_too():
    r = post(client(cors_origins=["https://app.example"], max_body_bytes=10), origin="https://app.example")
    assert r.status_code == 413
    assert r.headers["access-control-allow-origin"] == "https://app.example"


def test_cors_star_lets_every_site_call():
    r = post(client(cors_origins=["*"]), origin="https://anywhere.example")
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "*"


@pytest.mark.parametrize(
    "settings",
    [
        {"allowed_hosts": ["localhost:8000"]},  # a port never matches: any port is allowed
        {"allowed_hosts": ["http://nlp.example.com"]},
        {"cors_origins": ["https://app.example/"]},  # browsers send no trailing slash
        {"cors_origins": ["app.example"]},
    ],
)
def test_settings_that_could_never_match_are_refused(settings):
    with pytest.raises(ValidationError):
        IngressSettings(**settings)


def test_the_service_app_is_guarded_by_default():
    """The ingress's own app refuses before routing, so this needs no Ray."""
    c = TestClient(api, base_url=BASE)
    assert c.get("/", headers={"host": FOREIGN}).status_code == 400
    assert post(c, origin="https://evil.example").status_code == 403
    assert post(c, **{"sec-fetch-site": "cross-site"}).status_code == 403
