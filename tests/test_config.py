"""Run configuration: YAML loading, flag overrides, and errors that name the field and its source."""

import argparse

import pytest

from ropd.config import DEFAULT_CONFIG, ConfigError, add_config_flags, dump_config, flag_for, load_config, overrides_from_args


def parse(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser()
    add_config_flags(parser)
    return overrides_from_args(parser.parse_args(argv))


def test_defaults_follow_the_published_settings():
    config = load_config()
    assert config.training.num_generations == 8
    assert config.teacher.num_answers == 4
    assert config.training.learning_rate == 1e-6
    assert (config.training.epsilon, config.training.epsilon_high) == (0.2, 0.28)
    assert config.training.beta == 0.0
    assert config.training.scale_rewards == "none"
    assert config.training.loss_type == "dapo"


def test_judge_defaults_to_the_teacher():
    config = load_config(overrides={"teacher.model": "my-teacher", "teacher.base_url": "http://127.0.0.1:9/v1"})
    endpoint = config.judge_endpoint()
    assert endpoint.model == "my-teacher"
    assert endpoint.base_url == "http://127.0.0.1:9/v1"
    config = load_config(overrides={"teacher.model": "t", "judge.model": "j"})
    assert config.judge_endpoint().model == "j"
    assert config.judge_endpoint().base_url is None


def test_flags_override_yaml(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("teacher:\n  model: from-yaml\ntraining:\n  learning_rate: 0.5\n")
    overrides = parse(["--teacher", "from-flag", "--judge-base-url", "http://127.0.0.1:1/v1", "--learning-rate", "2e-6"])
    config = load_config(path, overrides)
    assert config.teacher.model == "from-flag"
    assert config.judge.base_url == "http://127.0.0.1:1/v1"
    assert config.training.learning_rate == 2e-6


def test_untyped_flags_are_not_overrides():
    assert parse([]) == {}
    assert parse(["--no-resume"]) == {"output.resume": False}
    assert parse(["--report-to", "tensorboard", "wandb"]) == {"training.report_to": ["tensorboard", "wandb"]}


def test_null_on_the_command_line_unsets_a_field_that_may_be_unset():
    overrides = parse(["--judge-chunk-size", "null", "--truncated-reward", "None", "--teacher", "none"])
    assert overrides == {"judge.chunk_size": None, "training.truncated_reward": None, "teacher.model": "none"}
    config = load_config(overrides=overrides)
    assert config.judge.chunk_size is None and config.training.truncated_reward is None
    assert load_config().judge.chunk_size == 4 and load_config().training.truncated_reward == 0.0
    with pytest.raises(ConfigError, match="learning_rate"):  # a field that must have a value keeps refusing it
        load_config(overrides=parse(["--learning-rate", "null"]))


def test_unknown_key_is_an_error_naming_file_and_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("training:\n  learning_rat: 1e-6\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message and "training.learning_rat" in message and "unknown key" in message


def test_bad_value_is_an_error_naming_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("training:\n  num_generations: one\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: field 'training.num_generations'"):
        load_config(path)


def test_bad_flag_value_names_the_flag():
    with pytest.raises(ConfigError, match=r"command line \(--method\): field 'method.name'"):
        load_config(overrides=parse(["--method", "ropd"]) | {"method.name": "magic"})


def test_inconsistent_ranges_are_rejected():
    with pytest.raises(ConfigError, match="min_criteria is larger than max_criteria"):
        load_config(overrides={"judge.min_criteria": 9, "judge.max_criteria": 3})


def test_not_a_mapping_and_missing_file(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(path)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_short_flags():
    assert flag_for("teacher.model") == "--teacher"
    assert flag_for("judge.base_url") == "--judge-base-url"
    assert flag_for("training.learning_rate") == "--learning-rate"
    assert flag_for("method.name") == "--method"


def test_dump_redacts_credentials_in_urls():
    config = load_config(overrides={"teacher.base_url": "https://user:sk-secret@api.example.com/v1?key=sk-secret"})
    text = dump_config(config)
    assert "sk-secret" not in text and "https://api.example.com/v1" in text


def test_every_shipped_config_is_valid():
    assert DEFAULT_CONFIG.is_file()
    for path in DEFAULT_CONFIG.parent.glob("*.yaml"):
        if path.name != "models.yaml":
            load_config(path)
