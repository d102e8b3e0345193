"""The web demo's page: one question answered at several FitPrune budgets, side by side.

    page = build_page(demo, PageDefaults(conv_mode="llava_v1", ratios=(0.0, 60.0)))
    page.queue(default_concurrency_limit=1).launch()

Left: the image (upload or a bundled example) as the vision tower sees it, the question, the
conversation template, the pruning policy, the reduction ratios (those the model has recipes
for, plus any typed in) and decoding. Below: one column per ratio with the answer (streamed),
the patches kept after the chosen layer drawn over the image, the visual tokens kept after each
layer as a curve, the FLOPs removed (paper and full conventions), prefill latency and decode
speed. The requests themselves are `llava.serve.demo_requests`; this module only lays out and
formats.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Iterator, List, Optional, Sequence, Tuple

import gradio as gr
import numpy as np
import pandas as pd
from PIL import Image

from llava.conversation import conv_templates
from llava.model.pruning.from_config import DEFAULT_POLICY
from llava.model.pruning.policies import METHOD_LABELS, POLICIES
from llava.serve.demo_limits import return_large_blocks
from llava.serve.demo_requests import MAX_BUDGETS, DemoModel, DemoRequest, RequestError, parse_ratios, run_request
from llava.serve.demo_results import (
    BudgetDone,
    BudgetFailed,
    BudgetResult,
    PartialAnswer,
    RequestDone,
    RequestEvent,
    RequestFailed,
    RequestStarted,
)

logger = logging.getLogger(__name__)

DISPLAY_SIDE = 240
"""Pixels the image views are enlarged to (at least), with whole-pixel patches."""

@dataclass(frozen=True)
class PageDefaults:
    """What the page shows before the user changes anything.

    Attributes:
        conv_mode: the conversation template selected.
        ratios: the reduction ratios ticked.
        max_new_tokens: the answer length limit.
        examples: bundled (image path, question) pairs.
        policy: the pruning method selected (a key of `POLICIES`).
    """

    conv_mode: str
    ratios: Tuple[float, ...] = (0.0,)
    max_new_tokens: int = 128
    examples: Sequence[Tuple[str, str]] = ()
    policy: str = DEFAULT_POLICY


@dataclass
class Slot:
    """The components of one budget's column."""

    column: gr.Column
    title: gr.Markdown
    answer: gr.Textbox
    overlay: gr.Image
    curve: gr.LinePlot
    stats: gr.Markdown


@dataclass
class PageState:
    """A session's latest answers, kept to redraw the overlays for another layer."""

    started: bool = False
    view: Optional[np.ndarray] = None
    results: List[Optional[BudgetResult]] = field(default_factory=lambda: [None] * MAX_BUDGETS)


def ratio_value(ratio: float) -> str:
    """The checkbox value of a ratio ("60", "0")."""
    return f"{ratio:g}"


def ratio_label(ratio: float) -> str:
    """The checkbox label of a ratio ("60 %", "0 % (unpruned)")."""
    return f"{ratio:g} %" + (" (unpruned)" if ratio == 0 else "")


def enlarge(pixels: Optional[np.ndarray], side: int = DISPLAY_SIDE) -> Optional[Image.Image]:
    """`pixels` (H, W, 3) scaled up by a whole factor to at least `side` wide, nearest
    neighbour so each patch stays a crisp square; None stays None."""
    if pixels is None:
        return None
    factor = max(1, -(-side // pixels.shape[1]))
    image = Image.fromarray(pixels)
    return image.resize((image.width * factor, image.height * factor), Image.NEAREST)


def curve_frame(result: BudgetResult) -> Optional[pd.DataFrame]:
    """The keep-count curve's points: layer 0 is the input, layer l+1 after decoder layer l."""
    if result.keep_counts is None:
        return None
    counts = ([result.num_visual] if result.num_visual is not None else []) + list(result.keep_counts)
    start = 0 if result.num_visual is not None else 1
    return pd.DataFrame({"after layer": list(range(start, start + len(counts))), "visual tokens": counts})


def overlay_caption(result: BudgetResult, layer: int) -> str:
    """The overlay's label: the layer drawn and how many patches it kept."""
    layer = min(max(layer, 0), len(result.masks) - 1)
    return f"Kept after layer {layer}: {int(result.masks[layer].sum())} of {result.num_visual} patches"


def stats_markdown(result: BudgetResult) -> str:
    """The column's figures, one per line."""
    return "\n\n".join(result.summary_lines())


def failed_budget_markdown(event: BudgetFailed) -> str:
    """A ratio without a recipe: why, and the command that makes one."""
    return (f"**No recipe for this ratio.** {event.message}\n\nMake one, then ask again:\n\n"
            f"```\n{event.command}\n```")


class Page:
    """The Blocks page and its event handlers for one `DemoModel`."""

    def __init__(self, demo: DemoModel, defaults: PageDefaults):
        self.demo = demo
        self.defaults = defaults
        self.layers = demo.model.config.num_hidden_layers
        self.slots: List[Slot] = []
        self.blocks = self._build()

    def _build(self) -> gr.Blocks:
        """Lays out the page and wires its events."""
        ratios = (0.0,) + tuple(r for r in self.demo.recipe_ratios() if r != 0)
        with gr.Blocks(title="LLaVA + FitPrune", analytics_enabled=False) as blocks:
            gr.Markdown(f"## LLaVA + FitPrune: {self.demo.model_name}\nOne question, answered at each "
                        "reduction ratio (share of the visual tokens' prefill FLOPs removed), with what each "
                        "kept. Requests are answered one at a time; a waiting request shows its place in "
                        "the queue.")
            with gr.Row():
                with gr.Column(scale=1, min_width=300):
                    image_file = gr.File(label="Image", type="filepath", elem_id="image-file")
                    preview = gr.Image(label="As the vision tower sees it", interactive=False, height=260,
                                       elem_id="preview")
                with gr.Column(scale=2):
                    question = gr.Textbox(label="Question", lines=2, elem_id="question")
                    with gr.Row():
                        conv_mode = gr.Dropdown(sorted(conv_templates), value=self.defaults.conv_mode,
                                                label="Conversation template", elem_id="conv-mode")
                        policy = gr.Radio([(METHOD_LABELS[p], p) for p in POLICIES], value=self.defaults.policy,
                                          label="Pruning policy", elem_id="policy")
                    checked = gr.CheckboxGroup([(ratio_label(r), ratio_value(r)) for r in ratios],
                                               value=[ratio_value(r) for r in self.defaults.ratios if r in ratios],
                                               label="Reduction ratios (the model's recipes)", elem_id="ratios")
                    other = gr.Textbox(label="Other ratios, e.g. 45, 75 (without a recipe, the column shows "
                                             "the calibrate command)", elem_id="other-ratios")
                    with gr.Row():
                        temperature = gr.Slider(0, 1, value=0, step=0.05, label="Temperature (0: greedy)")
                        max_new_tokens = gr.Slider(1, 1024, value=self.defaults.max_new_tokens, step=1,
                                                   label="Max new tokens")
                    submit = gr.Button("Answer at each ratio", variant="primary", elem_id="submit")
                    status = gr.Markdown(elem_id="status")
            layer = gr.Slider(0, self.layers - 1, value=self.layers - 1, step=1,
                              label="Draw the patches kept after layer", elem_id="layer")
            with gr.Row():
                for i in range(MAX_BUDGETS):
                    with gr.Column(visible=False, elem_id=f"budget-{i}", min_width=220) as column:
                        self.slots.append(Slot(
                            column,
                            gr.Markdown(elem_id=f"title-{i}"),
                            gr.Textbox(label="Answer", interactive=False, elem_id=f"answer-{i}"),
                            gr.Image(label="Kept patches", interactive=False, height=260, elem_id=f"overlay-{i}"),
                            gr.LinePlot(x="after layer", y="visual tokens", label="Visual tokens kept",
                                        x_lim=[0, self.layers], y_lim=[0, None], height=180,
                                        elem_id=f"curve-{i}"),
                            gr.Markdown(elem_id=f"stats-{i}"),
                        ))
            if self.defaults.examples:
                gr.Examples([list(example) for example in self.defaults.examples], inputs=[image_file, question],
                            label="Bundled examples")
            state = gr.State(PageState())
            self.status, self.preview, self.state = status, preview, state

            # previews beyond the demo's image slots wait in gradio's queue, which shows the user their place
            image_file.change(self.show_preview, inputs=image_file, outputs=[preview, status],
                              concurrency_limit=self.demo.image_slots.count, concurrency_id="image")
            request_inputs = [image_file, question, conv_mode, policy, checked, other, temperature,
                              max_new_tokens, layer]
            outputs = [status, preview, state] + [c for s in self.slots for c in self._slot_components(s)]
            submit.click(self.answer, inputs=request_inputs, outputs=outputs, concurrency_id="model")
            layer.change(self.redraw, inputs=[state, layer], outputs=[s.overlay for s in self.slots],
                         concurrency_limit=None)
        return blocks

    @staticmethod
    def _slot_components(slot: Slot) -> list:
        return [slot.column, slot.title, slot.answer, slot.overlay, slot.curve, slot.stats]

    def show_preview(self, image_path: Optional[str]):
        """Upload handler: the tower's view of the image, or why it cannot be used."""
        if not image_path:
            return None, ""
        try:
            _, view = self.demo.load_view(image_path)
        except RequestError as err:
            return None, f"**{err}**"
        return enlarge(view), ""

    def redraw(self, state: PageState, layer: int) -> list:
        """Layer slider handler: each answered column's overlay for the new layer."""
        updates = []
        for result in state.results:
            if result is None or result.masks is None:
                updates.append(gr.update())
            else:
                updates.append(gr.update(value=enlarge(result.overlay(state.view, int(layer))),
                                         label=overlay_caption(result, int(layer))))
        return updates

    def answer(self, image_path, question, conv_mode, policy, checked, other, temperature, max_new_tokens,
               layer) -> Iterator[dict]:
        """Submit handler: streams each budget's column as `run_request` answers it."""
        try:
            request = DemoRequest(image_path, question or "", conv_mode, parse_ratios(checked, other),
                                  policy or DEFAULT_POLICY, float(temperature), int(max_new_tokens))
        except RequestError as err:
            yield self._failed(str(err))
            return
        state = PageState()
        try:
            for event in run_request(self.demo, request):
                yield self._updates(event, state, int(layer), request)
        except Exception as err:  # formatting bugs too: a message on the page, the traceback in the log
            logger.exception("web demo handler failed")
            yield {self.status: f"**Internal error ({type(err).__name__}: {err}); see the server log.**"}

    def _failed(self, message: str, hide_columns: bool = True) -> dict:
        """The status line for a request that cannot be answered; the previous answers are
        hidden when it never started (they would look like this request's)."""
        updates = {self.status: f"**{message}**"}
        if hide_columns:
            updates.update({slot.column: gr.update(visible=False) for slot in self.slots})
        return updates

    def _updates(self, event: RequestEvent, state: PageState, layer: int, request: DemoRequest) -> dict:
        """The component updates one request event makes."""
        if isinstance(event, RequestStarted):
            state.started, state.view = True, event.view
            note = f" {event.note}" if event.note else ""
            updates = {self.status: f"Answering at {len(event.ratios)} ratio(s)…{note}",
                       self.preview: enlarge(event.view), self.state: state}
            for i, slot in enumerate(self.slots):
                shown = i < len(event.ratios)
                title = f"### {ratio_label(event.ratios[i])} · {METHOD_LABELS[request.policy]}" if shown else ""
                updates.update({slot.column: gr.update(visible=shown), slot.title: title,
                                slot.answer: gr.update(value="", visible=True),
                                slot.overlay: gr.update(value=None, label="Kept patches", visible=True),
                                slot.curve: gr.update(visible=False),
                                slot.stats: "waiting…" if shown else ""})
            return updates
        if isinstance(event, PartialAnswer):
            return {self.slots[event.slot].answer: event.text}
        if isinstance(event, BudgetDone):
            slot, result = self.slots[event.slot], event.result
            state.results[event.slot] = result
            overlay = (gr.update(value=enlarge(result.overlay(state.view, layer)), label=overlay_caption(result, layer))
                       if result.masks is not None else gr.update(value=None, label="Kept patches: not drawn for "
                                                                                  "anyres (LLaVA-NeXT) models"))
            curve = curve_frame(result)
            return {slot.answer: result.answer, slot.overlay: overlay,
                    slot.curve: gr.update(value=curve, visible=curve is not None),
                    slot.stats: stats_markdown(result), self.state: state}
        if isinstance(event, BudgetFailed):
            slot = self.slots[event.slot]
            return {slot.answer: gr.update(visible=False), slot.overlay: gr.update(visible=False),
                    slot.curve: gr.update(visible=False), slot.stats: failed_budget_markdown(event)}
        if isinstance(event, RequestFailed):
            return self._failed(event.message, hide_columns=not state.started)
        if isinstance(event, RequestDone):
            return {self.status: event.message}
        raise TypeError(f"unknown request event {event!r}")


def build_page(demo: DemoModel, defaults: PageDefaults) -> gr.Blocks:
    """The demo's Blocks page for `demo` (queue and launch it). Freed image buffers go straight
    back to the system from then on in this process (`llava.serve.demo_limits.return_large_blocks`),
    so the server holds no more than its image slots' images however many threads read uploads."""
    return_large_blocks()
    return Page(demo, defaults).blocks
