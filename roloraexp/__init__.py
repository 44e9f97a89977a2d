"""roloraexp: rank-adaptive low-rank fine-tuning experiments (ROLoRA, WeightLoRA and baselines).

Entry points: ``python -m roloraexp.run`` (one run or a Hydra multirun), ``python -m roloraexp.report``
(paper tables from results.json files); see README.md.
"""
__version__ = "0.1.0"
