"""Pieces of the API that need no server: an unexpected failure still answers in JSON, and the
script args of a request become the script's values by name (list in UI order, or an object)."""

from __future__ import annotations

import logging

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient

from api.errors import JSONErrorRoute
from api.script_args import named_args


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


def test_script_args_by_position_or_by_name():
    import gradio as gr

    def ui() -> dict:
        return {"on": gr.Checkbox(False), "level": gr.Slider(0, 5, value=2), "name": gr.Textbox("x")}

    assert named_args(ui, [True]) == {"on": True, "level": 2, "name": "x"}  # the rest: the UI's defaults
    assert named_args(ui, {"level": 4}) == {"on": False, "level": 4, "name": "x"}
    assert named_args(ui, None)["level"] == 2
    with pytest.raises(ValueError, match="at most 3"):
        named_args(ui, [1, 2, 3, 4])
    with pytest.raises(ValueError, match="unknown arg 'nope'"):
        named_args(ui, {"nope": 1})
    with pytest.raises(ValueError, match="must be a list"):
        named_args(ui, "text")
