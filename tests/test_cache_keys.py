"""Cache keys name what produced a result: a local model is keyed by its weights and how it is served, never by its
name alone; a teacher answer cut off at max_tokens is cached, marked, and not handed out as a reference."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from ropd.config import PUBLISHED_JUDGE, ModelAlias, load_config
from ropd.endpoints.cache import ResultCache
from ropd.endpoints.models import ensure_tiny_random, weights_fingerprint
from ropd.endpoints.serve import local_identity
from ropd.reward.setup import build_rubric_reward, judge_endpoint_for
from ropd.reward.teacher import TeacherError, build_teacher_pool
from ropd.testing.judge_scripts import blocks, judge_reply, rubric_json, user_text
from ropd.testing.scripted_server import Reply, ScriptedServer
from ropd.types import PromptRow

pytestmark = pytest.mark.timeout(120)

ROWS = [PromptRow(id=f"p{i}", prompt=[{"role": "user", "content": f"What is {i} + {i}?"}]) for i in range(2)]


def answer_by_seed(body: dict) -> Reply:
    """One answer per request (n ignored); samples with an odd seed are cut off at max_tokens."""
    seed = body.get("seed") or 0
    return Reply(content=f"answer {seed} to {user_text(body)}", finish_reason="length" if seed % 2 else "stop")


def copy_of(seed: int, folder: Path) -> Path:
    shutil.copytree(ensure_tiny_random(seed), folder)
    return folder


def retrain(folder: Path) -> None:
    """One optimizer step on a line of text, saved into the same folder: a retrained teacher with the same name."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder)
    batch = AutoTokenizer.from_pretrained(folder)("The answer is 42.", return_tensors="pt")
    model(**batch, labels=batch["input_ids"]).loss.backward()
    torch.optim.SGD(model.parameters(), lr=0.5).step()
    model.save_pretrained(folder)


def teacher_config(tmp_path: Path, model: str, **teacher):
    overrides = {"teacher.model": model, "teacher.num_answers": 2, "teacher.seed": 0, "output.dir": str(tmp_path)}
    return load_config(overrides=overrides | {f"teacher.{k}": v for k, v in teacher.items()})


def test_a_teacher_retrained_into_the_same_folder_does_not_reuse_the_old_answers(tmp_path):
    folder = copy_of(1, tmp_path / "teacher")
    with ScriptedServer(answer_by_seed) as server, ResultCache(tmp_path / "c.sqlite") as cache:

        def fetch(**teacher) -> tuple[object, int]:
            pool = build_teacher_pool(teacher_config(tmp_path, str(folder), **teacher), cache, local_base_url=server.base_url)
            before = len(server.requests)
            asyncio.run(pool.fetch_all(ROWS, progress=False))
            return pool, len(server.requests) - before

        first, sent = fetch()
        assert sent > 0 and first.client.fingerprint["endpoint"].startswith(f"local:{folder}@")
        again, sent = fetch()  # same weights, another server port: every answer from the cache
        assert sent == 0 and again.usage.cache_hits == 2 * len(ROWS)

        retrain(folder)
        retrained, sent = fetch()
        assert retrained.client.fingerprint["endpoint"] != first.client.fingerprint["endpoint"]
        assert sent > 0 and retrained.usage.cache_hits == 0  # the old answers were not reused

        int8, sent = fetch(serve_dtype="int8")  # the same weights served as int8: answers of their own
        assert int8.client.fingerprint["endpoint"].endswith("/llama.cpp/q8_0") and sent > 0 and int8.usage.cache_hits == 0


def test_an_alias_pointing_elsewhere_gets_another_identity(tmp_path):
    a, b = copy_of(0, tmp_path / "a"), copy_of(1, tmp_path / "b")

    def identity(target: Path, dtype: str = "auto") -> str:
        return local_identity("my-teacher", {"my-teacher": ModelAlias(kind="hub", target=str(target))}, dtype)

    assert identity(a) == identity(a) and identity(a).startswith("local:my-teacher@")
    assert identity(a) != identity(b)
    assert identity(a) != identity(a, "bfloat16")
    # A packaged model is named by the sha256 its GGUF is checked against, and served as shipped whatever the dtype.
    packaged = local_identity("smollm2-135m", dtype="int8")
    assert packaged == local_identity("smollm2-135m") == "local:smollm2-135m@b179c9523d0e6a0f/llama.cpp/gguf"


def test_a_fingerprint_is_remembered_until_a_file_changes_even_to_the_same_size(tmp_path, monkeypatch):
    folder = copy_of(0, tmp_path / "m")
    monkeypatch.setenv("ROPD_HOME", str(tmp_path / "home"))
    first = weights_fingerprint(folder)
    assert weights_fingerprint(folder) == first and list((tmp_path / "home" / "fingerprints").glob("*.json"))
    config = folder / "config.json"
    text = config.read_text()
    config.write_text(text.replace('"hidden_act": "silu"', '"hidden_act": "SILU"'))  # same size, other content
    assert config.stat().st_size == len(text) and weights_fingerprint(folder) != first


def test_the_judge_is_keyed_by_the_weights_of_the_server_it_shares_with_the_teacher(tmp_path):
    folder = copy_of(0, tmp_path / "m")
    shared = teacher_config(tmp_path, str(folder), serve_dtype="int8")  # judge unset: the teacher's model and server
    _, identity = judge_endpoint_for(shared, "http://127.0.0.1:5/v1")
    assert identity == local_identity(str(folder), dtype="int8")
    own = shared.model_copy(update={"judge": shared.judge.model_copy(update={"model": str(copy_of(1, tmp_path / "j"))})})
    assert judge_endpoint_for(own, "http://127.0.0.1:5/v1")[1] == local_identity(str(tmp_path / "j"))
    assert judge_endpoint_for(own, None)[1] is None  # an endpoint the user gave: keyed by its URL as before


def test_answers_cut_off_at_max_tokens_are_cached_marked_and_left_out(tmp_path):
    with ScriptedServer(answer_by_seed) as server, ResultCache(tmp_path / "c.sqlite") as cache:
        config = teacher_config(tmp_path, "scripted", base_url=server.base_url, num_answers=4)
        pool = build_teacher_pool(config, cache)
        samples = asyncio.run(pool.samples(ROWS[0]))
        assert [s.truncated for s in samples] == [False, True, False, True]  # seeds 0..3: the odd ones were cut off
        assert asyncio.run(pool.answers(ROWS[0])) == [samples[0].text, samples[2].text]
        sent = len(server.requests)
        assert pool.count_truncated(ROWS[:1]) == 2 and len(server.requests) == sent  # kept in the cache, marked
        everything = build_teacher_pool(
            config.model_copy(update={"teacher": config.teacher.model_copy(update={"use_truncated": True})}), cache
        )
        assert asyncio.run(everything.answers(ROWS[0])) == [s.text for s in samples] and len(server.requests) == sent

    with ScriptedServer(lambda body: Reply(content="cut", finish_reason="length")) as server, ResultCache(tmp_path / "d.sqlite") as cache:
        pool = build_teacher_pool(teacher_config(tmp_path, "scripted", base_url=server.base_url, max_tokens=64), cache)
        with pytest.raises(TeacherError, match=r"all 2 teacher answers for prompt 'p0' were cut off at max_tokens=64"):
            asyncio.run(pool.answers(ROWS[0]))
        # Fetching (`ropd teach`) keeps them all, marked, and does not fail: only their use as references does.
        assert asyncio.run(pool.fetch_all(ROWS, progress=False)) == {"p0": [], "p1": []}
        assert pool.count_missing(ROWS) == 0 and pool.count_truncated(ROWS) == 4


def test_a_cut_off_teacher_answer_is_not_a_reference_for_the_rubric(tmp_path):
    rubric_requests: list[dict] = []

    def respond(body: dict):
        text = user_text(body)
        if "<<<BEGIN ANSWER" in text:
            return judge_reply(body, lambda criterion, answer: True)
        if "<<<BEGIN REFERENCE" in text:
            rubric_requests.append(body)
            return rubric_json([("right", 1), ("clear", 1), ("short", 1), ("kind", 1)])
        return answer_by_seed(body)

    prompt = {p.id: p for p in ROWS}
    with ScriptedServer(respond) as server, ResultCache(tmp_path / "c.sqlite") as cache:
        config = teacher_config(tmp_path, "scripted", base_url=server.base_url, num_answers=4)
        judge = config.judge.model_copy(update=PUBLISHED_JUDGE)  # the judge's booleans only: no consensus criterion
        reward = build_rubric_reward(config.model_copy(update={"judge": judge}), prompt, cache)
        rewards = asyncio.run(reward(prompts=[ROWS[0].question] * 2, completions=["2", "3"], id=["p0", "p0"]))
    assert rewards == [1.0, 1.0]
    (body,) = rubric_requests
    references = blocks(user_text(body), "REFERENCE")
    assert len(references) == 2 and all(text.startswith(("answer 0", "answer 2")) for text in references.values())


# --- pinned keys: a refactoring that changes a key would make every finished experiment ask again -----------------


class FixedTeacher:
    async def answers(self, row: PromptRow) -> list[str]:
        return ["<think>4 + 4</think>The answer is 8.", "8"]


PINNED_JUDGE = {"score_teacher_answers": "separate", "answer_evidence": True}  # the settings the keys were pinned with


def pinned_keys(tmp_path: Path, **judge: object) -> dict[str, list[str]]:
    """The cache keys one reward call (rubric, rollouts' verdicts, teacher verdicts) and one teacher `chat` store, by role.

    The judge runs with the published settings, changed only by `judge`: the keys stay those of the settings named here,
    whatever the library's defaults."""
    from ropd.config import EndpointConfig
    from ropd.endpoints.llm import LLMClient
    from ropd.reward.rubric_reward import RubricReward

    def respond(body: dict):
        text = user_text(body)
        if "<<<BEGIN ANSWER" in text:
            return judge_reply(body, lambda answer, criterion: "8" in answer)
        if "<<<BEGIN REFERENCE" in text:
            return rubric_json([("states 8", 3), ("is clear", 1), ("mentions 8", 2), ("has 8", 1)])
        return Reply(content=["eight", "8"])

    settings = {"output.dir": str(tmp_path), "teacher.model": "scripted", "judge.score_teacher_answers": True}
    config = load_config(overrides=settings | {f"judge.{k}": v for k, v in {**PUBLISHED_JUDGE, **PINNED_JUDGE, **judge}.items()})
    with ScriptedServer(respond) as server, ResultCache(tmp_path / "k.sqlite") as cache:
        endpoint = EndpointConfig(model="pinned-model", base_url=server.base_url, seed=3)
        common = {"cache": cache, "identity": "pinned-server"}
        rubricator, judge_client = LLMClient(endpoint, role="rubricator", **common), LLMClient(endpoint, role="judge", **common)
        reward = RubricReward(config, FixedTeacher(), rubricator, judge_client, {p.id: p for p in ROWS})
        rollouts = ["8", "<think>maybe 9</think>9", "<think>cut off"]
        assert asyncio.run(reward(prompts=[ROWS[1].question] * 3, completions=rollouts, id=["p1"] * 3)) == [1.0, 0.0, 0.0]
        asyncio.run(
            LLMClient(endpoint, role="teacher", **common).chat([m.model_dump() for m in ROWS[1].prompt], n=2, key_extra={"prompt_id": "p1"})
        )
    import sqlite3

    with sqlite3.connect(tmp_path / "k.sqlite") as db:
        rows = db.execute("SELECT role, key FROM results ORDER BY role, key").fetchall()
    keys: dict[str, list[str]] = {}
    for role, key in rows:
        keys.setdefault(role, []).append(key[:16])
    return keys


@pytest.mark.parametrize(
    ("judge", "expected"),
    [
        (
            {},
            {
                "judge": ["36b345ba1296a179", "caf05321e761c4d3"],
                "rubricator": ["1152d288b4194e65"],
                "teacher": ["bf998df6428c23ef", "e7f297f7ef94f622"],
            },
        ),
        (
            {"mode": "consistency", "consistency_samples": 2, "expected_evidence": True},
            {
                "judge": ["58d1d854e874c10e", "7c6deb92e313c853", "b8b8bebc749fb736", "f2d99fd0185b69b7"],
                "rubricator": ["1152d288b4194e65"],
                "teacher": ["bf998df6428c23ef", "e7f297f7ef94f622"],
            },
        ),
    ],
)
def test_cache_keys_of_teacher_rubric_and_judge_calls_are_pinned(tmp_path, judge, expected):
    assert pinned_keys(tmp_path, **judge) == expected
