"""Turning `EvalItem`s into prepared samples (prompt ids, images) and answers into answer rows."""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import shortuuid
import torch
from PIL import Image

from llava.constants import IMAGE_TOKEN_INDEX
from llava.errors import ContextLengthError, check_context_length
from llava.eval.driver.batch_generation import PreparedSample
from llava.eval.driver.questions import UnencodableTextError, build_question_prompt, check_encodable
from llava.eval.records.sidecar_files import RUN_RECORD_SUFFIX, RUN_STATS_SUFFIX, sidecar_path
from llava.eval.driver.sample_errors import FailedSample, SampleErrorLog
from llava.image_loading import ImageError, bound_image_geometry, decode_base64_image, load_image
from llava.mm_utils import parse_grid_pinpoints, process_images, tokenizer_image_token
from llava.model.anyres import merge_image_features, merge_type_of, uses_anyres
from llava.eval.driver.flags import ImageLoading
from llava.eval.driver.items import EvalItem
from llava.eval.driver.model_loading import LoadedModel

class SamplePreparer:
    """Builds the prompt and pixels of an item (picklable, for DataLoader workers)."""

    def __init__(self, loaded: LoadedModel, conv_mode: str, image_folder: str, image_loading: ImageLoading,
                 question_file: str):
        self.tokenizer = loaded.tokenizer
        self.image_processor = loaded.image_processor
        self.config = loaded.model.config
        self.conv_mode = conv_mode
        self.image_folder = image_folder
        self.image_loading = image_loading
        self.question_file = question_file
        self.num_visual_tokens = loaded.model.get_model().num_visual_tokens()
        self.tile_pixels = loaded.model.get_model().get_vision_tower().config.image_size

    def prompt(self, item: EvalItem) -> str:
        """The full conversation prompt of an item."""
        return build_question_prompt(item.question, self.conv_mode, with_image=item.image is not None,
                                     use_im_start_end=self.config.mm_use_im_start_end)

    def load_image(self, item: EvalItem) -> Image.Image:
        """The item's image, RGB, bounded for its preprocessing path (`llava.image_loading`).

        Raises:
            ImageError: the image cannot be used (the message names the file or the base64 source).
        """
        if self.image_loading.source == "base64":
            image = decode_base64_image(item.image, name="base64 image")
        else:
            image = load_image(os.path.join(self.image_folder, item.image))
        return bound_image_geometry(image, self.image_processor, self.preprocessing_path())

    def preprocessing_path(self) -> Optional[str]:
        """The `image_aspect_ratio` that `pixels` preprocesses with: the config's for `process_images`,
        None for resize-and-crop."""
        if self.image_loading.pad or uses_anyres(self.config):
            return self.config.image_aspect_ratio
        return None

    def pixels(self, image: Image.Image) -> torch.Tensor:
        """(3, H, W) pixels of one image, padded or not as the driver does upstream;
        (views, 3, H, W) for LLaVA-NeXT's anyres images, whatever the driver."""
        if self.image_loading.pad or uses_anyres(self.config):
            return process_images([image], self.image_processor, self.config)[0]
        return self.image_processor.preprocess(image, return_tensors="pt")["pixel_values"][0]

    def visual_tokens(self, pixels: torch.Tensor, image_size: Tuple[int, int]) -> int:
        """The tokens one image's `pixels` splice into the prompt: the tower's count, or for
        LLaVA-NeXT's anyres views (views, 3, H, W) the length of their merged run (tiles,
        unpadding and newlines), computed on placeholder features of width 1."""
        if pixels.dim() == 3:
            return self.num_visual_tokens
        placeholder = torch.zeros(pixels.shape[0], self.num_visual_tokens, 1)
        pinpoints = self.config.image_grid_pinpoints
        run = merge_image_features(placeholder, merge_type_of(self.config), image_size=image_size,
                                   grid_pinpoints=parse_grid_pinpoints(pinpoints) if pinpoints else None,
                                   tile_pixels=self.tile_pixels, image_newline=torch.zeros(1))
        return run.shape[0]

    def __call__(self, item: EvalItem) -> Union[PreparedSample, FailedSample]:
        """The item's model inputs, or, when its prompt or image cannot be used, why not.

        A prompt is unusable when it holds a character the tokenizer cannot encode, image
        placeholders that do not match its images, or more text and visual tokens than the
        model's context (``max_position_embeddings``).
        """
        where = f"{self.question_file}:{item.line}"
        try:
            check_encodable(item.question)
        except UnencodableTextError as err:
            return FailedSample(item, "text", f"{where}: field 'text': {err}")
        input_ids = tokenizer_image_token(self.prompt(item), self.tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt")
        placeholders, images = int((input_ids == IMAGE_TOKEN_INDEX).sum()), int(item.image is not None)
        if placeholders != images:
            return FailedSample(item, "text", f"{where}: field 'text': the prompt holds {placeholders} image "
                                              f"placeholders for {images} image(s)")
        sample = PreparedSample(item, input_ids, None)
        if item.image is not None:
            try:
                image = self.load_image(item)
            except ImageError as err:
                return FailedSample(item, "image", f"{where}: field 'image': {err}")
            sample = PreparedSample(item, input_ids, self.pixels(image), image.size)
        visual = self.visual_tokens(sample.image, sample.image_size) if sample.image is not None else 0
        try:
            check_context_length(len(input_ids) - placeholders, visual, self.config.max_position_embeddings)
        except ContextLengthError as err:
            return FailedSample(item, "text", f"{where}: field 'text': {err}")
        return sample


class PreparedItems(torch.utils.data.Dataset):
    """The items of a run as a dataset of prepared samples (or failed ones), for a DataLoader."""

    def __init__(self, items: Sequence[EvalItem], prepare: SamplePreparer):
        self.items = items
        self.prepare = prepare

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Union[PreparedSample, FailedSample]:
        return self.prepare(self.items[index])


def as_sample_list(samples: List[Union[PreparedSample, FailedSample]]) -> List[Union[PreparedSample, FailedSample]]:
    """A DataLoader collate function that keeps a batch as the list of its samples."""
    return samples


def answer_row(item: EvalItem, text: str, model_name: str) -> dict:
    """One answer line: question_id, prompt, text, the item's extra fields, answer_id, model_id, metadata."""
    return {"question_id": item.question_id, "prompt": item.prompt, "text": text, **item.extra,
            "answer_id": shortuuid.uuid(), "model_id": model_name, "metadata": {}}


def remove_run_files(answers_file: str) -> None:
    """Deletes an answers file, its run-stats log, run record and errors file (``--overwrite``)."""
    for path in (Path(answers_file), sidecar_path(answers_file, RUN_STATS_SUFFIX),
                 sidecar_path(answers_file, RUN_RECORD_SUFFIX), SampleErrorLog(answers_file).path):
        path.unlink(missing_ok=True)
