"""NDCG@k for single-target recommendation, as an `evaluate` module loadable offline by path."""

import datasets
import evaluate

from training.ranking import cutoff_means

_DESCRIPTION = """
NDCG@k with one relevant item: 1 / log2(rank + 1) when the item is at `rank` <= k among the distinct ranked
predictions, else 0, averaged over examples (the ideal DCG is 1). Duplicated predictions keep their best rank; a
ranking shorter than k that misses the target scores 0.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `int`): per example, the ranked item ids, best first.
    references (`list` of `int`): per example, the single relevant item id.
    k (`int` or `list` of `int`, defaults to 10): the cut-off(s).
Returns:
    `dict` with one entry per cut-off, keyed "ndcg@<k>".
Examples:
    >>> ndcg = evaluate.load(metric_path("ndcg"))
    >>> ndcg.compute(predictions=[[3, 7, 1]], references=[7], k=5)
    {'ndcg@5': 0.6309297535714575}
"""

_CITATION = """
@article{jarvelin2002cumulated,
  title = {Cumulated Gain-Based Evaluation of {IR} Techniques},
  author = {J{\\"a}rvelin, Kalervo and Kek{\\"a}l{\\"a}inen, Jaana},
  journal = {ACM Transactions on Information Systems},
  volume = {20},
  number = {4},
  pages = {422--446},
  year = {2002}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Ndcg(evaluate.Metric):
    """Why a module and not only a function: `evaluate` gives batching (`add_batch`) and a shareable, named metric."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("int64")), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions: list[list[int]], references: list[int], k: int | list[int] = 10) -> dict:
        return cutoff_means("ndcg", predictions, references, k)
