"""The multimodal half of LLaVA: vision tower + projector, and splicing image features
into the token embeddings where `IMAGE_TOKEN_INDEX` stands in the prompt.

LLaVA-1.5 images are one (3, H, W) view each. LLaVA-NeXT ("anyres", v1.6) images are a
base view plus grid tiles, (1 + tiles, 3, H, W) each, given as a list or a 5-D tensor,
with the originals' (width, height) as `image_sizes`; their features are merged into
one token run per image by `llava.model.anyres.merge_image_features`, so the number of
visual tokens differs from image to image.
"""
from __future__ import annotations

import numbers
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from llava.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llava.errors import check_context_length
from llava.image_tiling import Resolution, parse_grid_pinpoints
from llava.model.anyres import merge_image_features, merge_type_of, uses_anyres
from llava.model.language_model.sequence_layout import (
    SEGMENT_PAD,
    SEGMENT_PREFIX,
    SEGMENT_TEXT,
    SEGMENT_VISUAL,
    SequenceLayout,
)
from llava.model.multimodal_encoder.builder import build_vision_tower
from llava.model.multimodal_projector.builder import build_vision_projector
from llava.model.pruning.visionzip import tower_token_split

Images = Union[torch.Tensor, Sequence[torch.Tensor]]
ImageSizes = Optional[Sequence[Sequence[int]]]


class LlavaMetaModel:
    """Mixin for the inner model: owns the vision tower, the projector and, for
    ``*_unpad`` patch merging (LLaVA-NeXT), the learned ``image_newline`` (D,) embedding."""

    def __init__(self, config):
        super().__init__(config)
        if config.mm_vision_tower is not None:
            self.vision_tower = build_vision_tower(config, delay_load=True)
            self.mm_projector = build_vision_projector(config)
            if merge_type_of(config).endswith("_unpad"):
                self.image_newline = nn.Parameter(torch.zeros(config.hidden_size))

    def get_vision_tower(self):
        """The vision tower, or None for a text-only model."""
        tower = getattr(self, "vision_tower", None)
        if isinstance(tower, list):
            tower = tower[0]
        return tower


@dataclass
class SplicedInputs:
    """A left-padded prefill batch with image features in place of the image tokens.

    Attributes:
        inputs_embeds: (B, T, D) embeddings.
        attention_mask: (B, T) long, 1 on real rows.
        labels: (B, T) long with IGNORE_INDEX on visual and padding rows, or None.
        layout: what each row holds (segments, positions, visual grid indices).
    """

    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    labels: Optional[torch.Tensor]
    layout: SequenceLayout


def _images_in_order(total: int, image_counts: List[int]) -> List[List[int]]:
    """Assigns `total` images, in placeholder order across the batch, to samples.

    One image per sample is also accepted when every sample has at most one
    placeholder (the image of a sample without a placeholder is unused).

    Raises:
        ValueError: naming the image count and the placeholders per sample.
    """
    batch = len(image_counts)
    if total == batch and all(c <= 1 for c in image_counts):
        return [[b] if c == 1 else [] for b, c in enumerate(image_counts)]
    if total != sum(image_counts):
        raise ValueError(
            f"{total} images were given for {batch} samples whose prompts hold "
            f"{image_counts} <image> placeholders; give one image per placeholder"
        )
    starts = torch.tensor([0] + image_counts).cumsum(0).tolist()
    return [list(range(starts[b], starts[b + 1])) for b in range(batch)]


def _images_per_sample(images: Images, image_counts: List[int]) -> List[List[int]]:
    """Assigns image indices (into the flattened list of images) to samples.

    Args:
        images: (N, 3, H, W) tensor, (B, n, 3, H, W) tensor, or a list of B tensors
            (n_b, 3, H, W) / (3, H, W).
        image_counts: number of `IMAGE_TOKEN_INDEX` placeholders in each sample.

    Raises:
        ValueError: naming the sample, its placeholder count and the images given.
    """
    batch = len(image_counts)
    if isinstance(images, torch.Tensor) and images.dim() == 4:
        return _images_in_order(images.shape[0], image_counts)
    per_sample = [1 if img.dim() == 3 else img.shape[0] for img in images]
    if len(per_sample) != batch:
        raise ValueError(f"images hold {len(per_sample)} samples but the batch has {batch}")
    for b, (given, wanted) in enumerate(zip(per_sample, image_counts)):
        if given != wanted and not (wanted == 0 and given == 1):
            raise ValueError(
                f"sample {b} has {wanted} <image> placeholders but {given} images were given for it"
            )
    starts = torch.tensor([0] + per_sample).cumsum(0).tolist()
    return [list(range(starts[b], starts[b] + image_counts[b])) for b in range(batch)]


def _flatten_images(images: Images) -> torch.Tensor:
    if isinstance(images, torch.Tensor):
        return images.flatten(0, 1) if images.dim() == 5 else images
    return torch.cat([img[None] if img.dim() == 3 else img for img in images], dim=0)


def _anyres_views(images: Images) -> List[torch.Tensor]:
    """The views of each anyres image: (1 + tiles, 3, H, W) per image, in order.

    Raises:
        ValueError: if an item is not a (3, H, W) or (views, 3, H, W) tensor.
    """
    views = []
    for index, image in enumerate(images):
        if image.dim() not in (3, 4):
            raise ValueError(
                f"anyres image {index} has shape {tuple(image.shape)}; expected (views, 3, H, W) or (3, H, W)"
            )
        views.append(image[None] if image.dim() == 3 else image)
    return views


def _check_image_sizes(image_sizes: ImageSizes, num_images: int) -> List[Optional[Resolution]]:
    """(width, height) per image as int pairs, or None per image when not given.

    Raises:
        ValueError: if the count differs from the images or a size is not two positive ints.
    """
    if image_sizes is None:
        return [None] * num_images
    if isinstance(image_sizes, torch.Tensor):
        image_sizes = image_sizes.tolist()
    sizes = []
    for index, size in enumerate(image_sizes):
        if isinstance(size, torch.Tensor):
            size = size.tolist()
        if len(size) != 2 or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0
                                     for v in size):
            raise ValueError(f"image_sizes[{index}]={size!r} is not a (width, height) pair of positive ints")
        sizes.append((int(size[0]), int(size[1])))
    if len(sizes) != num_images:
        raise ValueError(f"{len(sizes)} image_sizes were given for {num_images} images; give one per image")
    return sizes


def _to_device(images: Images, device: torch.device) -> Images:
    """The images (a tensor or a list of tensors) on `device`."""
    if isinstance(images, torch.Tensor):
        return images.to(device=device)
    return [image.to(device=device) for image in images]


class LlavaMetaForCausalLM(ABC):
    """Mixin for the causal LM: encodes images and splices them into the prompt."""

    @abstractmethod
    def get_model(self) -> nn.Module:
        """The inner model holding the embeddings, the vision tower and the projector."""

    def get_vision_tower(self):
        return self.get_model().get_vision_tower()

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Projected visual features (N, V, D) of images (N, 3, H, W).

        When the model's pruning policy acts in the tower (VisionZip), V is the tokens it keeps and
        `last_tower_selection` says which grid cells they came from (else it is None).
        """
        model = self.get_model()
        tower = model.get_vision_tower()
        split = tower_token_split(getattr(model, "prefill_hook", None), tower, uses_anyres(self.config))
        if split is None:
            self.last_tower_selection = None
            return model.mm_projector(tower(images))
        features, self.last_tower_selection = tower.encode_visionzip(images, *split)
        return model.mm_projector(features)

    def _visual_index(self, image_idx: int, first: int, count: int, images_before: int) -> torch.Tensor:
        """(count,) grid indices of one image's spliced tokens: `first`.. in order, or, after a tower
        reduction, the grid cell of each kept patch (offset by the grid cells of the sample's
        `images_before` earlier images) and -1 for the [CLS] and merged tokens."""
        selection = getattr(self, "last_tower_selection", None)
        if selection is None:
            return torch.arange(first, first + count)
        cells = selection.grid_index[image_idx].cpu()
        offset = images_before * selection.merged_into.shape[1]
        return torch.where(cells >= 0, cells + offset, cells)

    def encode_anyres_images(self, images: Images, image_sizes: ImageSizes = None) -> List[torch.Tensor]:
        """Token runs of LLaVA-NeXT images, merged as the config's `mm_patch_merge_type` says.

        Args:
            images: one (1 + tiles, 3, H, W) or (3, H, W) tensor per image (a list or a
                5-D tensor), as `llava.mm_utils.process_images` makes them.
            image_sizes: (width, height) of each original image, in pixels (PIL's
                `image.size`); needed for images with tiles under a spatial merge.

        Returns:
            One (V_i, D) tensor per image; V_i depends on the image's aspect ratio.

        Raises:
            ValueError: a bad image shape, missing or miscounted sizes, or tiles that do
                not fit the image's grid.
        """
        views = _anyres_views(images)
        sizes = _check_image_sizes(image_sizes, len(views))
        model = self.get_model()
        tower = model.get_vision_tower()
        features = self.encode_images(torch.cat(views, dim=0))  # (all views, P, D)
        per_image = features.split([v.shape[0] for v in views], dim=0)
        merge_type = merge_type_of(self.config)
        pinpoints = self.config.image_grid_pinpoints
        return [
            merge_image_features(
                image_features,
                merge_type,
                image_size=size,
                grid_pinpoints=parse_grid_pinpoints(pinpoints) if size is not None else None,
                tile_pixels=tower.config.image_size,
                image_newline=getattr(model, "image_newline", None),
            )
            for image_features, size in zip(per_image, sizes)
        ]

    def _encode_for_splice(
        self, images: Images, image_counts: List[int], image_sizes: ImageSizes
    ) -> Tuple[Union[torch.Tensor, List[torch.Tensor]], List[List[int]]]:
        """Features indexable by image, and the images of each sample.

        Anyres models given a list or a 5-D tensor get one token run per image (one
        image per placeholder, in order); everything else is encoded as LLaVA-1.5 does.
        """
        is_views = not isinstance(images, torch.Tensor) or images.dim() == 5
        if uses_anyres(self.config) and is_views:
            features = self.encode_anyres_images(images, image_sizes)
            return features, _images_in_order(len(features), image_counts)
        assignment = _images_per_sample(images, image_counts)
        return self.encode_images(_flatten_images(images)), assignment

    def splice_images(
        self,
        input_ids: torch.Tensor,
        attention_mask: Optional[torch.Tensor],
        images: Optional[Images],
        labels: Optional[torch.Tensor] = None,
        image_sizes: ImageSizes = None,
    ) -> SplicedInputs:
        """Replaces each `IMAGE_TOKEN_INDEX` by its image's feature rows.

        The batch comes back left-padded whatever the padding side of `input_ids`, so
        the last row of every sample is its last prompt token (what generation needs).
        Every row of an image's run is visual, LLaVA-NeXT's `image_newline` rows included.

        Args:
            input_ids: (B, L) ids with IMAGE_TOKEN_INDEX placeholders.
            attention_mask: (B, L), 1 on real tokens; None means no padding.
            images: see `_images_per_sample` (LLaVA-1.5) and `encode_anyres_images`
                (LLaVA-NeXT); None for a text-only batch.
            labels: (B, L) training labels, or None.
            image_sizes: (width, height) per image, for LLaVA-NeXT's anyres images;
                ignored otherwise.

        Returns:
            SplicedInputs whose layout marks prefix, visual and text rows per sample.

        Raises:
            ValueError: when placeholders and images do not match, or placeholders
                appear with no images.
            ContextLengthError: when a sample's spliced prompt is longer than the
                model's context.
        """
        batch = input_ids.shape[0]
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        real = attention_mask.bool()
        ids_per_sample = [input_ids[b][real[b]] for b in range(batch)]
        labels_per_sample = [labels[b][real[b]] for b in range(batch)] if labels is not None else None
        image_counts = [int((ids == IMAGE_TOKEN_INDEX).sum()) for ids in ids_per_sample]
        embed = self.get_model().embed_tokens
        if images is None or sum(image_counts) == 0:
            if sum(image_counts):
                raise ValueError(f"prompts hold {image_counts} <image> placeholders but no images were given")
            features, assignment = None, [[] for _ in range(batch)]
        else:
            features, assignment = self._encode_for_splice(_to_device(images, embed.weight.device), image_counts,
                                                           image_sizes)

        rows, segments, grid, row_labels = [], [], [], []
        for b, ids in enumerate(ids_per_sample):
            holes = (ids == IMAGE_TOKEN_INDEX).nonzero().flatten().tolist()
            text_embeds = embed(ids.clamp(min=0).to(embed.weight.device))
            pieces, seg, idx, lab = [], [], [], []
            start, visual_seen = 0, 0
            for images_before, (hole, image_idx) in enumerate(zip(holes + [len(ids)], assignment[b] + [None])):
                n_text = hole - start
                pieces.append(text_embeds[start:hole])
                seg.append(torch.full((n_text,), SEGMENT_TEXT if visual_seen else SEGMENT_PREFIX))
                idx.append(torch.full((n_text,), -1))
                if labels_per_sample is not None:
                    lab.append(labels_per_sample[b][start:hole])
                if image_idx is not None:
                    feats = features[image_idx].to(embed.weight.dtype)
                    pieces.append(feats)
                    seg.append(torch.full((feats.shape[0],), SEGMENT_VISUAL))
                    idx.append(self._visual_index(image_idx, visual_seen, feats.shape[0], images_before))
                    lab.append(torch.full((feats.shape[0],), IGNORE_INDEX))
                    visual_seen += feats.shape[0]
                start = hole + 1
            check_context_length(len(ids) - len(holes), visual_seen, self.config.max_position_embeddings)
            rows.append(torch.cat(pieces))
            segments.append(torch.cat(seg))
            grid.append(torch.cat(idx))
            row_labels.append(torch.cat(lab) if labels_per_sample is not None else None)

        length = max(r.shape[0] for r in rows)
        dim = rows[0].shape[1]
        device = rows[0].device
        embeds = rows[0].new_zeros(batch, length, dim)
        segment = torch.full((batch, length), SEGMENT_PAD, dtype=torch.long)
        visual_index = torch.full((batch, length), -1, dtype=torch.long)
        new_labels = torch.full((batch, length), IGNORE_INDEX, dtype=torch.long) if labels is not None else None
        for b in range(batch):
            n = rows[b].shape[0]
            embeds[b, length - n:] = rows[b]
            segment[b, length - n:] = segments[b]
            visual_index[b, length - n:] = grid[b]
            if new_labels is not None:
                new_labels[b, length - n:] = row_labels[b].cpu()
        layout = SequenceLayout.from_segments(segment.to(device), visual_index.to(device))
        return SplicedInputs(
            inputs_embeds=embeds,
            attention_mask=layout.key_mask.long(),
            labels=new_labels.to(device) if new_labels is not None else None,
            layout=layout,
        )

    def prepare_inputs_labels_for_multimodal(
        self, input_ids, attention_mask, past_key_values, labels, images, image_sizes=None
    ):
        """Upstream's 5-tuple interface over `splice_images`.

        Returns:
            (None, attention_mask, past_key_values, inputs_embeds, labels) for a prefill
            with images; the inputs unchanged (inputs_embeds None) otherwise.
        """
        if self.get_vision_tower() is None or images is None or past_key_values is not None:
            return input_ids, attention_mask, past_key_values, None, labels
        spliced = self.splice_images(input_ids, attention_mask, images, labels, image_sizes)
        return None, spliced.attention_mask, past_key_values, spliced.inputs_embeds, spliced.labels
