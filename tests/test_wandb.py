"""W&B bridge against real wandb in offline mode (no network): the run's config and the
history records it writes to its offline .wandb file."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pytest

from mlprefs_sdk import Client

wandb = pytest.importorskip("wandb")
from wandb.proto import wandb_internal_pb2 as pb

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore::UserWarning")]

LR = "ml.training.learning_rate"
L2 = "ml.training.regularization_l2"
TRACKING_ON = "[ml.global]\nenabled = true\n[ml.features]\nexperiment_tracking = true\n"


@pytest.fixture
def wandb_dir(tmp_path, monkeypatch):
    path = tmp_path / "wandb"
    path.mkdir()
    for name, value in {"WANDB_MODE": "offline", "WANDB_DIR": str(path), "WANDB_SILENT": "true",
                        "WANDB_DISABLE_GIT": "true", "WANDB_CONSOLE": "off"}.items():
        monkeypatch.setenv(name, value)
    yield path
    if wandb.run is not None:
        wandb.run.finish()
    wandb.teardown()  # W&B keeps its settings (WANDB_DIR too) per process until torn down


def records(run_dir: Path):
    """The protobuf records of an offline run file (LevelDB log framing: 32 KiB blocks,
    7-byte record headers: crc32, length, type full/first/middle/last)."""
    (path,) = run_dir.glob("run-*.wandb")
    data, pos, block, part = path.read_bytes(), 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pos += 7
        if kind == 0:
            pos += left - 7
            continue
        chunk, pos = data[pos:pos + length], pos + length
        if len(chunk) < length:  # the writer is mid-record: what follows is not there yet
            return
        if kind in (1, 2):
            part = chunk
        else:
            part += chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(part)
            yield record


def finished_records(run_dir: Path, timeout: float = 30.0) -> list:
    """The records once the run's exit record is on disk (wandb-core writes the file from its
    own process, and may still be writing when finish() returns)."""
    deadline = time.monotonic() + timeout
    while True:
        found = list(records(run_dir))
        if any(r.WhichOneof("record_type") == "exit" for r in found) or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def history(run_dir: Path, name: str) -> list[tuple[int, float]]:
    out = []
    for r in finished_records(run_dir):
        if r.WhichOneof("record_type") == "history":
            items = {i.key or ".".join(i.nested_key): json.loads(i.value_json)
                     for i in r.history.item}
            if name in items:
                out.append((items["_step"], items[name]))
    return out


def train(prefs, steps, edit_at=None, edit=None):
    hooks = prefs.training_hooks()
    hooks.on_train_start()
    for step in range(steps):
        if step == edit_at:
            edit()
        wandb.log({"loss": 1.0 / (step + 1)}, step=step)
        hooks.on_step_end(step)
    hooks.on_train_end()


def test_train_start_puts_every_key_and_its_source_in_the_config(wandb_dir, project_dir):
    (project_dir / "mlprefs.toml").write_text(TRACKING_ON + "[ml.training]\nlearning_rate = 0.005\n")
    run = wandb.init(project="mlprefs-test")
    with Client() as prefs:
        train(prefs, steps=1)
        keys = set(prefs.snapshot())
    config = dict(run.config)
    assert keys <= set(config) and config[LR] == 0.005
    assert config[f"mlprefs.source.{LR}"].endswith("mlprefs.toml:6")
    assert config["ml.data.sharing_allowed"] == "********"
    run.finish()


def test_a_file_edit_mid_run_updates_the_config_and_is_logged_at_its_step(wandb_dir, project_dir):
    path = project_dir / "mlprefs.toml"
    path.write_text(TRACKING_ON + "[ml.training]\nregularization_l2 = 0.0\n")

    def edit():
        path.write_text(TRACKING_ON + "[ml.training]\nregularization_l2 = 0.25\n")
        prefs.reload()

    run = wandb.init(project="mlprefs-test")
    with Client() as prefs:
        train(prefs, steps=6, edit_at=3, edit=edit)
    assert run.config[L2] == 0.25  # no "changed value" error: allow_val_change
    run_dir = Path(run.dir).parent
    run.finish()
    assert history(run_dir, f"mlprefs/{L2}") == [(4, 0.25)]


def test_set_mid_run_is_logged_at_its_step(wandb_dir, project_dir):
    (project_dir / "mlprefs.toml").write_text(TRACKING_ON)
    run = wandb.init(project="mlprefs-test")
    with Client() as prefs:
        train(prefs, steps=4, edit_at=1, edit=lambda: prefs.set(LR, 0.02))
    assert run.config[f"mlprefs.source.{LR}"].startswith("user")
    run_dir = Path(run.dir).parent
    run.finish()
    assert history(run_dir, f"mlprefs/{LR}") == [(2, 0.02)]


def test_with_tracking_off_the_run_gets_no_preferences(wandb_dir, project_dir):
    run = wandb.init(project="mlprefs-test")
    with Client() as prefs:
        train(prefs, steps=3, edit_at=1, edit=lambda: prefs.set(LR, 0.02))
    assert LR not in run.config and f"mlprefs.source.{LR}" not in run.config
    run_dir = Path(run.dir).parent
    run.finish()
    assert history(run_dir, f"mlprefs/{LR}") == []


def test_after_the_run_finished_nothing_is_logged(wandb_dir, project_dir):
    (project_dir / "mlprefs.toml").write_text(TRACKING_ON)
    wandb.init(project="mlprefs-test").finish()
    assert wandb.run is None
    with Client() as prefs:
        hooks = prefs.training_hooks()
        hooks.on_train_start()
        assert "trackers" not in hooks.scratch
        hooks.on_train_end()
