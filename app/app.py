"""The Gradio app: pick a test user or type a history, see it as pictures, the top-10 with scores, and the model's
explanation of a clicked recommendation. `Demo` holds the logic as plain methods (unit-tested without a browser);
`build_app` only lays out components and wires events to them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import gradio as gr
from PIL import Image

from .engine import Engine, Item
from .history import HeldOutUser, HistoryError, format_history, parse_history
from .images import ItemImages

Tile = tuple[str | Image.Image, str]  # (picture, caption) as gr.Gallery takes it
# Gradio gives a gallery of height "auto" a tall minimum: let the picture rows set it instead.
CSS = "#history .grid-wrap, #recommendations .grid-wrap {min-height: 0; height: auto; max-height: none}"
SYNTHETIC_NOTE = ("**Synthetic images**: the item pictures are drawn from the item ids for this demo "
                  "(they are not product photos).")


def items(count: int) -> str:
    return f"{count} item{'' if count == 1 else 's'}"


@dataclass
class View:
    """Everything one recommendation request shows; `state` is what a later click on a recommendation needs."""

    history: list[Tile] = field(default_factory=list)
    recommendations: list[Tile] = field(default_factory=list)
    status: str = ""
    state: dict[str, Any] = field(default_factory=dict)


class Demo:
    """The app's behaviour over an engine, the dataset's test users and the item pictures."""

    def __init__(self, engine: Engine, users: Mapping[int, HeldOutUser], images: ItemImages, top_k: int = 10) -> None:
        self.engine, self.users, self.images, self.top_k = engine, users, images, top_k

    def user_choices(self) -> list[tuple[str, int]]:
        return [(f"user {u.user_id} ({items(len(u.history))})", u.user_id) for u in self.users.values()]

    def tile(self, item: Item, caption: str) -> Tile:
        return self.images.image(item.asin), caption

    def pick_user(self, user_id: int | None) -> tuple[str, View]:
        """A test user's history in the text box, and the recommendations for it."""
        if user_id is None or int(user_id) not in self.users:
            return "", View(status=f"no test user {user_id}" if user_id is not None else "")
        user = self.users[int(user_id)]
        text = format_history(user.history)
        return text, self.recommend(text, user.user_id)

    def recommend(self, text: str, user_id: int | None) -> View:
        """Parse the history and rank; a history the catalogue does not know is reported, never raised."""
        try:
            history = parse_history(text or "", self.engine)
        except HistoryError as error:
            return View(status=f"⚠️ {error}")
        user_id = int(user_id) if user_id is not None else None
        ranked = self.engine.recommend(history, user_id, top_k=self.top_k)
        bought = [self.engine.item(i) for i in history]
        return View(
            history=[self.tile(item, f"{n}. {item.name}") for n, item in enumerate(bought, 1)],
            recommendations=[self.tile(item, f"#{n} · {item.score:.2f} · {item.name}")
                             for n, item in enumerate(ranked, 1)],
            status=self.status(user_id, history, ranked),
            state={"user_id": user_id, "history": history, "items": [item.item_id for item in ranked]},
        )

    def status(self, user_id: int | None, history: list[int], ranked: list[Item]) -> str:
        """Whose prompt ran, and for a test user's own history where the held-out next item landed."""
        who = "a new user" if user_id is None else f"user {user_id}"
        line = f"Top {len(ranked)} for {who} from a history of {items(len(history))}."
        user = self.users.get(user_id) if user_id is not None else None
        if user is None or tuple(history) != user.history:
            return line
        target = self.engine.item(user.target)
        ids = [item.item_id for item in ranked]
        where = f"rank {ids.index(user.target) + 1}" if user.target in ids else f"not in the top {len(ids)}"
        return f"{line} Held-out next purchase: {target.name} (item {target.item_id}), {where}."

    def explain(self, state: Mapping[str, Any], index: int) -> str:
        """The model's explanation for the recommendation at `index` of the last request."""
        if not state or not 0 <= index < len(state["items"]):
            return ""
        item = self.engine.item(state["items"][index])
        text = self.engine.explain(state["user_id"], item.item_id, state["history"])
        return f"Why {item.name} (item {item.item_id})? {text or '(the model gave no explanation)'}"


def build_app(demo: Demo, title: str = "VIP5 recommendations") -> gr.Blocks:
    """The page (launch it with `css=CSS`); its element ids are what the browser test looks for."""
    caption = " (synthetic images)" if demo.images.synthetic else ""
    choices = demo.user_choices()
    with gr.Blocks(title=title) as blocks:
        gr.Markdown(f"# {title}\nPick a user of the test split, or type a history of item ids or ASINs "
                    "(oldest first). Click a recommendation for the model's explanation.")
        if demo.images.synthetic:
            gr.Markdown(SYNTHETIC_NOTE, elem_id="synthetic-note")
        with gr.Row():
            user = gr.Dropdown(choices, value=None, label="Test user", elem_id="user", scale=1)
            history_text = gr.Textbox(label="History (item ids or ASINs, oldest first)", elem_id="history-text",
                                      scale=3)
            run = gr.Button("Recommend", variant="primary", elem_id="recommend", scale=0)
        status = gr.Markdown(elem_id="status")
        history = gr.Gallery(label=f"History, oldest first{caption}", columns=10, height="auto",
                             object_fit="contain", allow_preview=False, elem_id="history")
        recommendations = gr.Gallery(label=f"Top {demo.top_k} recommendations, best first, with log-likelihood "
                                     f"scores{caption}", columns=5, height="auto", object_fit="contain",
                                     allow_preview=False, elem_id="recommendations")
        explanation = gr.Textbox(label="Explanation of the clicked recommendation", interactive=False, lines=2,
                                 elem_id="explanation")
        state = gr.State({})
        view_outputs = [history, recommendations, status, state, explanation]

        def show(view: View) -> tuple:
            return view.history, view.recommendations, view.status, view.state, ""

        def on_user(user_id: int | None) -> tuple:
            text, view = demo.pick_user(user_id)
            return (text, *show(view))

        def on_select(state_value: dict, event: gr.SelectData) -> str:
            return demo.explain(state_value, event.index)

        user.change(on_user, inputs=user, outputs=[history_text, *view_outputs])
        for trigger in (run.click, history_text.submit):
            trigger(lambda text, user_id: show(demo.recommend(text, user_id)), inputs=[history_text, user],
                    outputs=view_outputs)
        recommendations.select(on_select, inputs=state, outputs=explanation)
    return blocks
