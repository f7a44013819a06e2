"""Hot reload of TOML files: real files, real filesystem events, both watcher backends."""

from __future__ import annotations

import gc
import logging
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from _watch_helpers import (  # noqa
    Recorder,
    backend,
    lr_toml,
    save_atomic,
    save_in_place,
    save_paused,
    save_vim_backup,
    toml,
    wait_for,
)

from mlprefs_sdk import Client, ConfigFileError, ValidationError
from mlprefs_sdk._statpoll import GRACE_S, QUIET_S, remote_filesystem

LR = "ml.training.learning_rate"
DEFAULT_LR = 0.001


@pytest.fixture
def prefs(toml: Path, backend: str):
    with Client(watch=True) as client:
        assert client._watcher.backend == backend
        yield client


@pytest.fixture
def changes(prefs: Client) -> Recorder:
    rec = Recorder()
    prefs.on_change("ml.*", rec)
    return rec


@pytest.fixture
def errors(prefs: Client) -> Recorder:
    rec = Recorder()
    prefs.on_error(rec)
    return rec


# -- how editors save ---------------------------------------------------------------------
def test_in_place_save_is_applied(prefs, toml, changes):
    save_in_place(toml, lr_toml(0.02))
    assert wait_for(lambda: prefs.get(LR) == 0.02)
    assert wait_for(lambda: changes.values(LR) == [0.02]), changes.values(LR)  # callbacks follow the swap
    assert changes.items[0].get(LR).source.path == str(toml)


def test_atomic_save_is_applied_every_time(prefs, toml, changes):
    for value in (0.02, 0.03, 0.04):  # a file watch would lose the file after the first
        save_atomic(toml, lr_toml(value))
        assert wait_for(lambda: prefs.get(LR) == value)
    assert wait_for(lambda: changes.values(LR) == [0.02, 0.03, 0.04]), changes.values(LR)


def test_vim_backup_save_never_detours_through_the_defaults(prefs, toml, changes):
    save_vim_backup(toml, lr_toml(0.02))
    assert wait_for(lambda: prefs.get(LR) == 0.02)
    assert wait_for(lambda: changes.values(LR) == [0.02]), changes.values(LR)


@pytest.mark.skipif(shutil.which("vim") is None, reason="vim is not installed")
def test_a_real_vim_save_is_applied(prefs, toml, changes):
    subprocess.run(["vim", "-Es", "-u", "DEFAULTS", "-i", "NONE", "-c", "%s/0.01/0.02/",
                    "-c", "wq", str(toml)], check=True, timeout=30)
    assert wait_for(lambda: prefs.get(LR) == 0.02)
    assert wait_for(lambda: changes.values(LR) == [0.02]), changes.values(LR)


def test_deleting_a_file_falls_back_and_recreating_it_applies_again(prefs, toml):
    toml.unlink()
    assert wait_for(lambda: prefs.get(LR) == DEFAULT_LR)
    assert prefs.explain(LR).source.layer == "defaults"
    toml.write_text(lr_toml(0.03))
    assert wait_for(lambda: prefs.get(LR) == 0.03)


def test_configmap_symlink_swap_is_applied(home, tmp_path, backend):
    config = tmp_path / "configmap"
    config.mkdir()

    def publish(version: int, value: float) -> None:  # what the kubelet does, step by step
        target = config / f"..2024_01_01_00_00_0{version}"
        target.mkdir()
        (target / "mlprefs.toml").write_text(lr_toml(value))
        os.symlink(target.name, config / "..data_tmp")
        os.replace(config / "..data_tmp", config / "..data")

    publish(1, 0.02)
    os.symlink("..data/mlprefs.toml", config / "mlprefs.toml")
    with Client(files=[config / "mlprefs.toml"], watch=True) as prefs:
        assert prefs.get(LR) == 0.02
        for version, value in ((2, 0.03), (3, 0.04)):
            publish(version, value)
            shutil.rmtree(config / f"..2024_01_01_00_00_0{version - 1}")
            assert wait_for(lambda: prefs.get(LR) == value)


@pytest.mark.parametrize("save", [save_in_place, save_atomic])
def test_burst_of_25_saves_ends_on_the_last_value(prefs, toml, changes, save):
    values = [round(0.0101 + i * 0.0001, 6) for i in range(25)]
    for value in values:
        save(toml, lr_toml(value))
        time.sleep(0.004)
    assert wait_for(lambda: prefs.get(LR) == values[-1])
    assert wait_for(lambda: changes.values(LR)[-1:] == [values[-1]]), changes.values(LR)


# -- half-written files -------------------------------------------------------------------
def test_torn_write_completed_within_100ms_raises_no_error(prefs, toml, errors):
    with open(toml, "w", encoding="utf-8") as f:
        f.write("[ml.training]\nlearning_rate = 0.")  # not TOML yet
        f.flush()
        time.sleep(0.06)
        f.write("05\n")
    assert wait_for(lambda: prefs.get(LR) == 0.05)
    time.sleep(GRACE_S + 0.05)  # long enough for a wrongly reported torn read to surface
    assert errors.items == []


def test_in_place_save_pausing_after_truncation_never_applies_the_empty_file(prefs, toml,
                                                                              changes):
    with open(toml, "w", encoding="utf-8") as f:  # truncates: the file is empty and valid
        time.sleep(0.05)
        f.write(lr_toml(0.02))
    assert wait_for(lambda: prefs.get(LR) == 0.02)
    assert wait_for(lambda: changes.values(LR) == [0.02]), changes.values(LR)


def test_in_place_writer_pausing_1_to_9_ms_half_way_is_never_applied_half_written(prefs,
                                                                                   toml):
    never_applied_half_written(prefs, toml)


@pytest.fixture
def watchfiles_source(monkeypatch: pytest.MonkeyPatch) -> None:
    """The native backend on watchfiles' notifier, the source it uses off Linux."""
    from mlprefs_sdk import _inotify

    monkeypatch.setattr(_inotify, "available", lambda: False)
    monkeypatch.setenv("MLPREFS_WATCH", "native")


def test_watchfiles_source_never_applies_a_paused_writer_half_written(home, toml,
                                                                      watchfiles_source):
    with Client(watch=True) as prefs:
        assert type(prefs._watcher._source).__name__ == "NativeEvents"
        never_applied_half_written(prefs, toml)


def test_watchfiles_source_applies_atomic_and_in_place_saves(home, toml, watchfiles_source):
    with Client(watch=True) as prefs:
        for value, save in ((0.02, save_atomic), (0.03, save_in_place), (0.04, save_atomic)):
            save(toml, lr_toml(value))
            assert wait_for(lambda value=value: prefs.get(LR) == value)


def never_applied_half_written(prefs: Client, toml: Path) -> None:
    # The head alone is valid TOML (iterations without their patience): applying it is the bug.
    iters, patience = "ml.training.max_iterations", "ml.training.early_stopping_patience"
    applied: list[tuple[int, int]] = []  # every view swapped in: (iterations, patience)
    prefs.on_change("ml.training.*", lambda cs: applied.append((prefs.get(iters),
                                                                prefs.get(patience))))
    overslept = set()
    for i, pause_ms in enumerate([*range(1, 10)] * 3):
        n = i + 1
        window = save_paused(toml, f"[ml.training]\nmax_iterations = {1000 + n}\n",
                             f"early_stopping_patience = {n}\n", pause_ms / 1000)
        if window >= QUIET_S:  # the machine slept past the quiet period: applying it is right
            overslept.add(1000 + n)
        assert wait_for(lambda n=n: prefs.get(patience) == n)
    half = [(it, p) for it, p in applied if p != it - 1000 and it not in overslept]
    assert half == [], f"applied half-written (iterations, patience): {half}"
    assert len(overslept) < 27, "every pause overslept: nothing was tested"


# -- bad edits ------------------------------------------------------------------------------
def test_broken_toml_is_reported_with_file_and_line_and_the_last_good_view_stays(
        prefs, toml, errors, caplog):
    caplog.set_level(logging.ERROR)
    save_in_place(toml, "[ml.training\nlearning_rate = 0.02\n")
    assert wait_for(lambda: len(errors) == 1)
    err = errors.items[0]
    assert isinstance(err, ConfigFileError)
    assert (err.path, err.line) == (str(toml), 1)
    assert prefs.get(LR) == 0.01
    assert "mlprefs.toml:1" in caplog.text and "last good" in caplog.text
    save_in_place(toml, lr_toml(0.02))
    assert wait_for(lambda: prefs.get(LR) == 0.02)


def test_out_of_range_value_is_reported_with_file_line_key_value_and_rule(
        prefs, toml, errors, caplog):
    caplog.set_level(logging.ERROR)
    save_atomic(toml, lr_toml(5.0))
    assert wait_for(lambda: len(errors) == 1)
    (problem,) = errors.items[0].problems
    assert (problem.key, problem.value, problem.rule) == (LR, 5.0, "max")
    assert (problem.source.path, problem.source.line) == (str(toml), 2)
    message = "ml.training.learning_rate = 5.0 in ./mlprefs.toml:2 is above the maximum 1.0"
    assert message in str(errors.items[0]) and message in caplog.text
    assert prefs.get(LR) == 0.01


def test_unknown_key_is_rejected_with_a_suggestion(prefs, toml, errors):
    save_atomic(toml, "[ml.training]\nlearnin_rate = 0.02\n")
    assert wait_for(lambda: len(errors) == 1)
    (problem,) = errors.items[0].problems
    assert problem.rule == "unknown-key"
    assert "did you mean ml.training.learning_rate" in problem.message
    assert prefs.get(LR) == 0.01


def test_cross_key_violation_is_rejected_and_names_the_rule(prefs, toml, errors):
    save_atomic(toml, "[ml.features]\nadvanced_enabled = true\n")
    assert wait_for(lambda: len(errors) == 1)
    assert isinstance(errors.items[0], ValidationError)
    (problem,) = errors.items[0].problems
    assert (problem.key, problem.rule) == ("ml.features.advanced_enabled", "requires-global")
    assert "requires ml.global.enabled = true" in problem.message
    assert prefs.get(LR) == 0.01 and prefs.get("ml.features.advanced_enabled") is False


def test_a_bad_edit_is_reported_once(prefs, toml, errors):
    save_atomic(toml, lr_toml(5.0))
    assert wait_for(lambda: len(errors) == 1)
    save_atomic(toml, lr_toml(0.02))  # the next good edit applies; no second report
    assert wait_for(lambda: prefs.get(LR) == 0.02)
    assert len(errors) == 1


# -- strange things at a followed path ------------------------------------------------------
def put_fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def put_directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


def put_symlink_loop(path: Path) -> None:
    path.unlink()
    os.symlink(path.name, path)  # mlprefs.toml -> mlprefs.toml


def put_unreadable(path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads a file whatever its mode")
    path.chmod(0)


def put_file_that_fails_to_read(path: Path) -> None:
    """A regular file whose read() fails (EIO), unreadable even for root."""
    if not os.path.exists("/proc/self/mem"):
        pytest.skip("needs Linux /proc")
    path.unlink()
    os.symlink("/proc/self/mem", path)


def clear(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        path.rmdir()
    else:
        path.unlink()


@pytest.mark.parametrize("put", [put_fifo, put_directory, put_symlink_loop, put_unreadable,
                                 put_file_that_fails_to_read])
def test_non_regular_or_unreadable_project_file_is_an_error_and_the_last_good_values_stay(
        prefs, toml, errors, caplog, put):
    caplog.set_level(logging.ERROR)
    put(toml)
    assert wait_for(lambda: len(errors) >= 1), "no error event: the layer was dropped silently"
    err = errors.items[0]
    assert isinstance(err, ConfigFileError) and err.path == str(toml)
    assert "mlprefs.toml" in caplog.text and "last good" in caplog.text
    assert prefs.get(LR) == 0.01
    assert prefs._watcher.alive


@pytest.mark.parametrize("put", [put_fifo, put_directory, put_symlink_loop])
def test_watcher_applies_a_good_file_after_a_non_regular_one(prefs, toml, errors, put):
    put(toml)
    assert wait_for(lambda: len(errors) >= 1)
    clear(toml)
    toml.write_text(lr_toml(0.02))
    assert wait_for(lambda: prefs.get(LR) == 0.02)


def test_fifo_replacing_an_explicit_file_never_blocks_the_watcher(home, tmp_path, backend):
    extra = tmp_path / "extra.toml"
    extra.write_text(lr_toml(0.03))
    with Client(files=[extra], watch=True) as prefs:
        errors = Recorder()
        prefs.on_error(errors)
        put_fifo(extra)
        assert wait_for(lambda: len(errors) >= 1)
        assert errors.items[0].path == str(extra) and "FIFO" in str(errors.items[0])
        assert prefs.get(LR) == 0.03
        # the thread is not stuck: an edit of another layer still applies
        (home / "overrides.toml").write_text("[ml.performance]\nbatch_size = 48\n")
        assert wait_for(lambda: prefs.get("ml.performance.batch_size") == 48)


# -- delivery ---------------------------------------------------------------------------------
def test_one_edit_changing_three_keys_is_one_change_set(prefs, toml, changes):
    save_atomic(toml, "[ml.training]\nlearning_rate = 0.02\nmax_iterations = 50\n"
                      "early_stopping_patience = 9\n")
    assert wait_for(lambda: prefs.get("ml.training.early_stopping_patience") == 9)
    assert wait_for(lambda: len(changes) >= 1)  # callbacks follow the swap
    (changeset,) = changes.items
    assert set(changeset.keys) == {LR, "ml.training.max_iterations",
                                   "ml.training.early_stopping_patience"}
    assert changeset.get("ml.training.max_iterations").old == 1000


def test_glob_subscription_sees_only_its_keys(prefs, toml):
    rec = Recorder()
    prefs.on_change("ml.training.max_*", rec)
    save_atomic(toml, "[ml.training]\nlearning_rate = 0.02\nmax_iterations = 50\n")
    assert wait_for(lambda: len(rec) == 1)
    assert rec.items[0].keys == ("ml.training.max_iterations",)


def test_raising_callback_does_not_stop_the_others_or_the_watcher(prefs, toml, caplog):
    def broken(changes):
        raise RuntimeError("callback bug")

    prefs.on_change("ml.*", broken)
    rec = Recorder()
    prefs.on_change("ml.*", rec)
    save_atomic(toml, lr_toml(0.02))
    assert wait_for(lambda: len(rec) == 1)
    failures = [r for r in caplog.records if r.exc_info and "callback bug" in str(r.exc_info[1])]
    assert failures, "the raising callback is logged with its traceback"
    save_atomic(toml, lr_toml(0.03))
    assert wait_for(lambda: len(rec) == 2)
    assert prefs._watcher.alive


def test_deferred_callbacks_wait_for_apply_pending_on_the_callers_thread(prefs, toml):
    rec = Recorder()
    prefs.on_change(LR, rec, deliver="deferred")
    save_atomic(toml, lr_toml(0.02))
    assert wait_for(lambda: prefs.get(LR) == 0.02)
    assert len(rec) == 0
    assert wait_for(lambda: prefs.apply_pending() == 1)  # queued just after the swap
    assert rec.values(LR) == [0.02]
    assert rec.threads == [threading.current_thread()]


def test_cancelled_subscription_gets_nothing(prefs, toml, changes):
    rec = Recorder()
    prefs.on_change("ml.*", rec).cancel()
    save_atomic(toml, lr_toml(0.02))
    assert wait_for(lambda: len(changes) == 1)
    assert len(rec) == 0


# -- every file behind a layer ---------------------------------------------------------------
def test_user_overrides_file_created_after_watch_is_applied(prefs, home):
    (home / "overrides.toml").write_text("[ml.performance]\nbatch_size = 64\n")
    assert wait_for(lambda: prefs.get("ml.performance.batch_size") == 64)
    assert prefs.explain("ml.performance.batch_size").source.layer == "user-file"


def test_policy_lock_created_after_watch_wins(prefs, policy_file):
    policy_file.write_text("[locked.ml.training]\nlearning_rate = 0.5\n")
    assert wait_for(lambda: prefs.get(LR) == 0.5)
    assert prefs.explain(LR).locked


def test_extra_file_in_a_directory_created_later_is_applied(home, tmp_path, backend):
    extra = tmp_path / "later" / "deeper" / "extra.toml"
    with Client(files=[extra], watch=True) as prefs:
        extra.parent.mkdir(parents=True)
        save_atomic(extra, lr_toml(0.07))
        assert wait_for(lambda: prefs.get(LR) == 0.07)
        assert prefs.explain(LR).source.layer == "file"


def test_project_file_created_after_watch_is_discovered(home, project_dir, backend):
    with Client(watch=True) as prefs:
        assert prefs.project_file is None
        (project_dir / "mlprefs.toml").write_text(lr_toml(0.02))
        assert wait_for(lambda: prefs.get(LR) == 0.02)
        assert prefs.project_file[0] == str(project_dir / "mlprefs.toml")


def test_pyproject_tool_section_is_followed(home, project_dir, backend):
    pyproject = project_dir / "pyproject.toml"
    pyproject.write_text("[project]\nname = 'demo'\n")
    with Client(watch=True) as prefs:
        save_atomic(pyproject, "[project]\nname = 'demo'\n\n[tool.mlprefs.ml.training]\n"
                               "learning_rate = 0.03\n")
        assert wait_for(lambda: prefs.get(LR) == 0.03)


def test_project_file_in_a_parent_directory_is_followed(home, project_dir, backend):
    (project_dir / "mlprefs.toml").write_text(lr_toml(0.02))
    sub = project_dir / "src" / "pkg"
    sub.mkdir(parents=True)
    os.chdir(sub)
    with Client(watch=True) as prefs:
        assert prefs.get(LR) == 0.02
        save_atomic(project_dir / "mlprefs.toml", lr_toml(0.03))
        assert wait_for(lambda: prefs.get(LR) == 0.03)
        (sub / "mlprefs.toml").write_text(lr_toml(0.04))  # nearer: it becomes the project file
        assert wait_for(lambda: prefs.get(LR) == 0.04)


def test_watcher_follows_every_watched_path(prefs):
    assert set(prefs.watched_paths()) <= set(prefs._watcher.paths)


# -- lifecycle ----------------------------------------------------------------------------------
def test_close_ends_the_watcher_thread(home, backend):
    prefs = Client(watch=True)
    watcher = prefs._watcher
    prefs.close()
    assert not watcher.alive
    assert "mlprefs-watcher" not in {t.name for t in threading.enumerate()}


def test_twenty_open_close_cycles_leak_no_threads_or_descriptors(home, backend):
    Client(watch=True).close()  # warm up imports and lazily created objects
    threads, tasks, fds = (threading.active_count(), len(os.listdir("/proc/self/task")),
                           len(os.listdir("/proc/self/fd")))
    for _ in range(20):
        Client(watch=True).close()
    assert threading.active_count() <= threads
    # watchfiles' own Rust thread closes its inotify descriptor as it ends, just after close()
    assert wait_for(lambda: len(os.listdir("/proc/self/task")) <= tasks, timeout=5)
    assert wait_for(lambda: len(os.listdir("/proc/self/fd")) <= fds, timeout=5), open_files()


def open_files() -> list[str]:
    return [os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
            if os.path.exists(f"/proc/self/fd/{fd}") or os.path.islink(f"/proc/self/fd/{fd}")]


def watcher_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "mlprefs-watcher"]


def test_twenty_dropped_clients_leave_no_watcher_thread(home, toml, backend):
    before = len(watcher_threads())
    for _ in range(20):  # a notebook cell re-run 20 times, never calling close()
        prefs = Client(watch=True)
        assert prefs.get(LR) == 0.01
    del prefs
    gc.collect()
    assert wait_for(lambda: len(watcher_threads()) <= before), watcher_threads()


class ReadsBack:
    """A callback holding its client: client -> subscribers -> callback -> client."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def __call__(self, changes) -> None:
        self.client.get(LR)


def test_a_dropped_client_its_own_callback_references_still_stops(home, toml, backend):
    prefs = Client(watch=True)
    prefs.on_change("ml.*", ReadsBack(prefs))
    del prefs
    gc.collect()
    assert wait_for(lambda: not watcher_threads()), watcher_threads()


def test_watch_twice_keeps_one_watcher(prefs):
    first = prefs._watcher
    prefs.watch()
    assert prefs._watcher is first


def test_unknown_backend_is_refused(home, monkeypatch):
    monkeypatch.setenv("MLPREFS_WATCH", "inotify")
    with Client() as prefs, pytest.raises(ValueError, match="MLPREFS_WATCH"):
        prefs.watch()


def test_network_filesystems_use_the_stat_loop():
    mounts = ("/dev/vda / ext4 rw 0 0\n"
              "server:/export /mnt/share\\040data nfs4 rw 0 0\n")
    assert remote_filesystem(["/mnt/share data/proj"], mounts) == ("/mnt/share data/proj", "nfs4")
    assert remote_filesystem(["/home/me/proj"], mounts) is None
