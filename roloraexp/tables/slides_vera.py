"""The slides' VeRA GLUE table (lowrank_methods_slides.txt, "VeRA: Vector-based Random Matrix
Adaptation", GLUE; the VeRA paper's Table 2): RoBERTa-base and RoBERTa-large on SST-2, MRPC, CoLA,
QNLI, RTE and STS-B (accuracy, MCC for CoLA, Pearson for STS-B), 5 seeds.

* ``slides-vera-table``: the RoBERTa-base half. FT, BitFit, LoRA and VeRA as the slides print them,
  DoRA and DVoRA as extra rows (not in the slides); AdapterDrop (Adpt^D, two sizes) is not
  implemented and stays empty, with a note.
* ``slides-vera-table-large``: the RoBERTa-large half, compared with the slides' large numbers. LoRA
  and VeRA as printed; Adpt^P, Adpt^H (two sizes each) and LoRA-FA are not implemented (empty, with
  a note); FT, BitFit, DoRA and DVoRA have no large row in the slides and are extra rows here.

The rows train with different recipes (each paper's own hyper-parameters), so the experiment files
(conf/experiment/slides/vera/<model>/<task>.yaml on top of conf/experiment_common/slides/vera/<model>.yaml)
hold one recipe per method, and a run takes its method's: lr, epochs, batch size, weight decay, rank (LoRA/DoRA 8, VeRA/DVoRA 1024 for base and
256 for large), alpha and the per-role learning rates. The rows therefore set no ``method.rank``
(``ranked=False``): the rank is the recipe's. ``make slides-vera-table MODEL=...`` swaps the model and
keeps the base recipes (as ``MODEL`` does for every table); the large half with its own recipes and
published numbers is ``make slides-vera-table-large``.
"""
from __future__ import annotations

from dataclasses import replace

from .columns import PARAMS_COL, glue_cols
from .spec import AVG, Col, Row, Table

TASKS = ("sst2", "mrpc", "cola", "qnli", "rte", "stsb")   # the slides' column order
NOT_HERE = "not implemented in this project"
OURS = (Row("ft", "FT", run="full_ft", ranked=False),
        Row("bitfit", "BitFit", ranked=False),
        Row("lora", "LoRA", ranked=False),
        Row("vera", "VeRA", ranked=False))
EXTRA = (Row("dora", "DoRA (not in the slides)", ranked=False, extra=True),
         Row("dvora", "DVoRA (not in the slides)", ranked=False, extra=True))
COLS = (PARAMS_COL, *glue_cols(TASKS), Col("avg", "Avg.", AVG))


def _extra(row: Row) -> Row:
    """One of our rows that the slides' large half does not print."""
    return replace(row, label=f"{row.label} (not in the slides' large half)", extra=True)


TABLES = [
    Table("slides-vera-table", "Slides: VeRA's GLUE table, RoBERTa-base (VeRA paper Table 2)", "slides_vera_table.csv",
          "roberta_base", "slides/vera/roberta_base/{task}",
          (*OURS[:2],
           Row("adpt_d_03m", "Adpt^D (0.3M)", note=NOT_HERE),
           Row("adpt_d_09m", "Adpt^D (0.9M)", note=NOT_HERE),
           *OURS[2:], *EXTRA),
          COLS),
    Table("slides-vera-table-large", "Slides: VeRA's GLUE table, RoBERTa-large (VeRA paper Table 2)",
          "slides_vera_table_large.csv", "roberta_large", "slides/vera/roberta_large/{task}",
          (_extra(OURS[0]), _extra(OURS[1]),
           Row("adpt_p_3m", "Adpt^P (3M)", note=NOT_HERE),
           Row("adpt_p_08m", "Adpt^P (0.8M)", note=NOT_HERE),
           Row("adpt_h_6m", "Adpt^H (6M)", note=NOT_HERE),
           Row("adpt_h_08m", "Adpt^H (0.8M)", note=NOT_HERE),
           Row("lora_fa", "LoRA-FA", note=NOT_HERE),
           *OURS[2:], *EXTRA),
          COLS),
]
