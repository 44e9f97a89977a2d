"""The config's one schema (roloraexp/config.py): the trainer's YAML and its dataclass name the same
settings with the same defaults, every rule refuses what it should and says so in one line, and the
settings a resume may change are the schema's."""
import dataclasses

import pytest
from omegaconf import OmegaConf

from conftest import REPO, compose_config
from roloraexp import config
from roloraexp.errors import ConfigError


def test_trainer_yaml_and_schema_name_the_same_settings_with_the_same_defaults():
    yaml = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "trainer" / "default.yaml"))
    schema = {f.name: f.default for f in dataclasses.fields(config.TrainerConfig)}
    assert yaml == schema


def test_every_default_config_passes_and_every_task_and_model_file_is_checked():
    config.check(compose_config())
    for folder, section in (("task", "task"), ("model", "model"), ("method", "method")):
        for path in sorted((REPO / "conf" / folder).glob("*.yaml")):
            cfg = compose_config(f"{folder}={path.stem}")
            config.check_section(cfg[section], section)


@pytest.mark.parametrize("section,key,value,message", [
    ("trainer", "batch_size", 0, "trainer.batch_size must be an integer >= 1, got 0"),
    ("trainer", "batch_size", 2.5, "trainer.batch_size must be an integer >= 1, got 2.5"),
    ("trainer", "lr", 0, "trainer.lr must be a number > 0, got 0"),
    ("trainer", "lr", float("inf"), "trainer.lr must be a number > 0, got inf"),
    ("trainer", "warmup_ratio", 1.5, "trainer.warmup_ratio must be in [0, 1] (trainer.warmup_steps takes a number "
                                     "of steps), got 1.5"),
    ("trainer", "compile", "yes", "trainer.compile must be auto, true or false, got 'yes'"),
    ("trainer", "compile_mode", "fast", "trainer.compile_mode must be one of default, reduce-overhead, max-autotune, "
                                        "max-autotune-no-cudagraphs, got 'fast'"),
    ("trainer", "num_workers", -1, "trainer.num_workers must be auto or an integer >= 0, got -1"),
    ("trainer", "max_steps", -1, "trainer.max_steps must be an integer >= 0 (or null), got -1"),
    ("trainer", "keep_checkpoint", "no", "trainer.keep_checkpoint must be true or false, got 'no'"),
    ("method", "dropout", 1.0, "method.dropout must be in [0, 1), got 1.0"),
    ("method", "alpha", 0, "method.alpha must be a number > 0, got 0"),
    ("task", "max_eval_samples", 0, "task.max_eval_samples must be an integer >= 1 (or null), got 0"),
    ("model", "dtype", "int8", "model.dtype must be fp32, bf16 or fp16, got 'int8'"),
    ("", "seed", True, "seed must be an integer in [0, 2**32 - 1], got True"),
])
def test_a_value_out_of_its_rule_is_one_line_naming_the_key(section, key, value, message):
    cfg = compose_config()
    node = cfg[section] if section else cfg
    node[key] = value
    with pytest.raises(ConfigError) as e:
        config.check(cfg)
    assert str(e.value) == message


def test_the_edges_of_each_range_are_accepted():
    cfg = compose_config("trainer.warmup_ratio=1", "trainer.num_workers=0", "method.dropout=0", "seed=4294967295",
                         "trainer.max_grad_norm=0", "trainer.compile=false")
    config.check(cfg)


def test_resume_may_change_exactly_the_settings_the_schema_marks():
    from roloraexp.config import IGNORED

    assert set(config.not_identity()) == {"trainer.num_workers", "trainer.save_adapters", "trainer.resume",
                                          "trainer.checkpoint_every", "trainer.checkpoint_minutes",
                                          "task.max_bad_rows"}
    assert set(config.not_identity()) <= set(IGNORED)
