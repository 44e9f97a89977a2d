"""The slides' tables, part 2: every experiment file composes and resolves for every row's method (the
papers' settings reach the run), and the published CSVs have the slides' shape and spot values."""
import csv

import pytest
from omegaconf import OmegaConf

from conftest import REPO, compose_config

GLUE = ["cola", "mnli", "mrpc", "qnli", "qqp", "rte", "sst2", "stsb"]
FAMILIES = {  # experiment family -> the rows' methods
    "dylora/roberta_base": (GLUE, ["dylora", "lora"]),
    "hydra/roberta_base": (GLUE, ["hydra", "lora", "galore"]),
    "adalora/deberta_v3_base": (GLUE + ["squad_v1", "squad_v2"], ["adalora", "lora", "hadapter", "padapter"]),
}
CASES = [(fam, t, m) for fam, (tasks, methods) in FAMILIES.items() for t in tasks for m in methods]


@pytest.mark.parametrize("family,task,method", CASES)
def test_every_experiment_resolves_for_its_rows(family, task, method):
    cfg = OmegaConf.to_container(compose_config(f"experiment=slides/{family}/{task}", f"method={method}"), resolve=True)
    assert cfg["task"]["name"] == task and cfg["method"]["name"] == method
    assert cfg["table"] == {"dylora/roberta_base": "slides-dylora-table", "hydra/roberta_base": "slides-hydra-table",
                            "adalora/deberta_v3_base": "slides-adalora-" + ("squad" if "squad" in task else "glue")}[family]
    assert cfg["trainer"]["lr"] > 0 and cfg["trainer"]["epochs"] > 0
    targets = cfg["method"]["target_modules"]
    if method in ("hadapter", "padapter", "hydra", "galore"):
        assert targets[0].startswith("re:")          # the method keeps its own targets
    elif family.startswith("adalora"):
        assert targets == ["query_proj", "key_proj", "value_proj", "dense"]  # all six matrices, as AdaLoRA's scripts


def read(name):
    with open(REPO / "results" / "published" / name) as f:
        return list(csv.DictReader(f))


def test_published_csvs_have_the_slides_shape_and_values():
    dy = {r["row"]: r for r in read("slides_dylora_table.csv")}
    assert len(dy) == 8 * 3 + 3 + 1
    assert dy["r1_lora"]["mnli"] == "34.60" and dy["r1_lora"]["mnli_std"] == "3.69"
    assert dy["r8_dylora"]["avg"] == "85.44" and dy["best_dylora"]["rte"] == "80.14" and dy["best_dylora"]["rte_rank"] == "4"
    hy = {r["row"]: r for r in read("slides_hydra_table.csv")}
    assert list(hy) == ["full", "bitfit", "adapterdrop_0p3m", "adapterdrop_0p9m", "lora", "hydra", "galore"]
    assert hy["hydra"]["rte"] == "87.4" and hy["hydra"]["avg"] == "87.9" and hy["galore"]["avg"] == ""
    glue = {r["row"]: r for r in read("slides_adalora_glue.csv")}
    assert len(glue) == 12 and glue["padapter_0p60m"]["cola"] == "69.48" and glue["adalora_1p27m"]["qqp_f1"] == "89.74"
    squad = {r["row"]: r for r in read("slides_adalora_squad.csv")}
    assert squad["hadapter"]["squad_v2_p065_f1"] == "88.3" and squad["full_ft"]["squad_v1_full_em"] == "86.0"
