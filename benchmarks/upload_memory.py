"""Peak memory of the web demo reading hostile uploads at once (`python benchmarks/upload_memory.py`).

Writes ``--uploads`` 16-bit greyscale PNGs of ``--side`` × ``--side`` pixels (all black, so each
file is a few kilobytes while its decoded pixels take megabytes), loads the model as the web demo
does (`llava.serve.demo_requests.DemoModel`, decoded-bytes budget ``--max-bytes``) and reads every
upload at once, one thread each, through `DemoModel.load_view`: what the page's upload preview
(and each request) runs. The result is the resident set's rise over the reads: the kernel's
high-water mark (``/proc/self/clear_refs`` reset, then VmHWM) minus the resident set before them.
Image buffers go back to the system when freed, as in the server
(`llava.serve.demo_limits.return_large_blocks`), unless ``--default-malloc`` is given.
One JSON line on stdout: the image, the budget, the image slots, the rise in bytes, the uploads
answered and the messages of those refused.

Run: ``python benchmarks/upload_memory.py [--model-path DIR] [--uploads 8] [--side 7000]``.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from any directory
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.memory_probe import reset_peak_resident, resident_bytes  # noqa: E402
from llava.image_loading import DEFAULT_MAX_DECODED_BYTES, decoded_bytes  # noqa: E402
from llava.utils import OneLineArgumentParser  # noqa: E402

DEFAULT_MODEL_PATH = REPO_ROOT / "playground" / "models" / "llava-v1.5-shapes"
HOSTILE_MODE = "I;16"


def write_uploads(folder: Path, count: int, side: int) -> List[Path]:
    """`count` black 16-bit greyscale PNGs of `side` × `side` pixels in `folder`."""
    image = Image.fromarray(np.zeros((side, side), dtype=np.uint16))  # mode I;16
    paths = []
    for index in range(count):
        path = folder / f"upload_{index}.png"
        image.save(path)
        paths.append(path)
    return paths


def read_at_once(demo, paths: Sequence[Path]) -> dict:
    """Reads every path through ``demo.load_view`` in its own thread, all started together.

    Returns:
        peak_rise_bytes (VmHWM over the reads minus VmRSS before), answered (uploads read),
        refused (the messages of the others), seconds.
    """
    from llava.serve.demo_requests import RequestError

    barrier = threading.Barrier(len(paths))
    refused: List[str] = []

    def read(path: Path) -> None:
        barrier.wait()
        try:
            demo.load_view(str(path))
        except RequestError as err:
            refused.append(str(err))

    threads = [threading.Thread(target=read, args=(path,)) for path in paths]
    reset_peak_resident()
    before = resident_bytes()["VmRSS"]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"peak_rise_bytes": resident_bytes()["VmHWM"] - before, "answered": len(paths) - len(refused),
            "refused": refused, "seconds": round(time.perf_counter() - start, 2)}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The command line (see the module notes)."""
    parser = OneLineArgumentParser(prog="upload_memory", description=__doc__.splitlines()[0])
    parser.add_argument("--model-path", default=str(DEFAULT_MODEL_PATH))
    parser.add_argument("--uploads", type=int, default=8, help="uploads read at once (default 8)")
    parser.add_argument("--side", type=int, default=7000,
                        help="side of each image, pixels (default 7000: 245 MB decoded with its RGB copy, under "
                             "the default budget)")
    parser.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_DECODED_BYTES,
                        help=f"decoded-bytes budget per image (default {DEFAULT_MAX_DECODED_BYTES})")
    parser.add_argument("--default-malloc", action="store_true",
                        help="leave glibc's dynamic mmap threshold as it is (the server fixes it)")
    args = parser.parse_args(argv)
    if args.uploads < 1 or args.side < 1 or args.max_bytes < 1:
        parser.error("--uploads, --side and --max-bytes must be >= 1")
    if not Path(args.model_path).is_dir():
        parser.error(f"--model-path: {args.model_path} is not a directory")
    return args


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Measures the rise and prints it as one JSON line; returns the same dict."""
    args = parse_args(argv)
    from llava.model.builder import load_pretrained_model
    from llava.serve.demo_limits import return_large_blocks
    from llava.serve.demo_requests import DemoModel

    if not args.default_malloc:
        return_large_blocks()
    tokenizer, model, processor, _ = load_pretrained_model(args.model_path, None, Path(args.model_path).name,
                                                           device="cpu")
    demo = DemoModel(tokenizer, model, processor, Path(args.model_path).name, max_bytes=args.max_bytes)
    with tempfile.TemporaryDirectory() as folder:
        paths = write_uploads(Path(folder), args.uploads, args.side)
        outcome = read_at_once(demo, paths)
    result = {"uploads": args.uploads, "image": f"{args.side}x{args.side} {HOSTILE_MODE}",
              "decoded_bytes": decoded_bytes(HOSTILE_MODE, (args.side, args.side)), "max_bytes": args.max_bytes,
              "image_slots": demo.image_slots.count, "default_malloc": args.default_malloc, **outcome}
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
