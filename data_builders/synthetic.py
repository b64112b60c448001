"""Synthetic item photos and explanation records for a P5 domain that has neither (such as the embedded Beauty sample).

Everything made here is labelled synthetic wherever it is used, and is a pure function of the interactions and the ids:

* **Photos.** An item's colour is its co-purchase cluster and its shape a hash of its ASIN. Clusters come from the
  training part of the sequences only (each user's last two items are held out, as the splits hold them out), so no
  validation or test interaction shapes an image. The images therefore carry a real signal (items bought by the same
  people tend to look alike) without naming any item. There are few distinct looks (colours x shapes), so CLIP runs
  once per look and every item of a look gets the same feature.
* **Explanations.** P5's `exp_splits.pkl` format: one review record per interaction, split 8:1:1 with P5's review
  split; the sentence names the item's colour and shape, a feature word of the item and an opinion that follows the
  star rating, which combines a per-user and a per-item leaning.
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .atomic import atomic_path
from .domain import Interactions
from .semantic_ids import co_purchase_embedding, kmeans, training_mask
from .splits import p5_review_split

# One colour per cluster: named, so explanations can say them, and far apart, so image features tell them apart.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 40), "orange": (245, 140, 25), "yellow": (240, 215, 40), "green": (40, 160, 60),
    "teal": (20, 150, 150), "blue": (40, 80, 215), "purple": (130, 50, 175), "pink": (245, 135, 185),
    "brown": (120, 70, 30), "black": (20, 20, 20), "grey": (140, 140, 140), "gold": (200, 160, 60),
}
# shape -> the product word the explanations use for it
SHAPES: dict[str, str] = {"round": "jar", "square": "compact", "tall": "bottle", "triangle": "tube"}
FEATURES = ("scent", "texture", "colour", "price", "size", "packaging", "formula", "finish")
OPINIONS = {1: ("i regret buying", "awful"), 2: ("i am disappointed by", "poor"), 3: ("it is okay ,", "average"),
            4: ("i like", "nice"), 5: ("i love", "wonderful")}
LIGHT = (245, 245, 240)
IMAGE_SIZE = 224
EMBEDDING_DIM = 16
KMEANS_ITERATIONS = 50


def stable_hash(*parts: object) -> int:
    """A hash that is the same on every machine and run (Python's `hash` of a string is salted per process)."""
    return int.from_bytes(hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()[:8], "little")


@dataclass(frozen=True)
class Look:
    """What an item's synthetic photo shows."""

    colour: str
    shape: str

    @property
    def name(self) -> str:
        return f"{self.colour}-{self.shape}"

    @property
    def noun(self) -> str:
        return SHAPES[self.shape]

    def image(self, size: int = IMAGE_SIZE) -> Image.Image:
        """The photo: a light shape on a background of the colour (a colour filling the frame moves CLIP features
        five times further from their mean than a small coloured shape on white does)."""
        image = Image.new("RGB", (size, size), COLOURS[self.colour])
        draw, fill, s = ImageDraw.Draw(image), LIGHT, size / IMAGE_SIZE
        box = {"round": (52, 52, 172, 172), "square": (62, 62, 162, 162), "tall": (87, 30, 137, 194)}
        if self.shape == "round":
            draw.ellipse([v * s for v in box["round"]], fill=fill)
        elif self.shape == "triangle":
            draw.polygon([(112 * s, 40 * s), (184 * s, 180 * s), (40 * s, 180 * s)], fill=fill)
        else:
            draw.rectangle([v * s for v in box[self.shape]], fill=fill)
        return image


def co_purchase_clusters(interactions: Interactions, num_items: int, num_clusters: int = len(COLOURS),
                         holdout: int = 2, seed: int = 2022) -> np.ndarray:
    """Cluster per item id (`[num_items + 1]`, row 0 unused): k-means on the co-purchase embedding of the training
    part of the sequences (every user's sequence without its last `holdout` items)."""
    vectors = co_purchase_embedding(interactions, num_items, EMBEDDING_DIM, holdout=holdout, seed=seed)
    trained = np.unique(interactions.items[training_mask(interactions, holdout)])
    centres = vectors[np.random.default_rng(seed).choice(trained, num_clusters, replace=False)]
    return kmeans(vectors, centres, KMEANS_ITERATIONS)[0]


def item_looks(interactions: Interactions, asins: Sequence[str], seed: int = 2022) -> list[Look]:
    """The look of every item (`asins[i]` is item id `i + 1`): colour from its cluster, shape from its ASIN."""
    clusters = co_purchase_clusters(interactions, len(asins), seed=seed)
    colours, shapes = list(COLOURS), list(SHAPES)
    return [Look(colours[clusters[i]], shapes[stable_hash("shape", asin) % len(shapes)])
            for i, asin in enumerate(asins, start=1)]


def write_look_images(looks: Sequence[Look], folder: str | Path) -> list[str]:
    """One PNG per distinct look, `<look name>.png`, written atomically; returns the look names."""
    folder = Path(folder)
    names = sorted({look.name: look for look in looks}.items())
    for name, look in names:
        with atomic_path(folder / f"{name}.png") as tmp, tmp.open("wb") as handle:
            look.image().save(handle, format="PNG")
    return [name for name, _ in names]


def star_rating(reviewer: str, asin: str) -> int:
    """1-5 stars: 3, moved by a per-user and a per-item leaning in {-1, 0, +1}."""
    return 3 + stable_hash("user", reviewer) % 3 - 1 + stable_hash("item", asin) % 3 - 1


def review_record(reviewer: str, asin: str, look: Look) -> dict[str, object]:
    """One synthetic review with the fields of P5's `exp_splits.pkl` records that the VIP5 prompts use."""
    stars = star_rating(reviewer, asin)
    opening, adjective = OPINIONS[stars]
    feature = FEATURES[stable_hash("feature", asin) % len(FEATURES)]
    return {
        "reviewerID": reviewer,
        "asin": asin,
        "overall": float(stars),
        "feature": feature,
        "explanation": f"{opening} the {look.colour} {look.noun} , its {feature} is {adjective}",
        "summary": f"{adjective} {look.noun}",
    }


def explanation_splits(interactions: Interactions, reviewers: Sequence[str], asins: Sequence[str],
                       looks: Sequence[Look], seed: int = 2022) -> dict[str, list[dict[str, object]]]:
    """`exp_splits.pkl` content: one review per interaction, split by P5's 8:1:1 review split."""
    users = np.repeat(np.arange(interactions.num_users), interactions.lengths)
    items = interactions.items.astype(np.int64) - 1
    train, validation, test = p5_review_split(users, items, seed=seed)
    return {name: [review_record(reviewers[users[i]], asins[items[i]], looks[items[i]]) for i in indices]
            for name, indices in (("train", train), ("val", validation), ("test", test))}


def write_exp_splits(splits: dict[str, list[dict[str, object]]], path: str | Path) -> None:
    """Write `exp_splits.pkl` atomically (plain containers only, so the restricted unpickler reads it)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(pickle.dumps(splits, protocol=4))
