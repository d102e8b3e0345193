"""The web demo's requests, without any web framework: check the input, answer one question
at several FitPrune budgets, report what each budget kept and cost.

    demo = DemoModel(tokenizer, model, image_processor, "llava-v1.5-7b")
    request = DemoRequest(image_path="view.png", question="What is in the image?",
                          conv_mode="llava_v1", ratios=(0.0, 60.0))
    for event in run_request(demo, request):   # RequestStarted, PartialAnswer, BudgetDone, ...
        ...

Bad input (no image, a file that is not a usable image, an empty or unencodable question, a
prompt past the model's context, a ratio that cannot be parsed) ends the request with one
`RequestFailed` event whose message is shown to the user; a ratio without a recipe fails that
budget alone (`BudgetFailed`, with the calibrate command that makes the recipe). Images are read
`llava.serve.demo_limits.IMAGE_SLOTS` at a time (`DemoModel.image_slots`), and an answer may be
no longer than the context leaves after the prompt (a lower limit is said in the status and the
log). Generations run one at a time (`DemoModel.lock`), each between configuring its own pruning
and resetting the model
to unpruned, so a request that raised or whose client went away leaves no pruner behind.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generator, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image

from llava.constants import IMAGE_TOKEN_INDEX
from llava.conversation import conv_templates
from llava.errors import ContextLengthError, check_context_length
from llava.eval.driver.batch_generation import answer_text
from llava.eval.driver.questions import UnencodableTextError, check_encodable
from llava.cli_support import BAD_INPUT_ERRORS, UsageError, generation_kwargs, image_prompt, stop_string
from llava.eval.records.run_summary import flops_summary
from llava.image_loading import DEFAULT_MAX_DECODED_BYTES, ImageError, bound_image_geometry, load_image
from llava.mm_utils import KeywordsStoppingCriteria, image_model_inputs, move_images, tokenizer_image_token
from llava.model.anyres import image_token_count, uses_anyres
from llava.model.pruning.flops import DecoderDims
from llava.model.pruning.from_config import PruningSettings
from llava.model.pruning.policies import POLICIES
from llava.model.pruning.ratio import ReductionRatioError, parse_reduction_ratio
from llava.model.pruning.recipe import RecipeBook, RecipeError
from llava.model.pruning.recipe_lookup import load_recipe_book
from llava.model.pruning.traced_flops import unpruned_visual_counts
from llava.serve.demo_limits import ImageSlots, ImageSlotsBusy, cap_new_tokens
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
from llava.serve.kept_patches import kept_patch_masks, merged_patch_mask, tower_view
from llava.serve.timed_generation import CancelCriteria, GenerationTiming, TimedTextStreamer, stream_in_thread

logger = logging.getLogger(__name__)

MAX_BUDGETS = 4
"""Most reduction ratios one request answers at (the page has this many result columns)."""


class RequestError(ValueError):
    """Input the demo cannot answer; the message is shown to the user as it is."""


@dataclass(frozen=True)
class DemoRequest:
    """One question about one image, to answer at each of `ratios`.

    Attributes:
        image_path: the uploaded image file, or None when none was given.
        question: the user's question.
        conv_mode: a key of `conv_templates`.
        ratios: reduction ratios in percent (paper convention), in the order shown.
        policy: the pruning policy's name (`llava.model.pruning.policies.POLICIES`).
        temperature: 0 decodes greedily.
        max_new_tokens: answer length limit in tokens.
    """

    image_path: Optional[str]
    question: str
    conv_mode: str
    ratios: Tuple[float, ...]
    policy: str = "fitprune"
    temperature: float = 0.0
    max_new_tokens: int = 128


def parse_ratios(checked: Sequence[Union[str, float]], other: str = "") -> Tuple[float, ...]:
    """The reduction ratios of a request: the ticked ones, then those typed in `other`
    (comma- or space-separated), each once, in that order.

    Raises:
        RequestError: none at all, more than `MAX_BUDGETS`, or a value that is not a ratio
            (the message quotes it).
    """
    values = list(checked or []) + [v for v in (other or "").replace(",", " ").split() if v]
    ratios: List[float] = []
    for value in values:
        try:
            ratio = parse_reduction_ratio(value)
        except ReductionRatioError as err:
            raise RequestError(f"Reduction ratios: {err}") from None
        if all(abs(ratio - seen) > 1e-9 for seen in ratios):
            ratios.append(ratio)
    if not ratios:
        raise RequestError("Reduction ratios: pick at least one (0 is the unpruned model).")
    if len(ratios) > MAX_BUDGETS:
        raise RequestError(f"Reduction ratios: pick at most {MAX_BUDGETS}, got {len(ratios)}.")
    return tuple(ratios)


@dataclass
class PreparedInput:
    """A request's model inputs, built once and shared by its budgets.

    Attributes:
        input_ids: (1, L) prompt ids with one IMAGE_TOKEN_INDEX placeholder, on the model's device.
        image_inputs: `generate`'s ``images`` (and ``image_sizes``) arguments.
        stop_str: the template's end of an assistant turn.
        num_other_tokens: prompt tokens other than the visual ones.
        num_visual: visual tokens of the image, or None for anyres (LLaVA-NeXT) models, whose
            count depends on the image.
        prompt_visual: visual tokens the prompt holds before pruning (anyres: from the image size).
        context: the model's context, tokens.
        view: (H, W, 3) uint8, the image as the tower sees it, or None for anyres models.
    """

    input_ids: torch.Tensor
    image_inputs: dict
    stop_str: str
    num_other_tokens: int
    num_visual: Optional[int]
    prompt_visual: int
    context: int
    view: Optional[np.ndarray]


@dataclass
class _Generated:
    """What a generation thread hands back: new token ids, timing, the prefill's trace (None
    unpruned), its visual token count before any pruning (the tower's) and, under a policy acting
    in the tower (VisionZip), the grid cells merged into contextual tokens ((P,) bool)."""

    new_tokens: List[int]
    timing: GenerationTiming
    trace: object = None
    initial_visual: Optional[int] = None
    merged: Optional[torch.Tensor] = None


@dataclass
class DemoModel:
    """One loaded LLaVA model serving demo requests, one generation at a time.

    Attributes:
        tokenizer, model, image_processor: from `load_pretrained_model`.
        model_name: the name LLaVA derives from the model path.
        recipe_file: an explicit recipe book, or None to look one up (`recipe_lookup`).
        max_bytes: most bytes an image may take decoded (`llava.image_loading.decoded_bytes`).
        image_slots: bounds the images read at once (`load_view`).
        lock: held by each generation, from configuring its pruning to resetting it.
    """

    tokenizer: object
    model: torch.nn.Module
    image_processor: object
    model_name: str
    recipe_file: Optional[str] = None
    max_bytes: int = DEFAULT_MAX_DECODED_BYTES
    image_slots: ImageSlots = field(default_factory=ImageSlots)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def anyres(self) -> bool:
        """True for LLaVA-NeXT models, whose visual token count depends on the image."""
        return uses_anyres(self.model.config)

    def recipe_ratios(self) -> Tuple[float, ...]:
        """The reduction ratios the model has recipes for (empty when it has none or its
        recipe file cannot be read)."""
        try:
            book = RecipeBook.load(self.recipe_file) if self.recipe_file else load_recipe_book(self.model.config)
        except (RecipeError, OSError):
            return ()
        return book.ratios()

    def calibrate_command(self, ratio: float) -> str:
        """The command that fits a recipe for `ratio` for this model, written where it is looked up."""
        path = getattr(self.model.config, "_name_or_path", "") or "MODEL"
        output = f" --output {self.recipe_file}" if self.recipe_file else ""
        return f"python -m fitprune.calibrate --model-path {path} --reduction-ratio {ratio:g}{output}"

    def load_view(self, image_path: Optional[str]) -> Tuple[Image.Image, Optional[np.ndarray]]:
        """The checked image (bounded in size) and, except for anyres models, its tower view.

        At most `image_slots.count` images are read at once; a call waits for a free slot.

        Raises:
            RequestError: no image, a file that cannot be used (the message names it by its
                base name), or no free slot within the slots' wait.
        """
        if not image_path:
            raise RequestError("Image: none given; upload one or pick an example.")
        try:
            with self.image_slots.held():
                image = load_image(image_path, max_bytes=self.max_bytes)
                aspect = "anyres" if self.anyres else self.model.config.image_aspect_ratio
                image = bound_image_geometry(image, self.image_processor, aspect)
                view = None if self.anyres else tower_view(image, self.image_processor, self.model.config)
        except ImageError as err:
            raise RequestError(f"Image: {str(err).replace(str(image_path), Path(image_path).name)}") from None
        except ImageSlotsBusy as err:
            raise RequestError(str(err)) from None
        return image, view

    def prepare(self, request: DemoRequest) -> PreparedInput:
        """The request's prompt and image as model inputs.

        Raises:
            RequestError: bad image, question, template or policy, or a prompt past the context.
        """
        image, view = self.load_view(request.image_path)
        question = (request.question or "").strip()
        if not question:
            raise RequestError("Question: empty; type a question about the image.")
        try:
            check_encodable(question)
        except UnencodableTextError as err:
            raise RequestError(f"Question: {err}") from None
        if request.conv_mode not in conv_templates:
            raise RequestError(f"Conversation template: unknown {request.conv_mode!r}; "
                               f"choose one of {sorted(conv_templates)}")
        if request.policy not in POLICIES:
            raise RequestError(f"Policy: unknown {request.policy!r}; choose one of {sorted(POLICIES)}")
        config = self.model.config
        conv = conv_templates[request.conv_mode].copy()
        conv.append_message(conv.roles[0], image_prompt(question, config))
        conv.append_message(conv.roles[1], None)
        input_ids = tokenizer_image_token(conv.get_prompt(), self.tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt")
        num_other = len(input_ids) - int((input_ids == IMAGE_TOKEN_INDEX).sum())
        num_visual = None if self.anyres else self.model.get_model().num_visual_tokens()
        prompt_visual = image_token_count(self.model, image.size)
        try:
            check_context_length(num_other, prompt_visual, config.max_position_embeddings)
        except ContextLengthError as err:
            raise RequestError(f"Question: too long: {err}") from None
        image_inputs = image_model_inputs(image, self.image_processor, config,
                                          aspect_config=None if self.anyres else config)
        image_inputs["images"] = move_images(image_inputs["images"], self.model.device, self.model.dtype)
        return PreparedInput(input_ids[None].to(self.model.device), image_inputs, stop_string(conv),
                             num_other, num_visual, prompt_visual, config.max_position_embeddings, view)

    def stream_budget(self, prepared: PreparedInput, ratio: float, policy: str, generation: dict
                      ) -> Generator[str, None, BudgetResult]:
        """Answers at one budget, yielding the answer so far; returns the `BudgetResult`.

        Raises:
            RecipeError: no recipe for `ratio` (the message holds the calibrate command).
            ContextLengthError: the spliced prompt is past the context (anyres models).
        """
        settings = PruningSettings(reduction_ratio=ratio, recipe_file=self.recipe_file, policy=policy)

        def work(streamer: TimedTextStreamer, cancel: threading.Event) -> _Generated:
            return self._generate(prepared, settings, generation, streamer, cancel)

        generated = yield from stream_in_thread(self.tokenizer, work)
        return self._result(prepared, settings, generated)

    def _generate(self, prepared: PreparedInput, settings: PruningSettings, generation: dict,
                  streamer: TimedTextStreamer, cancel: threading.Event) -> _Generated:
        """One `generate` under the lock, pruned as `settings` say, the model reset to
        unpruned afterwards whatever happened."""
        with self.lock:
            try:
                self.model.set_pruning(settings.reduction_ratio, settings.recipe_file, settings.policy, settings.seed)
                stopping = [KeywordsStoppingCriteria([prepared.stop_str], self.tokenizer, prepared.input_ids),
                            CancelCriteria(cancel)]
                start = time.perf_counter()
                with torch.inference_mode():
                    output_ids = self.model.generate(prepared.input_ids, streamer=streamer,
                                                     stopping_criteria=stopping, **prepared.image_inputs,
                                                     **generation)
                timing = GenerationTiming.from_arrivals(start, streamer.arrivals)
                new_tokens = output_ids[0, prepared.input_ids.shape[1]:].tolist()
                visual = unpruned_visual_counts(self.model, self.model.last_visual_counts)
                selection = getattr(self.model, "last_tower_selection", None)
                return _Generated(new_tokens, timing, self.model.last_pruning_trace,
                                  visual[0] if visual is not None else None,
                                  selection.merged_into[0].cpu() if selection is not None else None)
            finally:
                self.model.set_pruning()

    def _result(self, prepared: PreparedInput, settings: PruningSettings, generated: _Generated) -> BudgetResult:
        """The budget's answer, kept patches and FLOPs from what its generation handed back.

        Keep counts and FLOPs come from the prefill (anyres images included); the kept
        patches only for square-grid (non-anyres) models, whose grid the view shows.
        """
        trace = generated.trace
        num_visual = prepared.num_visual if prepared.num_visual is not None else generated.initial_visual
        layers = self.model.config.num_hidden_layers
        keep_counts = masks = flops = entered = merged = None
        if trace is not None:
            keep_counts = trace.counts()[:, 0].tolist()
            entered = np.array([trace.entered()[:, 0].tolist()])
        elif num_visual is not None:
            keep_counts = [num_visual] * layers
        if prepared.num_visual is not None:
            kept = ([trace.kept_indices(layer, 0) for layer in range(layers)] if trace is not None
                    else [torch.arange(num_visual)] * layers)
            masks = kept_patch_masks(kept, num_visual)
            if generated.merged is not None:
                merged = merged_patch_mask(generated.merged, num_visual)
        if num_visual is not None:
            flops = flops_summary(DecoderDims.from_config(self.model.config), np.array([num_visual]),
                                  np.array([prepared.num_other_tokens]), np.array([keep_counts]),
                                  np.array([len(generated.new_tokens)]), entered)
        answer = answer_text(self.tokenizer, generated.new_tokens, prepared.stop_str)
        return BudgetResult(settings.reduction_ratio, settings.policy, answer, len(generated.new_tokens),
                            keep_counts, num_visual, masks, flops, generated.timing, merged)


def decoding_arguments(request: DemoRequest, prepared: PreparedInput) -> Tuple[dict, Optional[str]]:
    """`generate` arguments for the request's temperature and token limit, the limit lowered to
    what the context leaves after the prompt (text and visual tokens); and the note saying so, or None.

    Raises:
        RequestError: a temperature below 0 or a token limit below 1.
    """
    try:
        generation = generation_kwargs(request.temperature, int(request.max_new_tokens))
        prompt_tokens = prepared.num_other_tokens + prepared.prompt_visual
        generation["max_new_tokens"], note = cap_new_tokens(generation["max_new_tokens"], prompt_tokens,
                                                            prepared.context)
    except UsageError as err:
        raise RequestError(f"Decoding: {str(err).lstrip('-')}") from None
    except ValueError as err:
        raise RequestError(f"Question: too long: {err}") from None
    return generation, note


def _partials(slot: int, stream: Generator[str, None, BudgetResult]) -> Generator[PartialAnswer, None, BudgetResult]:
    """`stream`'s texts as `PartialAnswer` events of `slot`; returns its result. Closing this
    closes `stream` (which stops its generation)."""
    try:
        while True:
            try:
                text = next(stream)
            except StopIteration as stop:
                return stop.value
            yield PartialAnswer(slot, text)
    finally:
        stream.close()


def run_request(demo: DemoModel, request: DemoRequest) -> Iterator[RequestEvent]:
    """Answers `request` at each of its ratios in turn, as a stream of events.

    Never raises for bad input or a failed generation: those end the stream with a
    `RequestFailed` (an unexpected error is logged with its traceback and named in the
    message); a ratio without a recipe gives a `BudgetFailed` and the next ratio runs.
    """
    started = time.perf_counter()
    try:
        prepared = demo.prepare(request)
        generation, note = decoding_arguments(request, prepared)
    except RequestError as err:
        yield RequestFailed(str(err))
        return
    if note:
        logger.info(note)
    yield RequestStarted(request.ratios, prepared.view, note)
    answered = 0
    for slot, ratio in enumerate(request.ratios):
        try:
            result = yield from _partials(slot, demo.stream_budget(prepared, ratio, request.policy, generation))
        except RecipeError as err:
            yield BudgetFailed(slot, str(err), demo.calibrate_command(ratio))
            continue
        except BAD_INPUT_ERRORS + (ReductionRatioError,) as err:
            yield RequestFailed(" ".join(str(err).splitlines()))
            return
        except Exception as err:  # the page shows one line; the log keeps the traceback
            logger.exception("request failed at reduction ratio %s", ratio)
            yield RequestFailed(f"Internal error at ratio {ratio:g}% ({type(err).__name__}: {err}); "
                                "the server log has the details. The model is ready for the next request.")
            return
        answered += 1
        yield BudgetDone(slot, result)
    yield RequestDone(f"Answered at {answered} of {len(request.ratios)} budgets in "
                      f"{time.perf_counter() - started:.1f} s." + (f" {note}" if note else ""))
