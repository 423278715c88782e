"""`ropd bench`: arms, in-run held-out evaluation, results files, the headline ratio, resume, config errors.

End to end with a tiny random student, a tiny random white-box teacher (served by ropd for the
rubric arm) and a scripted rubricator/judge over real HTTP.
"""

import hashlib
import json
import subprocess
import sys

import pytest
import yaml

import ropd.bench.runner as bench_module
import ropd.training.run
from ropd.bench.runner import BenchConfig, load_bench_config, mean_curve, run_bench, sample_efficiency_ratio, samples_to_reach
from ropd.config import ConfigError
from ropd.testing.judge_scripts import is_judge_request, judge_reply, rubric_json
from ropd.testing.scripted_server import ScriptedServer

CRITERIA = [("gives a number", 3), ("is short", 1), ("shows work", 2), ("ends cleanly", 4)]


def decide(answer: str, criterion: str) -> bool:
    return hashlib.sha256(f"{criterion}:{answer}".encode()).digest()[0] % 2 == 0


def scripted(body):
    if is_judge_request(body):
        return judge_reply(body, decide)
    return rubric_json(CRITERIA)


def bench_data(server_url: str, out) -> dict:
    return {
        "base": {
            "teacher": {
                "model": "tiny-random-teacher",
                "num_answers": 1,
                "max_tokens": 8,
                "use_truncated": True,  # 8 tokens cut every answer off: use them as references anyway
                "max_retries": 0,
                "temperature": 1.0,
            },
            "judge": {"base_url": server_url, "max_retries": 0, "max_reasks": 1},
            "student": {"model": "tiny-random"},
            "data": {"dataset": "reasoning-gym:gsm_symbolic?size=4&seed=0"},
            "training": {
                "max_steps": 3,
                "prompts_per_step": 2,
                "num_generations": 2,
                "max_completion_length": 8,
                "truncated_reward": None,  # a tiny random student always reaches the limit: keep its rubric rewards
                "learning_rate": 1e-3,
                "save_steps": 10,
            },
        },
        "methods": ["ropd", "opd"],
        "seeds": [0],
        "judge": "scripted",
        "eval": {"dataset": "reasoning-gym:gsm_symbolic?size=3&seed=1", "max_new_tokens": 8, "batch_size": 4},
        "eval_every": 8,
        "target_accuracy": 0.5,
        "teacher_description": "tiny random weights",
        "output_dir": str(out),
    }


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_bench_runs_arms_writes_results_and_resumes(tmp_path, monkeypatch):
    out = tmp_path / "bench"
    with ScriptedServer(scripted) as server:
        bench = BenchConfig.model_validate(bench_data(server.base_url, out))
        results = run_bench(bench)
        judge_requests = len(server.requests)

        # Every arm is evaluated at step 0, every 8 samples (2 steps of 2 prompts x 2 rollouts) and at the last step.
        assert [(a["method"], a["seed"]) for a in results["arms"]] == [("ropd", 0), ("opd", 0)]
        for arm in results["arms"]:
            assert [(p["step"], p["samples"]) for p in arm["curve"]] == [(0, 0), (2, 8), (3, 12)]
            assert arm["curve"][0]["accuracy"] == results["step0_accuracy"]
            assert all(0.0 <= p["accuracy"] <= 1.0 for p in arm["curve"])
            assert (out / "arms" / f"{arm['method']}-seed0" / "curve.jsonl").read_text().count("\n") == 2
            arm_dir = out / "arms" / f"{arm['method']}-seed0"
            assert (arm_dir / "final").is_dir() and not list(arm_dir.glob("checkpoint-*"))  # only the final model stays
        ropd_arm, opd_arm = results["arms"]
        # Costs: rubric OPD pays teacher answers and judge tokens; logit OPD pays teacher forward passes, no judge.
        assert ropd_arm["judge_tokens"] > 0 and ropd_arm["judge_requests"] == judge_requests
        assert ropd_arm["teacher_tokens"] > 0 and ropd_arm["mean_reward"] is not None
        assert opd_arm["judge_tokens"] == 0 and opd_arm["teacher_tokens"] > 0
        teacher_curve = [p["teacher_tokens"] for p in opd_arm["curve"]]
        assert teacher_curve[0] == 0 and teacher_curve == sorted(teacher_curve) and teacher_curve[1] < teacher_curve[2]
        assert results["teacher_accuracy"] is not None and results["judge"] == "scripted"
        assert set(results["methods"]) == {"ropd", "opd"} and results["complete"]
        assert results["headline"]["status"] in ("reached", "not reached", "undefined")
        saved = json.loads((out / "results.json").read_text())
        assert saved["methods"]["opd"]["curve"] == results["methods"]["opd"]["curve"]
        markdown = (out / "results.md").read_text()
        assert "| rubric OPD (`ropd`)" in markdown and "| logit OPD (`opd`)" in markdown and "`scripted`" in markdown
        assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        # Each arm's per-step records are kept outside its (uncommitted) folder.
        for name in ("ropd-seed0", "opd-seed0"):
            steps = (out / "steps" / f"{name}-metrics.jsonl").read_text().splitlines()
            assert [json.loads(line)["step"] for line in steps if "loss" in json.loads(line)] == [1, 2, 3]
            assert (out / "steps" / f"{name}-curve.jsonl").is_file() and (out / "steps" / f"{name}-usage.json").is_file()

        # A rerun reads every finished arm back: no training, no evaluation, no teacher or judge request.
        def refuse(*args, **kwargs):
            raise AssertionError("a finished arm was run again")

        monkeypatch.setattr(ropd.training.run, "train", refuse)
        monkeypatch.setattr(bench_module, "evaluate_point", refuse)
        again = run_bench(bench)
        assert len(server.requests) == judge_requests
        assert again["arms"] == results["arms"] and again["headline"] == results["headline"]

        # An arm that did not finish is left out of a results-only run, and run again, from scratch, alone, by a full one.
        (out / "arms" / "opd-seed0" / "arm.json").unlink()
        (out / "steps" / "opd-seed0-arm.json").unlink()
        partial = run_bench(bench, finished_only=True)
        assert [a["method"] for a in partial["arms"]] == ["ropd"] and not partial["complete"]
        monkeypatch.undo()
        calls = []
        real_train = ropd.training.run.train

        def counting(config, callbacks=()):
            calls.append(config.method.name)
            return real_train(config, callbacks)

        monkeypatch.setattr(ropd.training.run, "train", counting)
        rerun = run_bench(bench)
        assert calls == ["opd"]
        assert [(p["step"], p["samples"]) for p in rerun["arms"][1]["curve"]] == [(0, 0), (2, 8), (3, 12)]
        assert len(server.requests) == judge_requests


def test_ratio_when_rubric_opd_reaches_logit_opds_final_accuracy():
    opd = [(0, 0.1), (8, 0.2), (16, 0.25), (24, 0.3)]
    ropd = [(0, 0.1), (8, 0.3), (16, 0.2), (24, 0.35)]
    result = sample_efficiency_ratio(opd, ropd)
    assert result.status == "reached"
    assert (result.target_accuracy, result.opd_samples, result.ropd_samples) == (0.3, 24, 8)
    assert result.ratio == pytest.approx(3.0)


def test_ratio_when_rubric_opd_never_gets_there_or_logit_opd_never_improves():
    not_reached = sample_efficiency_ratio([(0, 0.1), (8, 0.4)], [(0, 0.1), (8, 0.3)])
    assert not_reached.status == "not reached" and not_reached.ratio is None and not_reached.opd_samples == 8
    flat = sample_efficiency_ratio([(0, 0.2), (8, 0.1), (16, 0.2)], [(0, 0.2), (8, 0.5)])
    assert flat.status == "undefined" and flat.ratio is None and "step-0" in flat.note
    assert samples_to_reach([(0, 0.0), (8, 0.1), (16, 0.3)], 0.3) == 16
    assert samples_to_reach([(0, 0.0), (8, 0.1)], 0.3) is None


def test_only_rubric_arms_name_the_judge(tmp_path):
    """Changing the bench's judge reruns the rubric arm only: a finished opd arm keeps its fingerprint."""
    data = bench_data("http://127.0.0.1:9/v1", tmp_path)
    data["methods"] = ["ropd", "opd", "sod", "grpo"]
    data["base"]["method"] = {"sequence_reward": "outcome"}
    other = {**data, "judge": "another-judge"}
    first, second = BenchConfig.model_validate(data), BenchConfig.model_validate(other)
    assert bench_module.arm_config(first, "ropd", 0).judge.model == "scripted"
    assert bench_module.arm_config(second, "ropd", 0) != bench_module.arm_config(first, "ropd", 0)
    for method in ("opd", "sod", "grpo"):  # sod here takes its sequence advantage from an outcome check
        config = bench_module.arm_config(first, method, 0)
        assert config.judge.model is None and config.judge.base_url is None
        assert config == bench_module.arm_config(second, method, 0)


def finished_arm(method, seed, accs):
    from ropd.bench.runner import ArmResult, CurvePoint

    curve = [
        CurvePoint(step=i, samples=8 * i, accuracy=a, answered=1, truncated=0, mean_completion_tokens=1, teacher_tokens=100 * i)
        for i, a in enumerate(accs)
    ]
    return ArmResult(
        method=method, seed=seed, fingerprint="x", curve=curve, steps=2, samples=16, teacher_tokens=200, judge_tokens=0,
        judge_requests=0, cost_usd=0, wall_seconds=1, eval_seconds=0,
    )  # fmt: skip


def test_mean_curve_averages_seeds_with_min_and_max():
    rows = mean_curve([finished_arm("opd", 0, [0.0, 0.2, 0.4]), finished_arm("opd", 1, [0.0, 0.4, 0.2])])
    assert rows == [(0, 0.0, 0.0, 0.0), (8, pytest.approx(0.3), 0.2, 0.4), (16, pytest.approx(0.3), 0.2, 0.4)]
    assert [x for x, *_ in mean_curve([finished_arm("opd", 0, [0.0, 0.1, 0.2])], "teacher_tokens")] == [0, 100, 200]


def test_headline_per_seed_shows_what_the_mean_curves_hide():
    from ropd.bench.report import headline, headline_by_seed
    from ropd.bench.results import _per_seed_headline

    by_method = {
        "opd": [finished_arm("opd", 0, [0.0, 0.4, 0.4]), finished_arm("opd", 1, [0.0, 0.2, 0.4])],
        "ropd": [finished_arm("ropd", 0, [0.0, 0.4, 0.4]), finished_arm("ropd", 1, [0.0, 0.1, 0.2])],
    }
    assert headline(by_method).status == "not reached"  # mean curves: opd ends at 0.4, ropd at 0.3
    per_seed = headline_by_seed(by_method)
    assert (per_seed[0].status, per_seed[0].ratio) == ("reached", 1.0)  # both reach 0.4 after 8 samples
    assert (per_seed[1].status, per_seed[1].ratio) == ("not reached", None)
    results = {"headline_by_seed": {str(k): v.model_dump() for k, v in per_seed.items()}}
    assert _per_seed_headline(results) == ["- Headline per seed (each seed's own curves): seed 0: 1.00x; seed 1: not reached."]
    assert _per_seed_headline({"headline_by_seed": {"0": per_seed[0].model_dump()}}) == []


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"methds": ["ropd"]}, "field 'methds': unknown key"),
        ({"methods": ["ropd", "lopd"]}, "field 'methods.1'"),
        ({"eval_every": 6}, "eval_every (6) must be a multiple"),
        ({"eval": {"dataset": "reasoning-gym:gsm_symbolic?size=4&seed=0"}}, "eval.dataset is the training dataset"),
        ({"base": {"output": {"dir": "x"}}}, "base.output is set by the bench"),
        ({"base": {"training": {"num_generations": 1}}}, "field 'base.training.num_generations'"),
        ({"base": {"judge": {"model": "gpt-4o"}}}, "base.judge.model"),
        ({"price_as": "nope"}, "price_as: 'nope'"),
    ],
)
def test_config_errors_name_the_field(tmp_path, change, field):
    data = bench_data("http://127.0.0.1:9/v1", tmp_path / "out")
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            for sub, sub_value in value.items():
                data[key][sub] = {**data[key].get(sub, {}), **sub_value} if isinstance(sub_value, dict) else sub_value
        else:
            data[key] = value
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as error:
        load_bench_config(path)
    assert str(path) in str(error.value) and field in str(error.value)


def test_cli_exits_2_on_a_bad_bench_config(tmp_path):
    path = tmp_path / "bench.yaml"
    path.write_text("methods: [ropd]\n")
    result = subprocess.run([sys.executable, "-m", "ropd.cli", "bench", "--config", str(path)], capture_output=True, text=True)
    assert result.returncode == 2
    assert "field 'base': Field required" in result.stderr and "field 'eval'" in result.stderr


def test_cli_exits_2_on_seeds_that_are_not_integers():
    from ropd.config import PACKAGE_ROOT

    config = str(PACKAGE_ROOT / "experiments" / "bench-cpu.yaml")
    result = subprocess.run(
        [sys.executable, "-m", "ropd.cli", "bench", "--config", config, "--seeds", "1,two"], capture_output=True, text=True
    )
    assert result.returncode == 2 and "--seeds '1,two': expected comma-separated integers" in result.stderr
    from ropd.cli.bench import parse_seeds

    assert parse_seeds("2, 0") == [2, 0]
    with pytest.raises(ConfigError, match="expected comma-separated integers"):
        parse_seeds(" , ")


@pytest.mark.parametrize("name", ["bench-cpu.yaml", "bench-gpu.yaml", "bench-cpu-powered.yaml", "bench-cpu-pair.yaml"])
def test_shipped_bench_configs_load(name):
    from ropd.config import PACKAGE_ROOT

    bench = load_bench_config(PACKAGE_ROOT / "experiments" / name)
    assert {"ropd", "opd"} <= {spec.method for spec in bench.arms.values()}


def test_make_teacher_builds_chain_sum_solutions_that_reach_the_generator_answer():
    import importlib.util

    from ropd.config import PACKAGE_ROOT

    spec = importlib.util.spec_from_file_location("make_teacher", PACKAGE_ROOT / "experiments" / "make_teacher.py")
    make_teacher = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_teacher)
    assert make_teacher.chain_sum_solution("38 - 69 - 67", "-98") == "38 - 69 = -31. -31 - 67 = -98. The answer is -98."
    with pytest.raises(ValueError, match="generator says 5"):
        make_teacher.chain_sum_solution("1 + 2", "5")
    params = make_teacher.parse_params("min_terms=2,max_terms=3,min_digits=1,max_digits=2")
    examples = make_teacher.sft_examples("chain_sum", 50, 7, params)  # raises if a worked solution missed its answer
    assert len(examples) == 50 and all(" The answer is " in e["solution"] for e in examples)


def test_several_updates_per_batch_count_each_rollout_once(tmp_path, monkeypatch):
    """With updates_per_batch = 2 one rollout batch serves two optimizer steps: evaluations fall on batch boundaries and
    the samples axis counts rollouts drawn, not optimizer steps."""
    from types import SimpleNamespace

    data = bench_data("http://127.0.0.1:9/v1", tmp_path)
    data["base"]["training"]["updates_per_batch"] = 2
    bench = BenchConfig.model_validate(data)
    assert bench.samples_per_step == 4 and bench.eval_every_steps == 4  # 8 samples = 2 batches = 4 optimizer steps
    seen = []

    def fake_point(model, tokenizer, prompts, settings, step, samples):
        seen.append((step, samples))
        return SimpleNamespace(step=step, samples=samples, accuracy=0.0, model_dump_json=lambda: "{}")

    monkeypatch.setattr(bench_module, "evaluate_point", fake_point)
    sink = tmp_path / "curve.jsonl"
    callback = bench_module.HeldOutEval([], bench.eval, None, bench.eval_every_steps, bench.samples_per_step, sink, 2)
    for step in range(1, 8):
        callback.on_step_end(None, SimpleNamespace(global_step=step, max_steps=7, num_input_tokens_seen=0), None)
    assert seen == [(4, 8), (7, 16)]  # step 7 is mid-batch: its batch (the 4th) was drawn for step 7
    assert bench_module.ropd_teacher_tokens(2, 2, {"a": 10, "b": 20, "c": 30, "d": 40}) == 100


def sweep_data(out) -> dict:
    """A bench that needs no model server: outcome GRPO and an oracle arm, with a learning-rate sweep."""
    return {
        "base": {
            "teacher": {"model": "tiny-random-teacher"},
            "student": {"model": "tiny-random"},
            "data": {"dataset": "reasoning-gym:chain_sum?size=4&seed=0"},
            "training": {
                "max_steps": 2,
                "prompts_per_step": 2,
                "num_generations": 2,
                "max_completion_length": 8,
                "truncated_reward": None,
                "save_steps": 10,
            },
        },
        "arms": {
            "grpo": {"method": "grpo"},
            "oracle-p20": {
                "method": "ropd",
                "label": "oracle, p=0.2",
                "learning_rate_from": "grpo",
                "overrides": {"judge": {"model": "oracle", "allow_oracle": True, "oracle_noise": 0.2}},
            },
        },
        "seeds": [0, 1],
        "learning_rates": [1e-3, 1e-2],
        "validation": {"dataset": "reasoning-gym:chain_sum?size=3&seed=2", "max_new_tokens": 8, "batch_size": 4},
        "eval": {"dataset": "reasoning-gym:chain_sum?size=5&seed=1", "max_new_tokens": 8, "batch_size": 5},
        "eval_every": 4,
        "evaluate_teacher": False,
        "bootstrap_samples": 200,
        "output_dir": str(out),
    }


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sweep_chooses_each_rate_on_validation_then_runs_seeds_with_intervals_and_resumes_from_steps(tmp_path, monkeypatch):
    import shutil

    out = tmp_path / "bench"
    bench = BenchConfig.model_validate(sweep_data(out))
    trained = []
    real_train = ropd.training.run.train

    def recording(config, callbacks=()):
        trained.append((config.output.dir.split("/arms/")[1], config.training.learning_rate, config.judge.model))
        return real_train(config, callbacks)

    monkeypatch.setattr(ropd.training.run, "train", recording)
    results = run_bench(bench)

    # The sweep: grpo once per rate on seed 0; the oracle arm takes grpo's choice instead of a sweep of its own.
    sweep = json.loads((out / "sweep.json").read_text())
    assert [(r["arm"], r["learning_rate"]) for r in sweep["runs"]] == [("grpo", 1e-3), ("grpo", 1e-2)]
    best = max(sweep["runs"], key=lambda r: (r["accuracy"], -r["learning_rate"]))
    assert sweep["chosen"] == {"grpo": best["learning_rate"]} and sweep["validation_prompts"] == 3
    assert trained[:2] == [("sweep/grpo-lr0.001", 1e-3, None), ("sweep/grpo-lr0.01", 1e-2, None)]
    chosen = best["learning_rate"]
    assert trained[2:] == [(f"{a}-seed{s}", chosen, m) for s in (0, 1) for a, m in (("grpo", None), ("oracle-p20", "oracle"))]
    assert "| outcome GRPO |" in (out / "sweep.md").read_text()

    # Every accuracy has its interval, computed from the per-prompt scores of 5 held-out prompts x 2 seeds.
    for summary in results["methods"].values():
        assert summary["final_accuracy_low"] <= summary["final_accuracy_mean"] <= summary["final_accuracy_high"]
        assert summary["learning_rate"] == chosen
    for arm in results["arms"]:
        assert all(len(p["scores"]) == 5 for p in arm["curve"])
    pairs = {(d["a"], d["b"]): d for d in results["differences"]}
    assert set(pairs) == {("grpo", "step0"), ("oracle-p20", "step0"), ("oracle-p20", "grpo")}
    assert all(d["seeds"] == 2 and d["prompts"] == 5 and d["low"] <= d["mean"] <= d["high"] for d in pairs.values())
    oracle = results["methods"]["oracle-p20"]
    assert oracle["label"] == "oracle, p=0.2" and oracle["judge_tokens_mean"] == 0 and oracle["teacher_tokens_mean"] == 0
    markdown = (out / "results.md").read_text()
    assert "**greedy**" in markdown and "95% interval" in markdown and "oracle-p20 − grpo" in markdown
    groups = (out / "steps" / "oracle-p20-seed0-groups.jsonl").read_text().splitlines()
    assert groups and all(set(json.loads(g)["decided_by"]) == {"oracle"} for g in groups)

    # A fresh clone has steps/ (committed) but no arms/ folder: everything is read back, nothing trained again.
    shutil.rmtree(out / "arms")
    trained.clear()
    again = run_bench(bench)
    assert trained == [] and again["arms"] == results["arms"] and again["differences"] == results["differences"]

    # `seeds` trains only those seeds now: the sweep is read back from the config's first seed (not rerun on seed 1),
    # and seed 0's arms are read back.
    for record in (out / "steps").glob("*-seed1-*"):
        record.unlink()
    resumed = run_bench(bench, seeds=[1])
    assert [(a["arm"], a["seed"]) for a in resumed["arms"]] == [(a["arm"], a["seed"]) for a in results["arms"]]
    assert trained == [(f"{a}-seed1", chosen, m) for a, m in (("grpo", None), ("oracle-p20", "oracle"))]
    with pytest.raises(ConfigError, match="seed 7 is not among the config's seeds"):
        run_bench(bench, seeds=[7])

    # The bench page opens each arm's run page from the committed records.
    from ropd.report.inspect import build_report

    index = build_report(out, tmp_path / "report")
    page = index.read_text()
    assert "run folder not kept" not in page and "difference-table" in page
    assert (tmp_path / "report" / "arms" / "oracle-p20-seed1" / "index.html").is_file()


def test_an_arm_can_sweep_its_own_rates_and_is_chosen_only_when_they_have_all_finished(tmp_path):
    """arms.X.learning_rates narrows a slow arm's sweep; its choice waits for its own rates only, a rate outside them is
    not read as part of it, and sweep.md marks the rates it never tries."""
    from ropd.bench.report import SweepRun, choose_learning_rates
    from ropd.bench.results import sweep_markdown

    data = sweep_data(tmp_path / "bench")
    data["arms"] = {
        "grpo": {"method": "grpo"},
        "opd": {"method": "opd", "learning_rates": [1e-3]},
        "oracle": {"method": "ropd", "learning_rate_from": "opd", "overrides": {"judge": {"model": "oracle", "allow_oracle": True}}},
    }
    bench = BenchConfig.model_validate(data)
    assert bench.sweep_plan() == {"grpo": [1e-3, 1e-2], "opd": [1e-3]}
    assert bench.swept_rates() == [1e-3, 1e-2]

    def run(arm, rate, acc):
        return SweepRun(arm=arm, learning_rate=rate, result=finished_arm(arm, 0, [0.0, acc]))

    runs = [run("grpo", 1e-3, 0.3), run("opd", 1e-2, 0.9)]  # opd at 1e-2: outside its sweep (an older run), ignored
    assert choose_learning_rates(runs, bench.sweep_plan()) == {}
    runs += [run("grpo", 1e-2, 0.5), run("opd", 1e-3, 0.2)]
    assert choose_learning_rates(runs, bench.sweep_plan()) == {"grpo": 1e-2, "opd": 1e-3}
    table = {
        "validation": {"dataset": "d", "max_new_tokens": 8},
        "validation_protocol": "greedy",
        "validation_prompts": 3,
        "step0_accuracy": 0.1,
        "seed": 0,
        "learning_rates": bench.swept_rates(),
        "learning_rates_by_arm": bench.sweep_plan(),
        "chosen": {"opd": 1e-3},
        "runs": [{"arm": "opd", "learning_rate": 1e-3, "accuracy": 0.2, "low": 0.1, "high": 0.3}],
    }
    assert "| logit OPD | 20.0% [10.0%–30.0%] | not tried | 0.001 |" in sweep_markdown(bench, table)

    data["arms"]["oracle"]["learning_rates"] = [1e-3]
    with pytest.raises(ValueError, match=r"arms\.oracle: give learning_rates or learning_rate_from, not both"):
        BenchConfig.model_validate(data)
