"""ROLoRA's Tables 1–6 (rolora.txt): RoBERTa-base and DeBERTa-v3-base on GLUE and SQuAD, R = 8
(4 and 16 in Table 3), 5 seeds, with the hyper-parameters of App. B in conf/experiment/rolora/.

Tables 4 and 5 reuse Table 1's runs (same model, tasks and R): their rows name
``source="rolora-table1"``, so ``make rolora-table4`` only runs Table 1's missing cells, into its
folder. AdaLoRA's initial rank is the method default, 1.5 R.
"""
from __future__ import annotations

from dataclasses import replace

from .columns import GLUE, LABEL, glue_cols
from .spec import MEAN_RANK, SPARSIFIER, Col, Row, Table

ROBERTA, DEBERTA = "rolora/roberta_base/{task}", "rolora/deberta_v3_base/{task}"
ADA = ("sparsifier=adalora",)
LORA = Row("lora", "LoRA†")
LORA_ITER = Row("lora_iter", "LoRA*")
ADALORA = Row("adalora", "AdaLoRA†", ("method=adalora", *ADA))
ADALORA_ITER = Row("adalora_iter", "AdaLoRA*", ("method=adalora_iter", *ADA))
ROLORA = Row("rolora", "ROLoRA", ("method=rolora", *ADA), where={SPARSIFIER: "adalora"})
ROWS = (LORA, LORA_ITER, ADALORA, ADALORA_ITER, ROLORA)
SMALL = ("mrpc", "rte", "cola")


def _from_table1(row: Row, **changes) -> Row:
    return replace(row, source="rolora-table1", **changes)


TABLES = [
    Table("rolora-table1", "ROLoRA Table 1: RoBERTa-base on GLUE, R = 8", "rolora_table1.csv", "roberta_base",
          ROBERTA, ROWS, glue_cols(GLUE, rank=8)),
    Table("rolora-table2", "ROLoRA Table 2: DeBERTa-v3-base on GLUE, R = 8", "rolora_table2.csv", "deberta_v3_base",
          DEBERTA, ROWS, glue_cols(GLUE, rank=8)),
    Table("rolora-table3", "ROLoRA Table 3: RoBERTa-base, R = 16 and R = 4", "rolora_table3.csv", "roberta_base",
          ROBERTA, ROWS, glue_cols(SMALL, 16, "r16_", "R=16 ") + glue_cols(SMALL, 4, "r4_", "R=4 ")),
    # Table 4 is about the runs of Table 1: the mean rank of the output adapters (at each run's best
    # evaluation, `best_ranks`). The paper prints one spanning row "LoRA & AdaLoRA" = 8.0.
    Table("rolora-table4", "ROLoRA Table 4: mean output rank, RoBERTa-base, R = 8", "rolora_table4.csv",
          "roberta_base", ROBERTA,
          (_from_table1(LORA, label="LoRA", published="lora_adalora"),
           _from_table1(ADALORA, label="AdaLoRA", published="lora_adalora"),
           _from_table1(ROLORA)),
          tuple(Col(t, LABEL[t], MEAN_RANK, t, 8, scale=1.0) for t in GLUE), figures=("ranks",)),
    # Table 5: ROLoRA with SoRA as SPARSIFY (a fixed threshold over iterations) beside Table 1's rows.
    Table("rolora-table5", "ROLoRA Table 5: SoRA as SPARSIFY, RoBERTa-base, R = 8", "rolora_table5.csv",
          "roberta_base", ROBERTA,
          (_from_table1(LORA), _from_table1(LORA_ITER),
           _from_table1(ROLORA, key="rolora_adalora", label="ROLoRA^A (AdaLoRA)", run="rolora"),
           Row("rolora_sora", "ROLoRA^B (SoRA)", ("method=rolora", "sparsifier=sora", "schedule=constant"),
               where={SPARSIFIER: "sora"})),
          glue_cols((*SMALL, "sst2"), rank=8)),
    Table("rolora-table6", "ROLoRA Table 6: DeBERTa-v3-base on SQuAD, Exact Match", "rolora_table6.csv",
          "deberta_v3_base", DEBERTA, ROWS,
          tuple(Col(f"r{r}_{t}", f"R={r} {LABEL[t]}", "exact_match", t, r, scale=1.0, group=t)
                for r in (8, 4) for t in ("squad_v1", "squad_v2"))),
]
