"""The command line: bad usage and bad input are one clear line and exit code 2."""

import os
import subprocess
import sys

import pytest

from tests.conftest import VISIONPIPE, write_digit_images


def visionpipe(*args):
    return subprocess.run([VISIONPIPE, *args], capture_output=True, text=True, env={**os.environ})


def assert_one_line_exit_2(done, *needles):
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("visionpipe: error: "), done.stderr
    for needle in needles:
        assert needle in lines[0]


def test_missing_data_folder(tmp_path):
    done = visionpipe("run", "--data", str(tmp_path / "nope"), "--output", str(tmp_path))
    assert_one_line_exit_2(done, "does not exist", "--data DIR")


def test_empty_data_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    done = visionpipe("run", "--data", str(tmp_path / "empty"), "--output", str(tmp_path))
    assert_one_line_exit_2(done, "no images found")


def test_single_class_folder(tmp_path):
    write_digit_images(tmp_path / "one", classes=(4,), per_class=6)
    done = visionpipe("run", "--data", str(tmp_path / "one"), "--output", str(tmp_path))
    assert_one_line_exit_2(done, "found only 1 class", "at least 2")


@pytest.mark.parametrize(
    "setting, needle",
    [
        ("train.epoch=3", "unknown train config key 'epoch'"),
        ("train.epochs=-1", "epochs=-1"),
        ("epochs=3", "<stage>.<key>"),
    ],
)
def test_bad_settings_fail_before_anything_runs(tmp_path, setting, needle):
    done = visionpipe("run", "--set", setting, "--output", str(tmp_path))
    assert_one_line_exit_2(done, needle)


def test_stage_command_with_missing_dataset(tmp_path):
    done = visionpipe("train", "--dataset", str(tmp_path / "nope"), "--output", str(tmp_path / "m"))
    assert_one_line_exit_2(done)


def test_module_entry_point_matches(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "components.prepare",
            "--data",
            str(tmp_path / "nope"),
            "--output",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
    )
    assert_one_line_exit_2(done, "does not exist")


def test_unknown_command_is_usage_error():
    done = visionpipe("frobnicate")
    assert done.returncode == 2


@pytest.mark.parametrize("ending, status", [("", 0), ("raise SystemExit(3)", 3), ("1 / 0", 1)])
def test_skipping_the_final_collection_keeps_output_handlers_and_status(ending, status):
    """skip_final_collection() freezes the heap at exit (it saves ~1.6 s per process that
    loaded TensorFlow): registered once however often asked, an exit handler registered
    before it still runs, unflushed output still arrives, and the exit status is the
    program's own, clean, SystemExit or an uncaught error."""
    program = "\n".join(
        [
            "import atexit, gc, sys",
            "from components.infra.cli import skip_final_collection",
            "atexit.register(lambda: print('earlier handler ran', flush=True))",
            "freeze = gc.freeze",
            "gc.freeze = lambda: (print('frozen', end=' '), freeze())",
            "skip_final_collection(); skip_final_collection()",
            "sys.stdout.write('unflushed ')",
            ending,
        ]
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True)
    assert done.returncode == status, done.stderr
    assert done.stdout == "unflushed frozen earlier handler ran\n"  # frozen once, last in
    assert ("ZeroDivisionError" in done.stderr) == (status == 1)


@pytest.mark.parametrize("preset", [None, "2"])
def test_blas_runs_on_one_thread_unless_the_user_said_otherwise(preset):
    """limit_blas_threads() (every command and task): numpy's and SciPy's OpenBLAS on one
    thread, loaded before or after; a user's OPENBLAS_NUM_THREADS is left alone."""
    program = "\n".join(
        [
            "import numpy, os",
            "from threadpoolctl import threadpool_info",
            "from components.infra.cli import limit_blas_threads",
            "limit_blas_threads()",
            "import scipy.linalg",  # SciPy's own OpenBLAS, loaded after
            "print(os.environ['OPENBLAS_NUM_THREADS'])",
            "print(sorted({i['num_threads'] for i in threadpool_info() if i['user_api'] == 'blas'}))",
        ]
    )
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if preset:
        env["OPENBLAS_NUM_THREADS"] = preset
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ([preset, f"[{preset}]"] if preset else ["1", "[1]"])
