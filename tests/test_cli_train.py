"""End-to-end tests of bin/train: a run, kill -9 and resume, and bad input."""

import glob
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(REPO, "bin", "train")
SMALL_DIR = os.path.join(REPO, "tests", "data", "mnist_small")
TINY_FLAGS = [
    f"--data_dir={SMALL_DIR}",
    "--mode=all",
    "--epochs=2",
    "--batch_size=64",
    "--learning_rate=0.003",
    "--train_size=1000",
    "--val_size=300",
    "--seeds=0",
    "--verbose=2",
]
NUMBERS = (
    "val_accuracy",
    "val_loss",
    "test_accuracy",
    "test_loss",
    "train_loss",
)


def _train(*flags, timeout=300):
    return subprocess.run(
        [sys.executable, TRAIN, *flags],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


def _numbers(output_dir):
    with open(os.path.join(output_dir, "results.json")) as f:
        runs = json.load(f)["runs"]
    return {
        (r["mode"], r["seed"], r["path"]): [
            [row[k] for k in NUMBERS] for row in r["history"]
        ]
        for r in runs
    }


@pytest.mark.slow
def test_train_writes_results_report_and_resumes_after_kill(tmp_path):
    reference = tmp_path / "reference"
    done = _train(*TINY_FLAGS, f"--output_dir={reference}")
    assert done.returncode == 0, done.stderr
    assert "[joint seed=0] epoch 2/2" in done.stdout
    assert "val_accuracy: 3x3->3x3=" in done.stdout
    for name in ("results.json", "report.md", "training_curves.png"):
        assert (reference / name).is_file(), name
    report_text = (reference / "report.md").read_text()
    assert (
        "| Joint | 5x5->5x5 |" in report_text
        and "| Standalone | 3x3->3x3 |" in report_text
    )
    with open(reference / "results.json") as f:
        runs = json.load(f)["runs"]
    assert len(runs) == 8 and all(r["complete"] for r in runs)

    # Same command, killed with SIGKILL right after the first saved epoch.
    killed = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, TRAIN, *TINY_FLAGS, f"--output_dir={killed}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
    )
    progress = killed / "checkpoints" / "joint" / "seed0" / "state" / "progress.json"
    deadline = time.monotonic() + 240
    while (
        not progress.exists() and process.poll() is None and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, (
        "the run finished before it could be killed"
    )
    with open(killed / "results.json") as f:
        partial = json.load(f)["runs"]
    assert len(partial) < 8 or not all(r["complete"] for r in partial)

    done = _train(*TINY_FLAGS, f"--output_dir={killed}")
    assert done.returncode == 0, done.stderr
    assert _numbers(killed) == _numbers(reference)
    assert (killed / "report.md").is_file()
    assert not glob.glob(str(killed / "**" / ".tmp-*"), recursive=True)


def _corrupt_copy(folder):
    os.makedirs(folder)
    for name in os.listdir(SMALL_DIR):
        blob = open(os.path.join(SMALL_DIR, name), "rb").read()
        if name == "train-labels-idx1-ubyte.gz":
            blob = blob[: len(blob) // 2]
        with open(os.path.join(folder, name), "wb") as f:
            f.write(blob)
    return folder


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--data_dir={tmp}/missing"],
            "error: Data folder {tmp}/missing does not exist.",
        ),
        (
            ["--data_dir={corrupt}"],
            "error: IDX file {corrupt}/train-labels-idx1-ubyte.gz is truncated",
        ),
        (
            ["--dataset=cifar10"],
            "error: flag --dataset=cifar10: value should be one of <mnist|fashion_mnist>",
        ),
        (
            ["--epochs=0"],
            "error: Invalid value for argument `epochs`. Expected a positive integer. Received epochs=0.",
        ),
        (
            ["--paths=7x7,3x3"],
            "error: Unknown path '7x7,3x3': choice 'supernet_layer_0' has no "
            "candidate '7x7' (its candidates: 0=3x3, 1=5x5;",
        ),
        (
            ["--paths=0,9"],
            "error: Unknown path 9: path indices go from 0 to 3. Valid paths:",
        ),
        (
            ["--kernel_sizes=3,x"],
            "error: Invalid value for argument `kernel_sizes`",
        ),
        (
            ["--learning_rate=inf"],
            "error: Invalid value for argument `learning_rate`. Expected a "
            "positive finite number. Received learning_rate=inf.",
        ),
        (
            ["--branch_lr=3x3:1,5x5:inf"],
            "error: Invalid value for argument `branch_lr`.",
        ),
        (
            ["--aggregation=sum", "--padding=same", "--path_dropout=nan"],
            "error: Invalid value for argument `path_dropout`.",
        ),
    ],
)
def test_bad_input_one_line_exit_1_nothing_written(tmp_path, flags, message):
    corrupt = str(tmp_path / "corrupt")
    if any("{corrupt}" in f for f in flags):
        _corrupt_copy(corrupt)
    flags = [f.format(tmp=tmp_path, corrupt=corrupt) for f in flags]
    output_dir = tmp_path / "out"
    base = [
        f"--data_dir={SMALL_DIR}",
        "--epochs=1",
        "--train_size=100",
        "--val_size=50",
    ]
    done = _train(*base, *flags, f"--output_dir={output_dir}", timeout=120)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(message.format(tmp=tmp_path, corrupt=corrupt)), lines[0]
    assert not output_dir.exists()
    assert done.stdout == ""


@pytest.mark.slow
def test_offline_without_data_dir_fails_within_seconds(tmp_path):
    """No prepared dataset and no network: one line saying to pass
    --data_dir, not minutes of download retries."""
    output_dir = tmp_path / "out"
    env = dict(
        os.environ,
        TFDS_DATA_DIR=str(tmp_path / "tensorflow_datasets"),
        # Every connection goes to a port where nothing listens: offline,
        # whatever the machine running the test can reach.
        https_proxy="http://127.0.0.1:9",
        http_proxy="http://127.0.0.1:9",
        no_proxy="",
    )
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, TRAIN, "--epochs=1", f"--output_dir={output_dir}"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env=env,
    )
    elapsed = time.monotonic() - start
    assert done.returncode == 1, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr[-2000:]
    assert lines[0].startswith("error: Cannot load dataset 'mnist'"), lines[0]
    assert "cannot be reached" in lines[0] and "--data_dir=" in lines[0]
    assert elapsed < 60, elapsed
    assert not output_dir.exists()


def _wait_for(predicate, process, seconds=240):
    deadline = time.monotonic() + seconds
    while not predicate() and process.poll() is None:
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    return predicate()


@pytest.mark.slow
def test_second_writer_of_a_folder_is_refused_and_a_killed_one_blocks_nothing(
    tmp_path,
):
    """Two bin/train on one --output_dir: the second is refused at once with
    one line (no lost seed); a kill -9 leaves no lock behind."""
    output_dir = tmp_path / "shared"
    lock = output_dir / ".lock"
    flags = [*TINY_FLAGS, "--mode=joint", f"--output_dir={output_dir}"]
    flags = [f for f in flags if not f.startswith("--seeds")]

    def holds_lock(process):
        return lambda: lock.exists() and lock.read_text().strip() == str(process.pid)

    # The first writer holds the folder until the test lets it train (or
    # 10 minutes pass, should the test die): a tiny run can otherwise finish
    # before the second process has imported TensorFlow (it did in CI).
    go = tmp_path / "go"
    gated = (
        "import os, runpy, sys, time\n"
        "from keras_supernet import training\n"
        "real, go = training.train_epoch, sys.argv[1]\n"
        "deadline = time.monotonic() + 600\n"
        "def gated(*args, **kwargs):\n"
        "    while not os.path.exists(go) and time.monotonic() < deadline:\n"
        "        time.sleep(0.05)\n"
        "    return real(*args, **kwargs)\n"
        "training.train_epoch = gated\n"
        "sys.argv = sys.argv[2:]\n"
        "sys.path.insert(0, os.path.dirname(sys.argv[0]))\n"
        "runpy.run_path(sys.argv[0], run_name='__main__')\n"
    )
    first = subprocess.Popen(
        [sys.executable, "-c", gated, str(go), TRAIN, *flags, "--seeds=0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        # results.json is written once the first run has taken the folder.
        results_written = (output_dir / "results.json").exists
        assert _wait_for(results_written, first), first.stderr.read()
        start = time.monotonic()
        second = _train(*flags, "--seeds=1", timeout=120)
        elapsed = time.monotonic() - start
        first_was_running = first.poll() is None
    finally:
        go.touch()
        first.wait(timeout=300)
    assert second.returncode == 1, second.stderr
    lines = second.stderr.strip().splitlines()
    assert lines == [
        f"error: Output folder {output_dir} is being written by another "
        f"process (pid {first.pid}): wait for it to finish, or use another "
        "--output_dir."
    ], second.stderr
    assert elapsed < 60 and first_was_running
    assert first.returncode == 0

    # A writer killed while it holds the lock does not block the next one.
    killed = subprocess.Popen(
        [sys.executable, TRAIN, *flags, "--seeds=1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
    )
    assert _wait_for(holds_lock(killed), killed)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    done = _train(*flags, "--seeds=1")
    assert done.returncode == 0, done.stderr
    with open(output_dir / "results.json") as f:
        results = json.load(f)
    assert results["config"]["seeds"] == [0, 1]
    assert sorted({(r["seed"], r["complete"]) for r in results["runs"]}) == [
        (0, True),
        (1, True),
    ]
    assert "seeds 0, 1" in (output_dir / "report.md").read_text()


@pytest.mark.slow
def test_full_disk_is_one_line_and_leaves_no_temporary_file(tmp_path):
    # bin/train in a process where the disk reports 100 kB free (a 200 kB
    # disk made h5py crash the process with a segmentation fault).
    script = (
        "import os, runpy, shutil, sys\n"
        "real = shutil.disk_usage\n"
        "shutil.disk_usage = lambda p: real(p)._replace(free=100_000)\n"
        "sys.argv = sys.argv[1:]\n"
        "sys.path.insert(0, os.path.dirname(sys.argv[0]))\n"
        "runpy.run_path(sys.argv[0], run_name='__main__')\n"
    )
    output_dir = tmp_path / "out"
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            TRAIN,
            *TINY_FLAGS,
            "--mode=joint",
            f"--output_dir={output_dir}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert done.returncode == 1, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr[-2000:]
    assert lines[0].startswith(
        "error: Not enough free space to save epoch 1 of joint seed=0 in "
    ), lines[0]
    assert not glob.glob(str(output_dir / "**" / ".tmp-*"), recursive=True)


@pytest.mark.slow
def test_diverging_run_stops_with_one_line_and_strict_json(tmp_path):
    output_dir = tmp_path / "out"
    flags = [f for f in TINY_FLAGS if not f.startswith("--learning_rate")]
    done = _train(
        *flags,
        "--mode=joint",
        "--learning_rate=1e30",
        f"--output_dir={output_dir}",
    )
    assert done.returncode == 1, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr[-2000:]
    assert re.fullmatch(
        r"error: The training loss of joint seed=0 became (nan|inf) at epoch "
        r"1, step \d+; the run is stopped and no epoch was saved \(a lower "
        r"--learning_rate may help\)\.",
        lines[0],
    ), lines[0]
    text = (output_dir / "results.json").read_text()
    assert json.loads(text, parse_constant=pytest.fail)["runs"] == []


@pytest.mark.slow
def test_corrupt_resume_state_is_one_line(tmp_path):
    output_dir = tmp_path / "out"
    flags = [*TINY_FLAGS, "--mode=joint", f"--output_dir={output_dir}"]
    flags = [f for f in flags if not f.startswith("--epochs")]
    done = _train(*flags, "--epochs=1")
    assert done.returncode == 0, done.stderr
    state = output_dir / "checkpoints" / "joint" / "seed0" / "state" / "epoch_001.npz"
    state.write_bytes(b"not a zip file")
    done = _train(*flags, "--epochs=2")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines == [
        f"error: Resume state {state} is unreadable (truncated, or not an npz "
        f"file): delete {state} and run the same command again (joint seed=0 "
        "then trains again from epoch 1)."
    ], done.stderr[-3000:]


@pytest.mark.slow
def test_progress_counts_the_runs_epochs_and_the_summary_counts_models(
    tmp_path,
):
    output_dir = tmp_path / "out"
    flags = [f for f in TINY_FLAGS if not f.startswith("--epochs")]
    done = _train(*flags, "--epochs=3", "--paths=0", f"--output_dir={output_dir}")
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    # Keras's line per epoch, for the joint run and for the standalone one.
    for epoch in (1, 2, 3):
        assert out.count(f"Epoch {epoch}/3\n") == 2, out
    assert "Epoch 2/2" not in out
    assert (
        out.strip()
        .splitlines()[-1]
        .startswith(
            f"2 trained models complete (1 joint supernet, 1 standalone path) in "
            f"{output_dir}: "
        )
    ), out
