"""Images budgeted by decoded bytes, 16-bit images converted in integers, and the web demo's memory
under parallel hostile uploads (`llava.image_loading`, `llava.serve.demo_limits`,
`benchmarks/upload_memory.py`), and the demo's answer length capped to the context the prompt's text
and visual tokens leave (anyres images counted from their size). Memory is measured in child processes
(VmHWM after resetting it), so what other tests allocated does not count."""
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fitprune.lab.tiny_checkpoint import VISION_TOWER_DIR
from llava import image_loading as images
from llava.image_loading import ImageError, decoded_bytes, load_image, to_rgb
from llava.mm_utils import process_images
from llava.model.anyres import image_token_count
from llava.serve.demo_limits import IMAGE_SLOTS, cap_new_tokens
from llava.serve.demo_requests import DemoModel, DemoRequest, decoding_arguments
from tests.helpers import IMAGE_SIZES, NEXT_NAME, build_prompt, encode_batch, picture

REPO = Path(__file__).resolve().parents[1]


def _reference_grey(values: np.ndarray) -> np.ndarray:
    """round(v / 257) of every value clipped to 0..65535, in float64 (the old conversion)."""
    return np.round(np.clip(values.astype(np.float64), 0, 65535) / 257).astype(np.uint8)


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I"])
def test_sixteen_bit_values_are_scaled_to_eight_bits_as_rounded_division(mode, monkeypatch):
    monkeypatch.setattr(images, "STRIP_PIXELS", 1000)  # 3 rows of 256 per strip: many strips, a short last one
    values = np.arange(65536, dtype=np.int64).reshape(256, 256)
    if mode == "I":  # 32-bit integers: values outside 0..65535 are clipped
        values = values * 2 - 40000
    dtype = {"I;16": "<u2", "I;16B": ">u2", "I": "<i4"}[mode]
    image = Image.frombytes(mode, (256, 256), values.astype(dtype).tobytes())
    rgb = np.asarray(to_rgb(image))
    expected = _reference_grey(values)
    assert rgb.shape == (256, 256, 3)
    assert (rgb == expected[:, :, None]).all()


@pytest.mark.parametrize("mode, per_pixel", [("RGB", 3), ("L", 1 + 3), ("I;16", 2 + 3), ("I;16B", 2 + 3),
                                             ("LA", 2 + 3), ("RGBA", 4 + 3), ("I", 4 + 3), ("F", 4 + 3)])
def test_decoded_bytes_count_the_mode_and_the_rgb_copy(mode, per_pixel):
    assert decoded_bytes(mode, (40, 25)) == 1000 * per_pixel


def test_the_budget_is_exact_in_bytes(tmp_path):
    path = tmp_path / "grey16.png"
    Image.fromarray(np.full((25, 40), 1000, dtype=np.uint16)).save(path)  # 1000 pixels of I;16: 5000 bytes
    assert load_image(path, max_bytes=5000).size == (40, 25)
    with pytest.raises(ImageError) as caught:
        load_image(path, max_bytes=4999)
    assert str(caught.value) == (f"{path}: 40x25 pixels of mode I;16 take 5000 bytes decoded, above the limit of "
                                 "4999 bytes (decompression-bomb guard)")


def test_the_budget_is_checked_from_the_header_before_any_pixel_is_decoded(tmp_path):
    """A 16-bit grey PNG whose header claims 20000 x 20000 pixels and whose data is not even valid:
    refused for its size (a decode would have said the file is corrupt)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    path = tmp_path / "bomb16.png"
    header = chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 16, 0, 0, 0, 0))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", b"not zlib") + chunk(b"IEND", b""))
    with pytest.raises(ImageError, match=r"20000x20000 pixels of mode I;16 take 2000000000 bytes decoded, above the "
                                         r"limit of 268435456 bytes \(decompression-bomb guard\)$"):
        load_image(path)


def _run_child(code: str, *args: str) -> dict:
    """Runs `code` in a fresh Python with `args` as sys.argv[1:]; its last stdout line, as JSON."""
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


CONVERSION_PROBE = """
import json, sys
import numpy as np
from PIL import Image
from benchmarks.memory_probe import reset_peak_resident, resident_bytes
from llava.image_loading import to_rgb
from llava.serve.demo_limits import return_large_blocks
return_large_blocks()
side = int(sys.argv[1])
image = Image.fromarray(np.full((side, side), 40000, dtype=np.uint16))
reset_peak_resident()
before = resident_bytes()["VmRSS"]
rgb = to_rgb(image)
print(json.dumps({"rise": resident_bytes()["VmHWM"] - before, "pixel": list(rgb.getpixel((0, 0)))}))
"""


def test_converting_a_16_bit_image_holds_no_float_copies():
    side = 3000
    measured = _run_child(CONVERSION_PROBE, str(side))
    assert measured["pixel"] == [156] * 3  # round(40000 / 257)
    # What the conversion must hold: the 8-bit grey image (1 byte per pixel), the RGB image (PIL keeps 4 bytes
    # per pixel) and one strip's temporaries (STRIP_PIXELS pixels, under 1 MB); 4 MB more for the allocator.
    # The float64 conversion held at least two 8-byte copies: 16 bytes per pixel, 144 MB here.
    bound = side * side * (1 + 4) + 4 * 1024 * 1024
    assert measured["rise"] < bound, f"{measured['rise'] / 1e6:.1f} MB for {side}x{side}, bound {bound / 1e6:.1f} MB"


def test_eight_parallel_hostile_uploads_hold_at_most_the_image_slots(tiny_checkpoint):
    """Eight 16-bit greyscale uploads just under the budget, read at once through the web demo's
    `DemoModel.load_view` (what the upload preview runs), by `benchmarks/upload_memory.py`."""
    side, budget = 1600, 16_000_000
    code = "import sys; sys.argv[0] = 'upload_memory'; from benchmarks.upload_memory import main; main(sys.argv[1:])"
    measured = _run_child(code, "--model-path", str(tiny_checkpoint), "--uploads", "8", "--side", str(side),
                          "--max-bytes", str(budget))
    assert measured["answered"] == 8 and measured["refused"] == [], measured
    assert measured["decoded_bytes"] == side * side * 5 <= budget  # hostile: as large as the budget lets in
    # Each of the IMAGE_SLOTS images read at once holds its decoded pixels (2 bytes per pixel), the 8-bit copy
    # (1) and the RGB image (PIL keeps 4): 7 bytes per pixel, 1.4 x its budgeted 5. The size-bounded copy and
    # the tower's view are at most two RGB images of MAX_SIDE_IN_TOWER_SIDES tower sides squared (4.7 MB for
    # the tiny model's 48-pixel tower); 8 MB more for thread stacks and the allocator. Eight images read at
    # once would take 8 x 1.4 x 12.8 = 143 MB.
    crop = json.loads((tiny_checkpoint / VISION_TOWER_DIR / "preprocessor_config.json").read_text())["crop_size"]
    bounded_side = images.MAX_SIDE_IN_TOWER_SIDES * max(crop.values())
    per_image = 1.4 * measured["decoded_bytes"]
    bound = IMAGE_SLOTS * per_image + 2 * bounded_side ** 2 * 4 + 8 * 1024 * 1024
    assert measured["peak_rise_bytes"] < bound, (
        f"{measured['peak_rise_bytes'] / 1e6:.1f} MB for 8 uploads, bound {bound / 1e6:.1f} MB")


@pytest.mark.parametrize("requested, prompt, context, allowed, note", [
    (128, 600, 4096, 128, None),
    (1024, 3900, 4096, 196, "Max new tokens lowered from 1024 to 196: the prompt takes 3900 of the model's "
                            "4096-token context."),
    (5, 4091, 4096, 5, None),
])
def test_the_answer_length_is_capped_to_the_room_the_prompt_leaves(requested, prompt, context, allowed, note):
    assert cap_new_tokens(requested, prompt, context) == (allowed, note)


def test_a_prompt_that_fills_the_context_leaves_no_room():
    with pytest.raises(ValueError, match=r"^prompt is 4096 tokens, which leaves no room for an answer in the "
                                         r"model's context of 4096 tokens \(max_position_embeddings\)$"):
        cap_new_tokens(1, 4096, 4096)


ANYRES_SIZES = [*IMAGE_SIZES, (24, 24), (200, 20)]  # besides IMAGE_SIZES: a 1x2 grid of a square, a 3x1 thin strip


@pytest.mark.parametrize("merge_type", ["spatial_unpad", "spatial", "flat"])
def test_anyres_token_count_is_what_the_prefill_splices_for_each_image_size(next_model, merge_type, monkeypatch):
    tokenizer, model, processor = next_model
    monkeypatch.setattr(model.config, "mm_patch_merge_type", merge_type)
    images = [picture(size, seed) for seed, size in enumerate(ANYRES_SIZES)]
    ids, mask = encode_batch(tokenizer, [build_prompt("What is it?")] * len(images), "left")
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, images=process_images(images, processor, model.config),
                    image_sizes=[image.size for image in images], use_cache=False)
    spliced = out.sequence_layout.initial_visual.tolist()
    assert len(set(spliced)) > 2  # 2, 3 and 4 tiles (and under unpad, different crops) give different counts
    assert [image_token_count(model, size) for size in ANYRES_SIZES] == spliced


@pytest.mark.parametrize("size", [(90, 40), (30, 100)])
def test_the_demo_caps_an_anyres_answer_to_the_context_minus_text_and_visual_tokens(next_model, tmp_path, size):
    tokenizer, model, processor = next_model
    path = tmp_path / "image.png"
    picture(size).save(path)
    demo = DemoModel(tokenizer, model, processor, NEXT_NAME)
    request = DemoRequest(str(path), "What is in the picture?", "llava_v1", (0.0,), max_new_tokens=10 ** 6)
    prepared = demo.prepare(request)
    with torch.inference_mode():  # the prefill's rows: the prompt's text tokens and the image's visual ones
        rows = model(prepared.input_ids, **prepared.image_inputs).logits.shape[1]
    generation, note = decoding_arguments(request, prepared)
    assert generation["max_new_tokens"] == model.config.max_position_embeddings - rows
    assert note.startswith(f"Max new tokens lowered from 1000000 to {generation['max_new_tokens']}: the prompt "
                           f"takes {rows} of the model's")
