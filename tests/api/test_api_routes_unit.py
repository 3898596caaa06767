"""Pieces of the API that need no server: an unexpected failure still answers in JSON, and the
script args of a request become the script's values by name (a list in the order of its argument
model, or an object)."""

from __future__ import annotations

import logging

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from pydantic import Field

from api.convert import declared_values
from api.errors import JSONErrorRoute
from engine.plugins.args import ArgsError, ExtensionArgs


def test_an_unexpected_failure_is_a_json_500_and_validation_stays_422(caplog):
    app, router = FastAPI(), APIRouter(route_class=JSONErrorRoute)

    @router.get("/boom")
    def boom() -> None:
        raise RuntimeError("kaput")

    @router.get("/echo")
    def echo(x: int) -> dict:
        return {"x": x}

    app.include_router(router)
    client = TestClient(app)
    with caplog.at_level(logging.ERROR):
        answer = client.get("/boom")
    assert answer.status_code == 500 and answer.json() == {"error": "RuntimeError", "detail": "kaput"}
    assert "kaput" in caplog.text  # the traceback goes to the log
    assert client.get("/echo?x=nope").status_code == 422 and client.get("/echo?x=2").json() == {"x": 2}


class Panel(ExtensionArgs):
    on: bool = False
    level: int = Field(2, ge=0, le=5)
    name: str = "x"


def test_script_args_by_position_or_by_name():
    assert declared_values(Panel, [True]) == {"on": True, "level": 2, "name": "x"}  # the rest: the defaults
    assert declared_values(Panel, {"level": 4}) == {"on": False, "level": 4, "name": "x"}
    assert declared_values(Panel, None)["level"] == 2
    with pytest.raises(ArgsError, match="at most 3"):
        declared_values(Panel, [1, 2, 3, 4])
    with pytest.raises(ArgsError, match="unknown arg"):
        declared_values(Panel, {"nope": 1})
    with pytest.raises(ArgsError, match="must be a list"):
        declared_values(Panel, "text")
    with pytest.raises(ArgsError, match="less than or equal to 5") as high:
        declared_values(Panel, {"level": 9})
    assert high.value.field == "level"


def test_args_of_an_extension_without_a_model_are_taken_by_name_only():
    assert declared_values(None, {"anything": 1}) == {"anything": 1} and declared_values(None, None) == {}
    with pytest.raises(ArgsError, match="declares no argument order"):
        declared_values(None, [True, 2])
