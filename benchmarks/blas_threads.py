"""OpenBLAS threads on evaluate's baseline-sized problem: the logistic regression that
evaluate fits on downsampled pixels, on the 1,797 digits, with the BLAS threads as they
come and limited to one (components/infra/cli.limit_blas_threads). Prints wall and CPU
seconds per fit, alternating, `--repeats` times each.

    .venv/bin/python benchmarks/blas_threads.py --repeats 3
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import time


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_info, threadpool_limits

    digits = load_digits()
    native = sorted({i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"})
    for _ in range(args.repeats):
        for threads in (None, 1):
            limit = threadpool_limits(threads, "blas") if threads else contextlib.nullcontext()
            wall, cpu = time.perf_counter(), cpu_seconds()
            with limit:
                model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300, C=0.1))
                model.fit(digits.data, digits.target)
            label = f"blas threads {threads or native}"
            print(
                f"{label}: {time.perf_counter() - wall:.2f} s wall, {cpu_seconds() - cpu:.2f} s CPU"
            )


if __name__ == "__main__":
    main()
