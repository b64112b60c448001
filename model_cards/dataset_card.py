"""Dataset card of a built VIP5 dataset folder, generated from the build manifest (real statistics, item indexing,
provenance). It returns a `huggingface_hub.DatasetCard`; writing it is the caller's job, so a model-card generator can
follow the same pattern (card data + Jinja template + values measured by code) next to this module."""

from __future__ import annotations

from pathlib import PurePosixPath

from huggingface_hub import DatasetCard, DatasetCardData

SOURCE_LABELS = {
    "p5": "the P5/VIP5 preprocessed files",
    "raw": "the raw Amazon 2014 review and metadata files, preprocessed as P5 does",
}
CONFIG_DOCS = (
    (
        "sequential",
        "train, validation, test",
        "`user_id`, `history` (item ids, chronological), `target`. Leave-one-out: test = (i_1..i_{N-1}, i_N), "
        "validation = (i_1..i_{N-2}, i_{N-1}); a train row holds the whole training sequence i_1..i_{N-2} as "
        "`history + [target]`, from which VIP5 draws its random training targets",
    ),
    (
        "direct",
        "validation, test",
        "`user_id`, `positive` (i_{N-1} / i_N), `negatives` (the user's fixed candidates, never interacted with)",
    ),
    (
        "explanation",
        "train, validation, test",
        "`user_id`, `item_id`, `reviewer_id`, `asin`, `user_desc` (reviewer name, else reviewerID), `title` "
        "('unknown title' when missing, as in VIP5's prompts), `star_rating`, `feature`, `summary`, `explanation`, "
        "`review_text`, `unix_review_time`",
    ),
    (
        "items",
        "train (the catalogue)",
        "`item_id`, `asin`, `title`, `image_url`, `has_image`, one fixed-size float32 column per CLIP encoder",
    ),
    ("users", "train (the user table)", "`user_id`, `reviewer_id`, `name`"),
)
STATS_HEADER = (
    "domain",
    "users",
    "items",
    "interactions",
    "sparsity",
    "sequence length min / mean / median / p99 / max",
    "leave-one-out train / valid / test",
    "items with a photo",
    "item indexing",
)

TEMPLATE = """---
{{ card_data }}
---

# {{ pretty_name }}

Amazon review domains in the form used by VIP5 (Geng et al., *VIP5: Towards Multimodal Foundation Models for
Recommendation*, Findings of EMNLP 2023) and P5 (Geng et al., RecSys 2022): interaction sequences, fixed negatives,
explanation records, item metadata with CLIP image features, and users. Built by `vip5-data build`; every number on
this page was computed from the files of this repository.

## Statistics

{% for row in stats_table %}{{ row }}
{% endfor %}
{%- for d in domains if d.stats.explanation_rows is defined %}
Explanation rows of {{ d.name }}: {% for split, n in d.stats.explanation_rows.items() %}{{ split }} {{ n }}
{{- ", " if not loop.last else "" }}{% endfor %}; with an explanation sentence: {{
d.stats.explanation_rows_with_sentence }}.
{% endfor %}

## Configurations

Load one with `datasets.load_dataset("{{ repo }}", "<domain>_<config>")`, e.g.
`load_dataset("{{ repo }}", "{{ example_config }}")`. Ids are integers starting at 1; item ids follow the item
indexing of the domain (below), `asin` and `reviewer_id` are the stable keys.

{% for row in config_table %}{{ row }}
{% endfor %}
## Item indexing

{% for d in domains -%}
* **{{ d.name }}**: `{{ d.indexing.name }}`{% if d.indexing.seed is defined %} (seed {{ d.indexing.seed }}){% endif %}
  — {{ d.indexing.description }}.
{%- if d.indexing.parameters is defined %} Parameters: {% for key, value in d.indexing.parameters.items() -%}
  `{{ key }}` = `{{ value }}`{{ ", " if not loop.last else "." }}{% endfor %}{% endif %}
{%- if d.stats.test_item_is_last_plus_one is defined %} The test item id is the last history id + 1 for
  {{ "{:.2%}".format(d.stats.test_item_is_last_plus_one) }} of the users.{% endif %}
{% endfor %}
P5 and VIP5 number items in order of first appearance, so consecutive purchases get consecutive ids and the held-out
item is often "last history id + 1"; results obtained with `paper` indexing carry that advantage and are not comparable
with results under the leak-free indexings `random`, `sequential_train_first`, `collaborative` or `visual` (jeykigung/P5
PR #3; Hua et al., arXiv 2305.06569). `collaborative` and `visual` ids carry structure through their decimal digits: the
ids sharing a decimal prefix (all ids starting with `3`, or with `35`) are one cluster of co-purchased or similar-looking
items; whether such ids also share their first tokens depends on how the tokenizer splits numbers.

## Image features

{% for d in domains -%}
* **{{ d.name }}**: {% for name, e in d.encoders.items() %}`{{ name }}` ({{ e.dim }} floats, {{ e.items_with_feature }}
  of {{ e.items }} items with a feature; array `{{ e.file }}`){{ ", " if not loop.last else "" }}
{%- else %}no image features in this build{% endfor %}.
{% endfor %}
Features are raw (not L2-normalised) outputs of OpenAI CLIP's `encode_image` (open_clip, `pretrained="openai"`), as in
the original VIP5 release. Items without a usable photo get a zero vector and `has_image = False`. Row `i` of
`<domain>/features/<encoder>.npy` is item id `i` (row 0 is zeros); `data_builders.load_item_features` memory-maps it.

## Provenance

{% for d in domains -%}
### {{ d.name }}

Source: {{ d.source_label }}.
{%- if d.negatives_origin %} Fixed negatives: {{ d.negatives_origin }}.{% endif %}
{%- if d.explanation_origin %} Explanations: {{ d.explanation_origin }}.{% endif %}

| input file | bytes | sha256 |
|---|---|---|
{% for name, f in d.provenance.items() -%}
| `{{ name }}` | {{ f.bytes }} | `{{ f.sha256 }}` |
{% endfor %}
{%- if d.notes %}
Notes:
{% for note in d.notes %}
* {{ note }}
{%- endfor %}
{% endif %}
{% endfor %}
## Licence

The reviews and metadata are the Amazon product data of McAuley et al. (SIGIR 2015) and He and McAuley (WWW 2016),
released by their authors for research use; the files here are derived from them, are offered under the same terms,
and no further rights are claimed. Item photos are not included, only features computed from them. The preprocessing
follows P5 (Apache-2.0).

## Citation

{% raw %}```bibtex
@inproceedings{geng2023vip5,
  title = {{VIP5}: Towards Multimodal Foundation Models for Recommendation},
  author = {Geng, Shijie and Tan, Juntao and Liu, Shuchang and Fu, Zuohui and Zhang, Yongfeng},
  booktitle = {Findings of the Association for Computational Linguistics: EMNLP 2023},
  year = {2023}
}
```{% endraw %}
"""


def _markdown_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _stats_row(name: str, entry: dict) -> tuple[str, ...]:
    s = entry["stats"]
    missing = "–"
    lengths, loo = s.get("sequence_length"), s.get("leave_one_out")
    return (
        name,
        f"{s['num_users']:,}" if "num_users" in s else missing,
        f"{s['num_items']:,}" if "num_items" in s else missing,
        f"{s['num_interactions']:,}" if "num_interactions" in s else missing,
        f"{s['sparsity']:.4%}" if "sparsity" in s else missing,
        f"{lengths['min']} / {lengths['mean']:.4f} / {lengths['median']:g} / {lengths['p99']:g} / {lengths['max']}"
        if lengths
        else missing,
        f"{loo['train']:,} / {loo['validation']:,} / {loo['test']:,}" if loo else missing,
        f"{s['items_with_image']:,} / {s['catalogue_items']:,}" if "items_with_image" in s else missing,
        f"`{entry['indexing']['name']}`",
    )


def _size_category(count: int) -> str:
    for bound, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if count < bound:
            return label
    return "1M<n<10M" if count < 10_000_000 else "10M<n<100M"


def _configs(manifest: dict) -> list[dict]:
    return [
        {
            "config_name": f"{domain}_{config}",
            "data_files": [{"split": split, "path": str(PurePosixPath(path))} for split, path in files.items()],
        }
        for domain, entry in sorted(manifest["domains"].items())
        for config, files in entry["files"].items()
    ]


def dataset_card(manifest: dict, repo_id: str | None = None) -> DatasetCard:
    """The README of a dataset folder: YAML header (configs, licence, tags) + statistics, indexing and provenance."""
    entries = sorted(manifest["domains"].items())
    domains = [{"name": name, "source_label": SOURCE_LABELS[entry["source"]], **entry} for name, entry in entries]
    configs = _configs(manifest)
    pretty_name = "VIP5 Amazon datasets (" + ", ".join(name for name, _ in entries) + ")"
    card_data = DatasetCardData(
        language="en",
        license="other",
        license_name="amazon-product-data-research-use",
        pretty_name=pretty_name,
        size_categories=_size_category(sum(e["stats"].get("num_interactions", 0) for _, e in entries)),
        task_categories=["text-generation"],
        tags=["recommendation", "sequential-recommendation", "amazon-reviews", "clip", "p5", "vip5"],
        configs=configs,
    )
    sequential = [c["config_name"] for c in configs if c["config_name"].endswith("_sequential")]
    return DatasetCard.from_template(
        card_data,
        template_str=TEMPLATE,
        pretty_name=pretty_name,
        domains=domains,
        repo=repo_id or "<user>/<repo>",
        example_config=(sequential or [configs[0]["config_name"]])[0],
        stats_table=_markdown_table(STATS_HEADER, [_stats_row(name, entry) for name, entry in entries]),
        config_table=_markdown_table(
            ("config", "splits", "columns"), [(f"`<domain>_{name}`", splits, doc) for name, splits, doc in CONFIG_DOCS]
        ),
    )
