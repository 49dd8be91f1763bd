#!/usr/bin/env bash
# One tracked `visionpipe run` (embedded MLflow store) per checkout, back to back, from
# this checkout's venv: wall and CPU (user + sys, the task processes included) and the
# stage timings, to compare what a run costs between its stages.
#   benchmarks/run_ab.sh OLD_CHECKOUT NEW_CHECKOUT   (e.g. a `git worktree add` of a commit)
# The data: 3 digit classes x 60 images (tests/conftest.py's write_digit_images).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
python=$here/.venv/bin/python
work=$(mktemp -d)
"$python" -c "import sys; sys.path.insert(0, '$here')
from pathlib import Path; from tests.conftest import write_digit_images
write_digit_images(Path('$work/photos'), classes=(0, 1, 7), per_class=60)"
unset MLFLOW_TRACKING_URI
for checkout in "$@"; do
    out=$work/runs-$(basename "$checkout")
    (cd "$work" && PYTHONPATH=$checkout /usr/bin/time -f "$checkout: %e s wall, %U s user, %S s sys" \
        "$python" -c "import sys; from pipelines.cli import main; sys.exit(main())" run \
        --data "$work/photos" --output "$out" --preset smoke --run-id ab \
        --set train.epochs=10 --set train.batch_size=16 >"$out.log" 2>&1) || { tail -5 "$out.log"; exit 1; }
    tail -1 "$out.log"
    "$python" -c "import json; s = json.load(open('$out/ab/summary.json'))
print('  stages', s['timings_s'], 'test accuracy', s['test_accuracy'], 'tracking failed', s['tracking']['failed'])"
done
