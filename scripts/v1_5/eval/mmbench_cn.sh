#!/bin/bash
# MMBench-CN dev, upstream's command: mmbench.sh with MMBENCH_LANG=cn (settings as there).
MMBENCH_LANG=cn
source "$(dirname "${BASH_SOURCE[0]}")/mmbench.sh"
