"""api.web_guard on a small app (no model, no server process): which Host names are answered,
which Origins may change state, the protective headers on every response (errors included), and
the --allowed-hosts flag."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect

from api.web_guard import PROTECTIVE_HEADERS, HostPolicy, WebGuard, split_host
from engine.cmd_args import parse_args

LOCAL = HostPolicy.from_flags(listen=False)
LISTENING = HostPolicy(
    listen=True, allowed=frozenset({"studio.lan", "*.example.lan"}), machine=frozenset({"box"})
)


@pytest.mark.parametrize(
    ("header", "host"),
    [
        ("127.0.0.1:7860", "127.0.0.1"),
        ("LOCALHOST", "localhost"),
        ("[::1]:7860", "::1"),
        ("studio.lan.", "studio.lan"),
        ("a.b:80", "a.b"),
        ("", None),
        ("evil.example/path", None),
        ("user@evil.example", None),
        ("[::1", None),
        ("[::1]x", None),
        ("[not-ip]:80", None),
        ("host:port", None),
        ("a:1:2", None),
    ],
)
def test_host_headers_are_parsed_strictly(header, host):
    assert split_host(header) == host


@pytest.mark.parametrize(
    ("host", "local", "listening"),
    [
        ("127.0.0.1:7860", True, True),
        ("localhost:7860", True, True),
        ("[::1]:7860", True, True),
        ("127.8.9.10", True, True),  # the whole loopback range
        ("rebind.example.invalid", False, False),  # the DNS-rebinding case
        ("192.168.1.20:7860", False, True),  # an address in Host is a direct connection
        ("[fe80::1]:7860", False, True),
        ("studio.lan:7860", False, True),
        ("cam.example.lan", False, True),  # *.example.lan
        ("example.lan", False, False),  # the pattern covers sub-domains only
        ("box", False, True),  # the machine's own name, with --listen
        ("localhost.evil.example", False, False),
        (None, False, False),
    ],
)
def test_which_hosts_are_answered(host, local, listening):
    assert LOCAL.host_allowed(host) is local
    assert LISTENING.host_allowed(host) is listening


def test_a_star_turns_the_host_check_off():
    policy = HostPolicy.from_flags(listen=False, allowed_hosts=["*"])
    assert policy.host_allowed("anything.example") and policy.host_allowed(None)


@pytest.mark.parametrize(
    ("origin", "host", "allowed"),
    [
        ("http://127.0.0.1:7860", "127.0.0.1:7860", True),  # the page itself
        ("http://localhost:7860", "localhost:7860", True),
        ("http://evil.example", "127.0.0.1:7860", False),
        ("http://127.0.0.1:3000", "127.0.0.1:7860", False),  # another local server's page
        ("null", "127.0.0.1:7860", False),  # sandboxed frames and file:// pages
        ("file://", "127.0.0.1:7860", False),
        ("https://studio.lan", "127.0.0.1:7860", True),  # a reverse proxy named with --allowed-hosts
        ("http://evil.example", "evil.example", True),  # same origin; the Host check refuses it first
    ],
)
def test_which_origins_may_change_state(origin, host, allowed):
    policy = HostPolicy.from_flags(listen=False, allowed_hosts=["studio.lan"])
    assert policy.origin_allowed(origin, host) is allowed


def guarded_app(policy: HostPolicy = LOCAL) -> TestClient:
    app = FastAPI()

    @app.get("/page")
    def page() -> dict:
        return {"ok": True}

    @app.post("/change")
    def change() -> dict:
        return {"changed": True}

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("kaput")

    @app.websocket("/ws")
    async def ws(socket: WebSocket) -> None:
        await socket.accept()
        await socket.send_text("hello")
        await socket.close()

    return TestClient(WebGuard(app, policy), base_url="http://127.0.0.1:7860", raise_server_exceptions=False)


def has_protective_headers(response) -> bool:
    return all(response.headers.get(name.decode()) == value.decode() for name, value in PROTECTIVE_HEADERS)


def test_foreign_hosts_get_a_403_with_a_clear_json_message():
    client = guarded_app()
    answer = client.get("/page", headers={"Host": "rebind.example.invalid:7860"})
    assert answer.status_code == 403 and answer.headers["content-type"] == "application/json"
    detail = answer.json()["detail"]
    assert "rebind.example.invalid" in detail and "--allowed-hosts rebind.example.invalid" in detail
    assert has_protective_headers(answer)
    assert client.post("/change", headers={"Host": "rebind.example.invalid"}).status_code == 403


def test_state_changing_requests_need_our_origin_and_reads_do_not():
    client = guarded_app()
    assert client.post("/change").json() == {"changed": True}  # no Origin: a script, not a browser
    assert client.post("/change", headers={"Origin": "http://127.0.0.1:7860"}).status_code == 200
    refused = client.post("/change", headers={"Origin": "http://evil.example"})
    assert refused.status_code == 403 and "cross-site request refused" in refused.json()["detail"]
    assert client.post("/change", headers={"Origin": "null"}).status_code == 403
    # A cross-site GET changes nothing, and the browser does not let the page read the answer.
    assert client.get("/page", headers={"Origin": "http://evil.example"}).status_code == 200


def test_every_response_carries_the_protective_headers():
    client = guarded_app()
    for response in (client.get("/page"), client.get("/missing"), client.get("/boom"), client.post("/page")):
        assert has_protective_headers(response), response.status_code
    assert client.get("/boom").status_code == 500  # even the server's own error page


def test_websockets_are_checked_too():
    client = guarded_app()
    url = "ws://127.0.0.1:7860/ws"
    with client.websocket_connect(url, headers={"Origin": "http://127.0.0.1:7860"}) as socket:
        assert socket.receive_text() == "hello"
    for headers in ({"Origin": "http://evil.example"}, {"Host": "rebind.example.invalid"}):
        with (
            pytest.raises(WebSocketDisconnect) as closed,
            client.websocket_connect("/ws", headers=headers) as s,
        ):
            s.receive_text()
        assert closed.value.code == 1008


def test_allowed_hosts_flag():
    args = parse_args(["--listen", "--allowed-hosts", "Studio.LAN, *.example.lan"])
    assert args.allowed_hosts == ("studio.lan", "*.example.lan")
    assert parse_args([]).allowed_hosts == ()
    for bad in ("http://studio.lan", "studio.lan:80", "a/b", "*evil", "-x"):
        with pytest.raises(SystemExit):
            parse_args(["--allowed-hosts", bad])
