"""Conversion of original VIP5 / P5 state dicts (spec §2) into this package's folders (`vip5-convert`).

    vip5-convert vip5 SNAPSHOT.pth OUTPUT     # OUTPUT/base (save_pretrained) + OUTPUT/adapter (PEFT adapter folder)
    vip5-convert p5 CHECKPOINT.pth OUTPUT     # OUTPUT = a base-model folder (P5 backbone, fresh VIP5 additions)

The backbone keys are T5's and stay as they are. The VIP5 additions move from `encoder.*` to the top level, and each
original adapter (`attn_adapter`, `enc_attn_adapter`, `ff_adapter`, one shared copy under three task names) is keyed by the
projection it follows, which is where the PEFT adapter method attaches it. Geometry (T5 sizes, k, r, the feature width)
is read from the tensor shapes; nothing is guessed silently: unknown, missing and mis-shaped keys are all listed in one
error, and per-task adapters that differ are reported instead of merged.
"""

from __future__ import annotations

import pickle
import re
from collections import Counter
from pathlib import Path

import torch
from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

from data_builders.atomic import replace_dir, staging_dir
from modeling_vip5 import IMAGE_FEATURE_DIMS, VIP5AdapterConfig, VIP5Config, VIP5ForConditionalGeneration
from modeling_vip5.adapters import SUBLAYER_PATTERNS

VISUAL_RENAMES = {
    "encoder.visual_embedding.feat_embedding.0.model.0.": "visual_embedding.fc1.",
    "encoder.visual_embedding.feat_embedding.0.model.2.": "visual_embedding.fc2.",
    "encoder.visual_embedding.feat_embedding.1.": "visual_embedding.norm.",
    "encoder.whole_word_embeddings.": "whole_word_embeddings.",
    "encoder.category_embeddings.": "category_embeddings.",
}
# (stack, layer index, original adapter attribute) -> the projection whose output the adapter transforms.
ADAPTER_TARGETS = {
    ("encoder", "0", "attn_adapter"): "layer.0.SelfAttention.o",
    ("encoder", "1", "ff_adapter"): "layer.1.DenseReluDense.wo",
    ("decoder", "0", "attn_adapter"): "layer.0.SelfAttention.o",
    ("decoder", "1", "enc_attn_adapter"): "layer.1.EncDecAttention.o",
    ("decoder", "2", "ff_adapter"): "layer.2.DenseReluDense.wo",
}
ADAPTER_KEY = re.compile(
    r"^(?P<stack>encoder|decoder)\.block\.(?P<block>\d+)\.layer\.(?P<layer>\d+)\.(?P<attr>\w+_adapter)"
    r"\.adapters\.(?P<task>\w+)\.(?P<part>down_sampler|up_sampler)\.(?P<param>weight|bias)$"
)
ADAPTER_ORIGINS = {(stack, target): (layer, attr) for (stack, layer, attr), target in ADAPTER_TARGETS.items()}
TIED_COPIES = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight")
# Present in old T5 files, unused by T5 (HF lists it as "ignore if unexpected").
IGNORED_KEYS = ("decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight",)
ADAPTER_PARTS = ("down.weight", "down.bias", "up.weight", "up.bias")
# HF t5-small has 32,128 embedding rows; VIP5 and P5 resize to the 32,100 real tokens (spec §2.5).
T5_PADDED_VOCAB, VIP5_VOCAB = 32128, 32100
VIP5_ADDITIONS = ("visual_embedding.", "category_embeddings.")


class ConversionError(ValueError):
    """A checkpoint that cannot be converted; the message names the file and lists every offending key."""


def split_original_state_dict(
    state_dict: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, dict[str, torch.Tensor]]]]:
    """Split an original snapshot into base-model tensors (new names) and adapters.

    Returns `(base, adapters)` where `adapters[target_module][task]` holds `down.weight`, `down.bias`, `up.weight`,
    `up.bias` for the adapter after `target_module` (e.g. `encoder.block.0.layer.0.SelfAttention.o`). Adapter keys at a
    sublayer the original never adapts stay in `base` under their own name, so that key checks report them as unknown.
    The tied copies of `shared.weight` are dropped, after checking that they really are copies.
    """
    base: dict[str, torch.Tensor] = {}
    adapters: dict[str, dict[str, dict[str, torch.Tensor]]] = {}
    tied: dict[str, torch.Tensor] = {}
    for raw_key, tensor in state_dict.items():
        key = raw_key.removeprefix("module.")
        match = ADAPTER_KEY.match(key)
        target = match and ADAPTER_TARGETS.get((match["stack"], match["layer"], match["attr"]))
        if target:
            module = f"{match['stack']}.block.{match['block']}.{target}"
            part = "down" if match["part"] == "down_sampler" else "up"
            adapters.setdefault(module, {}).setdefault(match["task"], {})[f"{part}.{match['param']}"] = tensor
            continue
        if key in TIED_COPIES:
            tied[key] = tensor
            continue
        for old, new in VISUAL_RENAMES.items():
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        base[key] = tensor
    shared = base.get("shared.weight")
    untied = [key for key, tensor in tied.items() if shared is not None and not torch.equal(tensor, shared)]
    if untied:
        raise ConversionError(f"{untied} are not copies of shared.weight: the checkpoint's embeddings are not tied")
    return base, adapters


def load_original(path: str | Path) -> dict[str, torch.Tensor]:
    """`torch.load(weights_only=True)` of an original `.pth`, checked to be a flat state dict of tensors."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as error:
        raise ConversionError(f"{path}: cannot be read as a PyTorch checkpoint with weights_only=True ({error})") from error
    if not isinstance(state, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise ConversionError(f"{path}: expected a state dict (parameter name -> tensor), got {type(state).__name__}")
    return state


def original_key(key: str, prefix: str) -> str:
    """The name a converted base key had in the original file (for error messages)."""
    for old, new in VISUAL_RENAMES.items():
        if key.startswith(new):
            return prefix + old + key[len(new) :]
    return prefix + key


def original_adapter_key(module: str, task: str, part: str, prefix: str) -> str:
    """The original name of one adapter tensor, e.g. `...layer.1.enc_attn_adapter.adapters.direct.up_sampler.bias`."""
    stack, _, block, target = module.split(".", 3)
    layer, attr = ADAPTER_ORIGINS[(stack, target)]
    sampler, param = part.split(".")
    return f"{prefix}{stack}.block.{block}.layer.{layer}.{attr}.adapters.{task}.{sampler}_sampler.{param}"


def trim_padded_vocabulary(base: dict[str, torch.Tensor]) -> None:
    """Keep the first 32,100 rows of a 32,128-row (HF t5-small) embedding, as VIP5 and P5 do (spec §2.5)."""
    if "shared.weight" in base and base["shared.weight"].shape[0] == T5_PADDED_VOCAB:
        base["shared.weight"] = base["shared.weight"][:VIP5_VOCAB]


def backbone_geometry(base: dict[str, torch.Tensor], source: str) -> dict[str, int]:
    """T5 sizes read from the tensor shapes (vocabulary, widths, heads, buckets, layer counts)."""
    keys = {
        "shared": "shared.weight",
        "q": "encoder.block.0.layer.0.SelfAttention.q.weight",
        "bias": "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
        "wi": "encoder.block.0.layer.1.DenseReluDense.wi.weight",
    }
    missing = [key for key in keys.values() if key not in base]
    if missing:
        raise ConversionError(f"{source}: cannot read the T5 geometry, missing keys: {', '.join(missing)}")
    vocab, d_model = base[keys["shared"]].shape
    buckets, heads = base[keys["bias"]].shape

    def depth(stack: str) -> int:
        blocks = {int(m[1]) for k in base if (m := re.match(rf"{stack}\.block\.(\d+)\.", k))}
        return max(blocks) + 1 if blocks else 0

    return dict(
        vocab_size=vocab,
        d_model=d_model,
        d_kv=base[keys["q"]].shape[0] // heads,
        d_ff=base[keys["wi"]].shape[0],
        num_heads=heads,
        relative_attention_num_buckets=buckets,
        num_layers=depth("encoder"),
        num_decoder_layers=depth("decoder"),
    )


def feature_type_for(dim: int, given: str | None, source: str) -> str:
    """The `image_feature_type` to record: the given one (checked against `dim`), or the one `dim` identifies.

    512 is shared by RN101, ViT-B/32 and ViT-B/16; it resolves to the original's default, ViT-B/32.
    """
    if given is not None:
        if given in IMAGE_FEATURE_DIMS and IMAGE_FEATURE_DIMS[given] != dim:
            raise ConversionError(f"{source}: --image-feature-type {given} has width {IMAGE_FEATURE_DIMS[given]}, "
                                  f"but the mapping network takes {dim}-wide features")
        return given
    matches = [name for name, width in IMAGE_FEATURE_DIMS.items() if width == dim]
    if "vitb32" in matches:
        return "vitb32"
    if len(matches) == 1:
        return matches[0]
    raise ConversionError(f"{source}: {dim}-wide image features match no known CLIP type {IMAGE_FEATURE_DIMS}; "
                          "pass --image-feature-type")


def vip5_config_from_shapes(base: dict[str, torch.Tensor], image_feature_type: str | None, source: str) -> VIP5Config:
    """The VIP5 config of a snapshot: T5 geometry plus k, F and table sizes from the VIP5 additions' shapes."""
    geometry = backbone_geometry(base, source)
    needed = ["visual_embedding.fc1.weight", "visual_embedding.norm.weight", "whole_word_embeddings.weight",
              "category_embeddings.weight"]
    missing = [original_key(key, "") for key in needed if key not in base]
    if missing:
        raise ConversionError(f"{source}: not a VIP5 snapshot, missing keys: {', '.join(missing)}")
    width, feature_dim = base["visual_embedding.fc1.weight"].shape
    k, remainder = divmod(base["visual_embedding.norm.weight"].shape[0], geometry["d_model"])
    if remainder or k < 1:
        raise ConversionError(f"{source}: {original_key('visual_embedding.norm.weight', '')} has "
                              f"{base['visual_embedding.norm.weight'].shape[0]} entries, not a multiple of d_model "
                              f"{geometry['d_model']}")
    return VIP5Config(
        **geometry,
        image_feature_dim=feature_dim,
        image_feature_type=feature_type_for(feature_dim, image_feature_type, source),
        num_image_tokens=k,
        whole_word_vocab_size=base["whole_word_embeddings.weight"].shape[0],
        category_vocab_size=base["category_embeddings.weight"].shape[0],
    )


def key_problems(
    base: dict[str, torch.Tensor], model: VIP5ForConditionalGeneration, prefix: str, *, p5: bool = False
) -> dict[str, list[str]]:
    """Unknown, missing and mis-shaped base keys against `model` (by original names).

    For a P5 checkpoint the VIP5 additions are not expected and the whole-word table may have fewer rows.
    """
    expected = {k: v.shape for k, v in model.state_dict().items() if k not in TIED_COPIES}
    if p5:
        expected = {k: v for k, v in expected.items() if not k.startswith(VIP5_ADDITIONS)}
    problems: dict[str, list[str]] = {"unknown": [], "missing": [], "mis-shaped": []}
    for key, tensor in base.items():
        if key in IGNORED_KEYS:
            continue
        if key not in expected:
            problems["unknown"].append(original_key(key, prefix))
            continue
        shape, want = tuple(tensor.shape), tuple(expected[key])
        fits = shape == want or (p5 and key == "whole_word_embeddings.weight" and shape[1:] == want[1:]
                                 and shape[0] <= want[0])
        if not fits:
            problems["mis-shaped"].append(f"{original_key(key, prefix)} {list(shape)} (expected {list(want)})")
    problems["missing"] = [original_key(k, prefix) for k in expected if k not in base]
    return problems


def select_adapters(
    adapters: dict[str, dict[str, dict[str, torch.Tensor]]],
    model: VIP5ForConditionalGeneration,
    prefix: str,
    task: str | None,
    source: str,
) -> tuple[dict[str, dict[str, torch.Tensor]], int, list[str], dict[str, list[str]]]:
    """One adapter per insertion point: `(tensors by module, r, sublayer kinds, key problems)`.

    Every block of an adapted sublayer kind must have an adapter; all task copies must be identical unless `task` picks
    one explicitly (separately trained per-task adapters are reported, never merged).
    """
    d_model = model.config.d_model
    targets = {kind: [n for n, _ in model.named_modules() if re.fullmatch(p, n)] for kind, p in SUBLAYER_PATTERNS.items()}
    kinds = [kind for kind, names in targets.items() if any(name in adapters for name in names)]
    if not kinds:
        raise ConversionError(f"{source}: no adapter keys (`*_adapter.adapters.<task>.*_sampler.*`), so this is not a "
                              "snapshot of VIP5's adapter training")
    modules = [name for kind in kinds for name in targets[kind]]
    tasks = sorted({t for per_task in adapters.values() for t in per_task})
    problems: dict[str, list[str]] = {"unknown": [], "missing": [], "mis-shaped": []}
    for module in sorted(set(adapters) - set(modules)):
        problems["unknown"] += [original_adapter_key(module, t, p, prefix) for t, ps in adapters[module].items() for p in ps]
    widths = Counter(int(ps["down.weight"].shape[0]) for m in modules for ps in adapters.get(m, {}).values()
                     if "down.weight" in ps)
    width = widths.most_common(1)[0][0] if widths else 0
    r = d_model // width if 0 < width <= d_model else 0
    if not r or d_model // r != width:
        raise ConversionError(f"{source}: adapter bottleneck width {width} is not d_model // r for any r "
                              f"(d_model {d_model})")
    want = {"down.weight": (width, d_model), "down.bias": (width,), "up.weight": (d_model, width), "up.bias": (d_model,)}
    for module in modules:
        for t in tasks:
            for part in ADAPTER_PARTS:
                tensor = adapters.get(module, {}).get(t, {}).get(part)
                name = original_adapter_key(module, t, part, prefix)
                if tensor is None:
                    problems["missing"].append(name)
                elif tuple(tensor.shape) != want[part]:
                    problems["mis-shaped"].append(f"{name} {list(tensor.shape)} (expected {list(want[part])})")
    if any(problems.values()):
        return {}, r, kinds, problems
    if task is not None and task not in tasks:
        raise ConversionError(f"{source}: --task {task} is not among the snapshot's adapter tasks {tasks}")
    differing = [m for m in modules if any(not torch.equal(adapters[m][t][p], adapters[m][tasks[0]][p])
                                           for t in tasks[1:] for p in ADAPTER_PARTS)]
    if differing and task is None:
        raise ConversionError(
            f"{source}: the per-task adapters {tasks} differ at {len(differing)} of {len(modules)} insertion points "
            f"(e.g. {', '.join(differing[:3])}): this snapshot was trained with separate adapters per task, not one "
            f"shared set. Pick one task's copy explicitly with --task {{{','.join(tasks)}}}."
        )
    chosen = task or tasks[0]
    return {m: adapters[m][chosen] for m in modules}, r, kinds, problems


def raise_problems(source: str, problems: dict[str, list[str]]) -> None:
    """One error listing every unknown, missing and mis-shaped key, if there are any."""
    lines = [f"  {kind} keys ({len(keys)}): " + ", ".join(keys) for kind, keys in problems.items() if keys]
    if lines:
        raise ConversionError(f"{source}: cannot convert:\n" + "\n".join(lines))


def key_prefix(state: dict[str, torch.Tensor]) -> str:
    """`module.` when the file was written from a DDP wrapper (every key prefixed), for error messages."""
    return "module." if state and all(k.startswith("module.") for k in state) else ""


def load_base(model: VIP5ForConditionalGeneration, base: dict[str, torch.Tensor]) -> None:
    """Copy base tensors already checked by `key_problems` into `model` (whole-word rows from the top)."""
    tensors = {k: v for k, v in base.items() if k not in IGNORED_KEYS}
    words = tensors.pop("whole_word_embeddings.weight")
    with torch.no_grad():
        model.whole_word_embeddings.weight[: words.shape[0]] = words
    model.load_state_dict(tensors, strict=False)


def convert_vip5_snapshot(
    snapshot: str | Path,
    output: str | Path,
    *,
    task: str | None = None,
    image_feature_type: str | None = None,
    base_model_id: str | None = None,
) -> dict:
    """Original VIP5 snapshot -> `output/base` (VIP5 base model) + `output/adapter` (PEFT VIP5 adapters).

    The base folder holds everything but the adapters (including the trained norms and mapping network, which the
    adapter folder also carries as its `modules_to_save`). `base_model_id` is recorded in `adapter_config.json`
    (default: the absolute path of `output/base`; use a Hub id before publishing). Returns a summary.
    """
    source, output = str(snapshot), Path(output).resolve()
    state = load_original(snapshot)
    prefix = key_prefix(state)
    base, adapters = split_original_state_dict(state)
    trim_padded_vocabulary(base)
    config = vip5_config_from_shapes(base, image_feature_type, source)
    model = VIP5ForConditionalGeneration(config)
    problems = key_problems(base, model, prefix)
    selected, r, kinds, adapter_problems = select_adapters(adapters, model, prefix, task, source)
    raise_problems(source, {kind: problems[kind] + adapter_problems[kind] for kind in problems})
    load_base(model, base)

    with staging_dir(output.parent, output.name) as staging:
        folder = staging / "converted"
        model.save_pretrained(folder / "base")
        model.name_or_path = base_model_id or str(output / "base")  # what get_peft_model records as the base model
        peft_model = get_peft_model(model, VIP5AdapterConfig(reduction_factor=r, sublayers=kinds))
        adapter_state = get_peft_model_state_dict(peft_model, save_embedding_layers=False)  # copies hold the snapshot
        converted = {
            f"base_model.model.{module}.vip5_{part}": tensor for module, parts in selected.items()
            for part, tensor in parts.items()
        }
        if set(converted) - set(adapter_state):
            raise RuntimeError(f"adapter keys the PEFT model lacks: {sorted(set(converted) - set(adapter_state))}")
        set_peft_model_state_dict(peft_model, {**adapter_state, **converted})
        peft_model.save_pretrained(folder / "adapter", save_embedding_layers=False)  # embeddings are the base's
        replace_dir(folder, output)
    tasks = sorted({t for per_task in adapters.values() for t in per_task})
    return dict(
        base=str(output / "base"), adapter=str(output / "adapter"), num_image_tokens=config.num_image_tokens,
        reduction_factor=r, image_feature_dim=config.image_feature_dim, image_feature_type=config.image_feature_type,
        sublayers=kinds, insertion_points=len(selected), tasks=tasks,
        task_used=task or f"{tasks[0]} (all {len(tasks)} copies identical)",
    )


def convert_p5_checkpoint(
    checkpoint: str | Path,
    output: str | Path,
    *,
    num_image_tokens: int = 2,
    image_feature_type: str = "vitb32",
    seed: int = 0,
) -> dict:
    """P5 checkpoint (spec §2.4) -> a VIP5 base-model folder.

    The 512-row whole-word table fills rows 0..511 of VIP5's 1024-row one; rows 512+, the category table and the
    mapping network keep the original constructor's init (N(0, 1) tables, PyTorch Linear default), drawn from `seed`.
    """
    source, output = str(checkpoint), Path(output).resolve()
    if image_feature_type not in IMAGE_FEATURE_DIMS:
        raise ConversionError(f"--image-feature-type must be one of {sorted(IMAGE_FEATURE_DIMS)}, got {image_feature_type}")
    state = load_original(checkpoint)
    prefix = key_prefix(state)
    base, adapters = split_original_state_dict(state)
    if adapters:
        raise ConversionError(f"{source}: has VIP5 adapter keys, so it is not a P5 checkpoint; use `vip5-convert vip5`")
    trim_padded_vocabulary(base)
    config = VIP5Config(
        **backbone_geometry(base, source), image_feature_dim=IMAGE_FEATURE_DIMS[image_feature_type],
        image_feature_type=image_feature_type, num_image_tokens=num_image_tokens,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = VIP5ForConditionalGeneration(config)
    raise_problems(source, key_problems(base, model, prefix, p5=True))
    load_base(model, base)
    with staging_dir(output.parent, output.name) as staging:
        model.save_pretrained(staging / "model")
        replace_dir(staging / "model", output)
    return dict(base=str(output), num_image_tokens=num_image_tokens, image_feature_type=image_feature_type,
                whole_word_rows_copied=int(base["whole_word_embeddings.weight"].shape[0]), seed=seed)
