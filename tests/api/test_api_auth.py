"""api.auth: the user:pass credential format and HTTP Basic checks for the API."""

from __future__ import annotations

import base64

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from api import auth as auth_module
from api.auth import BasicAuth, parse_credentials, require_basic_auth


def basic(user: str | bytes, password: str | bytes) -> str:
    raw = (user.encode() if isinstance(user, str) else user) + b":"
    raw += password.encode() if isinstance(password, str) else password
    return "Basic " + base64.b64encode(raw).decode()


# --- parse_credentials -----------------------------------------------------------------------------


@pytest.mark.parametrize("text", [None, "", "   ", "\n"])
def test_no_credentials(text):
    assert parse_credentials(text) == []


def test_password_may_contain_colons_and_entries_are_stripped():
    assert parse_credentials(" alice:se:cr:et , bob:pw,") == [("alice", "se:cr:et"), ("bob", "pw")]


def test_spaces_inside_an_entry_are_kept():
    assert parse_credentials("alice: x y ") == [("alice", " x y")]


def test_line_breaks_separate_entries_and_an_empty_password_is_allowed():
    assert parse_credentials("alice:1\nbob:") == [("alice", "1"), ("bob", "")]


@pytest.mark.parametrize(
    ("text", "index"),
    [("alice:x,bobhunter2", 2), (":hunter2", 1), ("alice:x, :hunter2", 2)],
)
def test_bad_entries_are_named_by_index_not_content(text, index):
    with pytest.raises(ValueError) as caught:
        parse_credentials(text)
    message = str(caught.value)
    assert f"entry {index}" in message
    assert "hunter2" not in message


# --- BasicAuth.check -------------------------------------------------------------------------------

AUTH = BasicAuth([("alice", "wonder:land"), ("bob", "s3cret"), ("zoë", "pässword")])


def test_right_credentials_pass():
    assert AUTH.check(basic("alice", "wonder:land"))
    assert AUTH.check(basic("bob", "s3cret"))
    assert AUTH.check(basic("zoë", "pässword"))  # UTF-8, as RFC 7617 prescribes
    assert AUTH.check("basic " + basic("bob", "s3cret").split()[1])  # the scheme is case-insensitive


@pytest.mark.parametrize(
    "header",
    [
        basic("alice", "s3cret"),  # another user's password
        basic("bob", "wonder:land"),
        basic("mallory", "s3cret"),  # unknown user
        basic("bob", "s3cret "),
        basic("bob", ""),
        basic("", ""),
        basic("zoë".encode("latin-1"), "pässword".encode("latin-1")),  # not what was configured
        None,
        "",
        "Basic",
        "Basic ",
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(b"bob-without-colon").decode(),
        "Bearer " + base64.b64encode(b"bob:s3cret").decode(),
        "Basic Ym9iOnMzY3JldA==é",
        "Basic " + "A" * 20000,
    ],
)
def test_wrong_or_malformed_headers_fail(header):
    assert AUTH.check(header) is False


def test_every_pair_is_compared_even_after_a_match(monkeypatch):
    calls = []
    real = auth_module.hmac.compare_digest

    def counting(a, b):
        calls.append(b)
        return real(a, b)

    monkeypatch.setattr(auth_module.hmac, "compare_digest", counting)
    assert AUTH.check(basic("alice", "wonder:land"))  # the first pair matches
    assert len(calls) == 6  # user and password of all three pairs
    calls.clear()
    assert not AUTH.check(basic("nobody", "x"))
    assert len(calls) == 6


def test_an_empty_credential_list_is_refused():
    with pytest.raises(ValueError):
        BasicAuth([])


# --- the FastAPI dependency ------------------------------------------------------------------------


def make_client(auth: BasicAuth | None) -> TestClient:
    app = FastAPI(dependencies=[Depends(require_basic_auth(auth))])

    @app.get("/ping")
    def ping() -> dict:
        return {"ok": True}

    return TestClient(app)


def test_dependency_refuses_missing_and_wrong_credentials():
    client = make_client(BasicAuth([("alice", "pw")]))
    for headers in ({}, {"Authorization": basic("alice", "nope")}, {"Authorization": "Basic %%%"}):
        response = client.get("/ping", headers=headers)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Basic"
        assert response.json() == {"detail": "Incorrect username or password"}


def test_dependency_admits_the_right_credentials():
    client = make_client(BasicAuth([("alice", "pw")]))
    response = client.get("/ping", headers={"Authorization": basic("alice", "pw")})
    assert response.status_code == 200
    assert response.json() == {"ok": True}
    assert client.get("/ping", auth=("alice", "pw")).status_code == 200  # httpx's own encoder


def test_dependency_without_auth_lets_everything_through():
    assert make_client(None).get("/ping").status_code == 200


def test_gradio_auth_and_api_flags_reach_the_server():
    from engine.cmd_args import parse_args
    from tests.fakes.fake_engine import FakeEngine
    from ui.app import page_kwargs
    from ui.server import build_app

    kwargs = page_kwargs(parse_args(["--gradio-auth", "ann:pw1, bea:pw:2"]))
    assert kwargs["auth"] == [("ann", "pw1"), ("bea", "pw:2")]
    assert "auth" not in page_kwargs(parse_args(["--api"]))
    # FastAPI's interactive docs describe /sdapi/v1: served with --api only.
    with_api = TestClient(build_app(FakeEngine(), parse_args(["--api"])), base_url="http://127.0.0.1")
    assert with_api.get("/docs").status_code == 200
    assert "/sdapi/v1/txt2img" in with_api.get("/openapi.json").json()["paths"]
    without = TestClient(build_app(FakeEngine(), parse_args([])), base_url="http://127.0.0.1")
    assert without.get("/openapi.json").status_code == 404
    assert without.get("/sdapi/v1/samplers").status_code == 404
