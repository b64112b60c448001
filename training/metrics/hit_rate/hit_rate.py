"""HR@k (hit rate) for single-target recommendation, as an `evaluate` module loadable offline by path."""

import datasets
import evaluate

from training.ranking import cutoff_means

_DESCRIPTION = """
HR@k is 1 when the single relevant item is among the first k distinct items of the ranked predictions, else 0,
averaged over examples. Duplicated predictions keep their best rank; a ranking shorter than k that misses the target
is a miss. With one relevant item per example HR@k equals Recall@k (the paper's "HR").
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `int`): per example, the ranked item ids, best first.
    references (`list` of `int`): per example, the single relevant item id.
    k (`int` or `list` of `int`, defaults to 10): the cut-off(s).
Returns:
    `dict` with one entry per cut-off, keyed "hr@<k>".
Examples:
    >>> hit_rate = evaluate.load(metric_path("hit_rate"))
    >>> hit_rate.compute(predictions=[[3, 7, 1]], references=[7], k=[1, 5])
    {'hr@1': 0.0, 'hr@5': 1.0}
"""

_CITATION = """
@inproceedings{geng2023vip5,
  title = {{VIP5}: Towards Multimodal Foundation Models for Recommendation},
  author = {Geng, Shijie and Tan, Juntao and Liu, Shuchang and Fu, Zuohui and Zhang, Yongfeng},
  booktitle = {Findings of the Association for Computational Linguistics: EMNLP 2023},
  year = {2023}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class HitRate(evaluate.Metric):
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
        return cutoff_means("hr", predictions, references, k)
