"""WeightLoRA's Tables 1–6 (weightlora.txt): DeBERTa-v3-base, Llama-3-8B and BART-large on GLUE,
SQuAD and XSum / CNN-DailyMail, 5 seeds, with the hyper-parameters of App. B in
conf/experiment/weightlora/.

The paper prints GLUE scores as fractions (``published_scale=100``). K of WeightLoRA+ is not given
for Tables 2 and 3: 15 as in Table 4 (same model and n = 72), n / 4 = 56 for Llama. Table 6 (the
RLoRA ablation) reuses Table 1's WeightLoRA runs (same setting, r = 8).
"""
from __future__ import annotations

from .columns import PARAMS_COL, acc_f1_cols, percent_cols
from .spec import ABSENT, Row, Table

GLUE7 = ("mnli", "sst2", "cola", "qqp", "qnli", "rte", "mrpc")
DEBERTA = "weightlora/deberta_v3_base/{task}"
RANKS = (1, 2, 4, 8)
ADA = ("method=adalora", "sparsifier=adalora")
NOT_HERE = "not implemented in this project"
OMEGA = ("omega",)


def rank_rows(k: int, k_plus: int, ranks=RANKS) -> tuple[Row, ...]:
    """LoRA, WeightLoRA (top K) and WeightLoRA+ at each rank r, as Tables 2 and 3 list them."""
    return tuple(row for r in ranks for row in (
        Row(f"r{r}_lora", f"r={r} LoRA", run="lora", rank=r),
        Row(f"r{r}_wlora", f"r={r} WLoRA k={k}", run="weightlora", rank=r, k=k),
        Row(f"r{r}_wlora_plus", f"r={r} WLoRA+", run="weightlora_plus", rank=r, k=k_plus)))


def method_rows(k: int, k_plus: int) -> tuple[Row, ...]:
    """Tables 4 and 5: the rank is in the columns. Their third row is printed "WLoRA k=15" / "k=48",
    but its # Params equal LoRA's and the text says it is WeightLoRA+ (results/published/README.md)."""
    return (Row("lora", "LoRA"), Row("wlora", f"WLoRA k={k}", run="weightlora", k=k),
            Row("wlora_plus", f"WLoRA+ k={k_plus}", run="weightlora_plus", k=k_plus))


TABLES = [
    Table("weightlora-table1", "WeightLoRA Table 1: DeBERTa-v3-base on GLUE, self-attention (n = 36)",
          "weightlora_table1.csv", "deberta_v3_base", DEBERTA,
          (Row("full_ft", "Full Fine-Tuning", ranked=False),
           Row("lora", "LoRA r=8"),
           # Runs of the second row are not this row's: it keeps ordinary AdaLoRA (allocation on, or
           # a run from before the option existed).
           Row("adalora", "AdaLoRA", ADA, where={"config.method.allocate": [True, ABSENT]}),
           # AdaLoRA's SVD form and orthogonal regulariser without ever reallocating ranks: most
           # likely what the published AdaLoRA row ran (its # Params, 664K = 1.5 × LoRA's 442K, is
           # AdaLoRA's initial budget, never reduced). Compared with the paper's AdaLoRA numbers.
           Row("adalora_as_run", "AdaLoRA (as run: no allocation)", (*ADA, "method.allocate=false"),
               where={"config.method.allocate": False}, published="adalora"),
           *(Row(key, label, note=NOT_HERE) for key, label in (
               ("increlora", "IncreLoRA"), ("dynamic_lora", "Dynamic LoRA"), ("lora_drop", "LoRA-drop"),
               ("alora", "ALoRA"), ("melora", "MELoRA"), ("flexlora", "FlexLoRA"))),
           *(Row(f"wlora_k{k}", f"WLoRA r=8,k={k}", run="weightlora", k=k) for k in (1, 5, 10))),
          (PARAMS_COL, *acc_f1_cols(GLUE7)), published_scale=100.0, figures=OMEGA),
    Table("weightlora-table2", "WeightLoRA Table 2: DeBERTa-v3-base on GLUE, all attention layers (n = 72)",
          "weightlora_table2.csv", "deberta_v3_base", "weightlora/deberta_v3_base_n72/{task}", rank_rows(20, 15),
          (PARAMS_COL, *acc_f1_cols(GLUE7)), published_scale=100.0, figures=OMEGA),
    Table("weightlora-table3", "WeightLoRA Table 3: Llama-3-8B on GLUE (n = 224)", "weightlora_table3.csv",
          "llama3_8b", "weightlora/llama3_8b/{task}", rank_rows(100, 56),
          (PARAMS_COL, *acc_f1_cols((*GLUE7, "stsb"))), published_scale=100.0, figures=OMEGA),
    Table("weightlora-table4", "WeightLoRA Table 4: DeBERTa-v3-base on SQuAD, F1", "weightlora_table4.csv",
          "deberta_v3_base", DEBERTA, method_rows(20, 15), percent_cols(("squad_v1", "squad_v2"), RANKS, "f1"),
          figures=OMEGA),
    Table("weightlora-table5", "WeightLoRA Table 5: BART-large on XSum and CNN/DailyMail, ROUGE-1",
          "weightlora_table5.csv", "bart_large", "weightlora/bart_large/{task}", method_rows(20, 48),
          percent_cols(("xsum", "cnn_dm"), RANKS, "rouge1"), figures=OMEGA),
    Table("weightlora-table6", "WeightLoRA Table 6: WeightLoRA vs random adapters (RLoRA), r = 8",
          "weightlora_table6.csv", "deberta_v3_base", DEBERTA,
          tuple(row for k in (1, 5, 10) for row in (
              Row(f"k{k}_wlora", f"K={k} WLoRA", run="weightlora", k=k, source="weightlora-table1"),
              Row(f"k{k}_rlora", f"K={k} RLoRA", run="rlora", k=k))),
          acc_f1_cols(GLUE7), published_scale=100.0, figures=OMEGA),
]
