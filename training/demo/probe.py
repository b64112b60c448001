"""HR@10 on validation users while a stage trains: the points of the report's learning curve.

Runs the evaluation's own protocols (`full_ranking` for sequential, `scoring` for direct) on the first users of the
validation split, and computes the popularity and transition floors once on the same examples, so the curve and its
floors are read on one scale.
"""

from __future__ import annotations

from typing import Any

from modeling_vip5.processing_vip5 import VIP5Processor
from training.evaluate import EvaluateConfig
from training.evaluation_data import examples_for, load_evaluation_data
from training.protocols import ProtocolRunner, baseline_rankings
from training.ranking import cutoff_means

PROBES = {"sequential": ("A-3", "full_ranking"), "direct": ("B-5", "scoring")}


class RankingProbe:
    """`probe(model)` -> {"val_sequential_hr@10": ..., "val_direct_hr@10": ...} on the first `users` validation users."""

    def __init__(self, config: EvaluateConfig, families: tuple[str, ...] = ("sequential", "direct")):
        self.config = config
        self.processor = VIP5Processor.from_pretrained(config.processor)
        self.data = load_evaluation_data(config, self.processor)
        self.examples = {family: examples_for(family, PROBES[family][0], self.data, config) for family in families}
        self.floors = {family: {name: self._hr(family, [r.ranking for r in runs])
                                for name, runs in baseline_rankings(family, examples, self.data, config).items()}
                       for family, examples in self.examples.items()}

    def _hr(self, family: str, rankings: list[list[int]]) -> float:
        targets = [int(e.fields["target_item_id"]) for e in self.examples[family]]
        return cutoff_means("hr", rankings, targets, 10)["hr@10"]

    def __call__(self, model: Any) -> dict[str, float]:
        runner = ProtocolRunner(model, self.processor, self.config, self.data.catalogue)
        return {f"val_{family}_hr@10": self._hr(family, [r.ranking for r in runner.run(family, protocol, examples)])
                for family, examples in self.examples.items() for protocol in [PROBES[family][1]]}
