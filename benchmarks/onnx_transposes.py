"""Transpose nodes left in model.onnx, for every keras.applications backbone visionpipe builds.

    .venv/bin/python benchmarks/onnx_transposes.py [--size 75] [--models A,B,...]

Each backbone is built as training builds it (`weights: none`) and written with the
export stage's own `convert.write_onnx`; prints one JSON line per backbone: the
Transpose and Conv counts and the conversion time, or why it does not convert.
tests/test_openvino.py checks one backbone per block family on every `make test`.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv: list[str] | None = None) -> list[dict]:
    import onnx

    from components.export.convert import write_onnx
    from components.train.models import BACKBONES, build_model

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=75)  # InceptionV3's smallest input
    parser.add_argument("--models", default=",".join(BACKBONES))
    args = parser.parse_args(argv)
    results = []
    for name in args.models.split(","):
        started = time.time()
        with tempfile.TemporaryDirectory() as tmp:
            try:
                model = build_model(name, args.size, 3, 0.2, "none")
                write_onnx(model, args.size, Path(tmp) / "m.onnx", 17, ["a", "b", "c"])
            except Exception as error:  # noqa: BLE001  (reported, e.g. ConvNeXtTiny's Erfc)
                result = {"model": name, "error": " ".join(str(error).split())[:200]}
            else:
                ops = collections.Counter(n.op_type for n in onnx.load(f"{tmp}/m.onnx").graph.node)
                result = {"model": name, "transpose": ops["Transpose"], "conv": ops["Conv"]}
        result["seconds"] = round(time.time() - started, 1)
        print(json.dumps(result), flush=True)
        results.append(result)
    return results


if __name__ == "__main__":
    main()
