"""The reduction ratio: a FLOPs budget in percent, parsed from user input in this one place."""
from __future__ import annotations

import argparse
import math
import numbers
from typing import Union


class ReductionRatioError(ValueError, argparse.ArgumentTypeError):
    """A reduction ratio is out of range or not a number (argparse shows its message as is)."""


def parse_reduction_ratio(value: Union[str, float, int]) -> float:
    """Parses a FLOPs budget given as a percent or as a fraction; usable as an argparse ``type=``.

    A value strictly between 0 and 1 is a fraction and is multiplied by 100 (0.6 -> 60.0); values from 1
    up to (not including) 100, and 0, are percents. So a budget below 1% cannot be written.

    Args:
        value: a number or its string form.

    Returns:
        The reduction ratio in percent, in [0, 100).

    Raises:
        ReductionRatioError: (a ValueError) not a number, NaN, negative, or 100 or more.
    """
    accepted = "expected a percent in [0, 100) such as 60, or a fraction strictly between 0 and 1 such as 0.6"
    if isinstance(value, bool):
        raise ReductionRatioError(f"reduction ratio {value!r} is not a number; {accepted}")
    if isinstance(value, str):
        try:
            ratio = float(value.strip())
        except ValueError:
            raise ReductionRatioError(f"reduction ratio {value!r} is not a number; {accepted}") from None
    elif isinstance(value, numbers.Real):
        ratio = float(value)
    else:
        raise ReductionRatioError(f"reduction ratio {value!r} is not a number; {accepted}")
    if math.isnan(ratio) or not 0 <= ratio < 100:
        raise ReductionRatioError(f"reduction ratio {value!r} is out of range; {accepted}")
    return ratio * 100 if 0 < ratio < 1 else ratio
