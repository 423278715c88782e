"""Fail fast: every remote endpoint is checked before any model is loaded (key variable, then one cheap request), and
a problem exits 2 within seconds naming the role, the variable or URL, and the server's reply.
"""

from __future__ import annotations

import socket
import time

import pytest
from scripted_pipeline import Scripted, settings

import ropd.training.run
from ropd.cli import main
from ropd.config import load_config
from ropd.testing.scripted_server import Reply, ScriptedServer
from ropd.training.preflight import EndpointError, check_endpoints, remote_endpoints

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def no_model_load(monkeypatch):
    """Record every student or teacher load the run attempts (it must attempt none)."""
    loads: list[str] = []

    def refuse(name, *args, **kwargs):
        loads.append(name)
        raise AssertionError(f"loaded {name} before the endpoint check")

    monkeypatch.setattr(ropd.training.run, "load_model", refuse)
    monkeypatch.setattr(ropd.training.run, "load_tokenizer", refuse)
    return loads


def run_train(*flags: str) -> tuple[int, float]:
    started = time.monotonic()
    code = main(["train", *flags])
    return code, time.monotonic() - started


def test_an_unset_key_exits_2_naming_the_variable_before_loading_the_student(tmp_path, monkeypatch, capsys, no_model_load):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    code, seconds = run_train("--teacher", "gpt-4o", "--student", "smollm2-135m", "--output", str(tmp_path / "run"))
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and seconds < 10
    assert "teacher (gpt-4o at https://api.openai.com/v1): the environment variable OPENAI_API_KEY" in err and "not set" in err
    assert no_model_load == []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_endpoint_exits_2_naming_its_url(tmp_path, capsys, no_model_load):
    url = f"http://127.0.0.1:{free_port()}/v1"
    code, seconds = run_train("--teacher", "scripted", "--teacher-base-url", url, "--student", "tiny-random", "--output", str(tmp_path))
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and seconds < 30
    assert f"teacher (scripted): cannot reach {url}" in err
    assert no_model_load == []


def test_a_model_the_server_refuses_is_named_with_the_server_reply(tmp_path, capsys, no_model_load):
    with ScriptedServer(lambda body: Reply(status=404), models=("another-model",)) as server:
        overrides = settings(server, tmp_path / "run")
        config = load_config(overrides=overrides)
        with pytest.raises(EndpointError) as caught:
            check_endpoints(config)
    message = str(caught.value)
    assert message.startswith("teacher (scripted at http://127.0.0.1:")
    assert "refused the endpoint check: HTTP 404" in message and "scripted error 404" in message and "check the model name" in message
    assert server.model_lists == 1 and len(server.requests) == 1 and server.requests[0]["max_tokens"] == 1


def test_the_check_is_one_cheap_request_counted_in_usage_and_can_be_turned_off(tmp_path):
    with ScriptedServer(Scripted()) as listed, ScriptedServer(lambda body: "OK", models=("another-model",)) as unlisted:
        judge = {"judge.model": "scripted-judge", "judge.base_url": unlisted.base_url}
        config = load_config(overrides=settings(listed, tmp_path / "run", **judge))
        assert set(remote_endpoints(config)) == {"teacher", "rubricator and judge"}
        used = check_endpoints(config)
        assert (used["teacher"].checks, used["teacher"].requests) == (1, 0)  # the model list: nothing paid
        assert (used["judge"].checks, used["judge"].requests, used["judge"].prompt_tokens) == (2, 1, 10)  # list, then 1 token
        assert listed.model_lists == 1 and listed.requests == [] and unlisted.model_lists == 1 and len(unlisted.requests) == 1
        off = load_config(overrides=settings(listed, tmp_path / "run", **judge, **{"teacher.check": False, "judge.check": False}))
        assert check_endpoints(off) == {}
        assert listed.model_lists == 1 and unlisted.model_lists == 1


def test_local_and_offline_endpoints_are_not_checked(tmp_path):
    local = load_config(overrides={"teacher.model": "qwen2.5-coder-0.5b"})  # ropd serves it itself
    assert remote_endpoints(local) == {}
    offline = load_config(overrides={"teacher.model": "gpt-4o", "teacher.offline_only": True, "judge.model": "qwen2.5-coder-0.5b"})
    assert remote_endpoints(offline) == {}
    assert remote_endpoints(load_config(overrides={"method.name": "grpo"})) == {}
