"""FitPrune's scores of a half-precision model: float32 results, no float32 copy of the attention."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from llava.model.pruning.policies import SCORE_CHUNK_ELEMENTS, cross_and_self_scores
from llava.model.language_model.sequence_layout import SEGMENT_PAD, SEGMENT_PREFIX, SEGMENT_TEXT, SEGMENT_VISUAL, SequenceLayout

BATCH, HEADS, PREFIX, VISUAL, TEXT, PAD = 2, 3, 5, 700, 319, 24


class LargestFloat32:
    """Records the largest float32 tensor any operation returns while active (elements)."""

    def __init__(self):
        self.largest = 0

    def __enter__(self):
        recorder = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                for tensor in out if isinstance(out, (tuple, list)) else (out,):
                    if isinstance(tensor, torch.Tensor) and tensor.dtype == torch.float32:
                        recorder.largest = max(recorder.largest, tensor.numel())
                return out

        self.mode = Mode()
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        self.mode.__exit__(*exc)


def _layout_and_probs(dtype):
    segments = [SEGMENT_PREFIX] * PREFIX + [SEGMENT_VISUAL] * VISUAL + [SEGMENT_TEXT] * TEXT
    rows = [[SEGMENT_PAD] * PAD + segments[PAD:], segments]  # sample 0 left-padded
    segment = torch.tensor(rows)
    visual_index = torch.where(segment == SEGMENT_VISUAL, (segment == SEGMENT_VISUAL).cumsum(1) - 1, -1)
    layout = SequenceLayout.from_segments(segment, visual_index)
    length = segment.shape[1]
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(BATCH, HEADS, length, length, generator=generator) * 3
    logits = logits.masked_fill(~(segment != SEGMENT_PAD)[:, None, None, :], float("-inf"))
    return layout, logits.softmax(-1).to(dtype)


def _explicit_scores(probs, layout):
    """cross and self in float64 from the whole head-max map at once."""
    head_max = probs.double().amax(dim=1)
    text, visual = layout.text_mask.double(), layout.visual_mask.double()
    cross = (head_max * text[:, :, None]).sum(1) / text.sum(1, keepdim=True)
    self_score = (head_max * visual[:, :, None]).sum(1) / visual.sum(1, keepdim=True)
    return cross, self_score


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
def test_scores_are_float32_without_a_float32_copy_of_the_attention(dtype):
    layout, probs = _layout_and_probs(dtype)
    full_map = BATCH * probs.shape[-1] ** 2
    assert full_map >= 2 * SCORE_CHUNK_ELEMENTS  # the map must be larger than a chunk for this to test anything
    with LargestFloat32() as recorded:
        cross, self_score = cross_and_self_scores(probs, layout)
    assert cross.dtype == self_score.dtype == torch.float32
    if dtype != torch.float32:  # a float32 model's own probabilities (and views of them) are float32
        assert recorded.largest <= SCORE_CHUNK_ELEMENTS
    expected_cross, expected_self = _explicit_scores(probs, layout)
    visual = layout.visual_mask
    # float32 sums of at most ~1000 terms in [0, 1]: relative error below 1e-5
    assert torch.allclose(cross[visual].double(), expected_cross[visual], rtol=1e-5, atol=1e-9)
    assert torch.allclose(self_score[visual].double(), expected_self[visual], rtol=1e-5, atol=1e-9)
