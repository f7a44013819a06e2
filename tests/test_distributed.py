"""Rank-consistent changes (issue 7): real gloo process groups on the CPU, 2 and 4 ranks.

Each world size runs once (a module fixture: spawning ranks costs seconds) and the tests below
read what every rank reported and recorded in the shared store. The run: a DDP model, 6 steps
per epoch, ranks check for a change every 4 steps; after step 8 rank 0 edits mlprefs.toml
(learning rate and patience) and waits until its own watcher has seen it; rank 1 edits a file
of its own; rank 0's val_loss stops improving while the other ranks' keeps improving.
"""

from __future__ import annotations

import datetime
import gc
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
dist = torch.distributed
if not dist.is_available():  # pragma: no cover - torch built without distributed
    pytest.skip("torch.distributed is not available in this torch build", allow_module_level=True)

from mlprefs_sdk import Client, MlprefsError  # noqa: E402
from mlprefs_sdk.distributed import decode_changes, encode_changes  # noqa: E402
from mlprefs_sdk.runs import run_changes  # noqa: E402
from mlprefs_sdk.values import Change, ChangeSet, Source  # noqa: E402

LR = "ml.training.learning_rate"
L2 = "ml.training.regularization_l2"
PATIENCE = "ml.training.early_stopping_patience"
L1 = "ml.training.regularization_l1"
SHARING = "ml.data.sharing_allowed"
SYNC_EVERY = 4
STEPS_PER_EPOCH = 6
EDIT_AFTER = 8  # rank 0 edits once 8 steps are done: the ranks apply it at step 12
RANK1_EDIT_AFTER = 5
EPOCHS = 12
TIMEOUT = datetime.timedelta(seconds=60)  # a hung collective fails the test instead of blocking it


def project_file(lr: float, patience: int) -> str:
    return (f"[ml.training]\nlearning_rate = {lr}\nearly_stopping_patience = {patience}\n"
            f"distributed_sync_steps = {SYNC_EVERY}\n")


def wait_until(condition, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout}s for {what}")
        time.sleep(0.01)


def lock_on_this_host(policy: str) -> None:
    """A policy file that only this rank reads (as if its machine had its own)."""
    path = Path(os.environ["MLPREFS_POLICY"]).with_name(f"policy-{os.getpid()}.toml")
    path.write_text(policy)
    os.environ["MLPREFS_POLICY"] = str(path)


def val_loss(rank: int, epoch: int) -> float:
    """Rank 0's stops improving after epoch 1; the others' would improve for ever."""
    return 1.0 / (epoch + 1) if rank else max(0.5, 1.0 / (epoch + 1))


def train_rank(rank: int, world: int, rendezvous: str, out: str) -> None:
    """One rank of the run (spawned): a plain torch.distributed loop with the driver."""
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank,
                            world_size=world, timeout=TIMEOUT)
    try:
        report = train_and_report(rank)
        gc.collect()  # the DDP model's reducer must go before its process group
    finally:
        dist.destroy_process_group()
    Path(out, f"rank{rank}.json").write_text(json.dumps(report))


def train_and_report(rank: int) -> dict:
    """The rank's training run: what it saw, applied and recorded."""
    own_file = Path(f"rank{rank}.toml")
    if rank == 0:  # rank 2's policy forbids this combination
        own_file.write_text('[ml.data]\nprivacy_mode = "moderate"\nsharing_allowed = true\n')
    if rank == 1:  # a value of rank 1's own, set before the run starts, and a lock of its own
        own_file.write_text("[ml.training]\nregularization_l2 = 0.5\n")
        lock_on_this_host("[locked]\nml.training.regularization_l1 = 0.2\n")
    if rank == 2:
        lock_on_this_host('[locked]\nml.data.privacy_mode = "strict"\n')
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.9, weight_decay=0.2)
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(rank))
    report: dict = {"lrs": [], "hooks_lr_before_sync": None}
    with Client(files=[own_file], watch=rank == 0) as prefs:
        errors: list[str] = []
        prefs.on_error(lambda e: errors.append(str(e)))
        hooks = prefs.training_hooks(optimizer=opt, distributed="auto")
        hooks.on_train_start()
        report["start_l2"] = opt.param_groups[0]["weight_decay"]
        report["l1"] = {"hooks": hooks.get(L1), "client": prefs.get(L1)}
        report["sharing"] = {"hooks": hooks.get(SHARING), "client": prefs.get(SHARING),
                             "errors": errors, "reload": "ok"}
        try:
            prefs.reload()  # this rank's own sources are still fine on their own
        except MlprefsError as e:
            report["sharing"]["reload"] = str(e)
        for epoch in range(EPOCHS):
            for step in range(STEPS_PER_EPOCH):
                opt.zero_grad()
                model(x).pow(2).mean().backward()
                opt.step()
                if rank == 0 and hooks.steps == EDIT_AFTER:
                    Path("mlprefs.toml").write_text(project_file(lr=0.05, patience=2))
                    wait_until(lambda: prefs.get(LR) == 0.05, "rank 0's watcher")
                    report["hooks_lr_before_sync"] = hooks.get(LR)
                if rank == 1 and hooks.steps == RANK1_EDIT_AFTER:
                    own_file.write_text("[ml.training]\nlearning_rate = 0.3\n")
                    prefs.reload()
                    report["rank1_after_own_edit"] = [prefs.get(LR), str(prefs.explain(LR).source)]
                hooks.on_step_end(step)
                report["lrs"].append(opt.param_groups[0]["lr"])
            hooks.on_epoch_end(epoch, {"val_loss": torch.tensor(val_loss(rank, epoch))})
            if hooks.should_stop:
                report["stop_epoch"] = epoch
                break
        hooks.on_train_end()
        report["stop_reason"] = hooks.stop_reason
        report["run_id"] = hooks.run_id
        report["client_lr_after_run"] = prefs.get(LR)
        report["changes"] = [[c.step, c.key, c.new, c.source]
                             for c in run_changes(prefs.store, hooks.run_id)]
    return report


@pytest.fixture(scope="module", params=[2, 4], ids=["2-ranks", "4-ranks"])
def ranks(request, tmp_path_factory) -> list[dict]:
    """Runs the ranks once per world size in a private home; returns each rank's report."""
    import torch.multiprocessing as mp

    world = request.param
    root = tmp_path_factory.mktemp(f"ranks{world}")
    (root / "home").mkdir()
    (root / "project").mkdir()
    with pytest.MonkeyPatch.context() as mpatch:  # the `home` fixture's isolation, per module
        for name in list(os.environ):
            if name.upper().startswith("MLPREFS"):
                mpatch.delenv(name)
        mpatch.setenv("MLPREFS_HOME", str(root / "home"))
        mpatch.setenv("MLPREFS_POLICY", str(root / "policy.toml"))
        mpatch.chdir(root / "project")
        Path("mlprefs.toml").write_text(project_file(lr=0.1, patience=50))
        Client().close()  # the store exists before the ranks open it
        mp.start_processes(train_rank, args=(world, str(root / "rendezvous"), str(root)),
                           nprocs=world, start_method="spawn")
    return [json.loads((root / f"rank{r}.json").read_text()) for r in range(world)]


def test_every_rank_records_the_edit_at_the_same_global_step(ranks):
    first_sync_after_edit = 12
    for report in ranks:
        steps = {(step, key, new) for step, key, new, _ in report["changes"]}
        assert steps == {(first_sync_after_edit, LR, 0.05), (first_sync_after_edit, PATIENCE, 2)}


def test_every_rank_trains_with_the_same_learning_rate_at_every_step(ranks):
    expected = [0.1] * 11 + [0.05] * (len(ranks[0]["lrs"]) - 11)  # step 12 is the 12th entry
    for report in ranks:
        assert report["lrs"] == pytest.approx(expected)


def test_rank_0_does_not_apply_its_own_edit_before_the_sync_step(ranks):
    assert ranks[0]["hooks_lr_before_sync"] == 0.1


def test_every_rank_stops_at_the_same_epoch_on_rank_0s_decision(ranks):
    # patience 2 from step 12 (end of epoch 1): rank 0's epochs 2 and 3 do not improve
    assert {r["stop_epoch"] for r in ranks} == {3}
    assert all(r["stop_reason"].startswith("early stopping: val_loss") for r in ranks)


def test_every_rank_starts_from_rank_0s_values(ranks):
    assert {r["start_l2"] for r in ranks} == {0.01}  # rank 1's own file said 0.5


def test_a_rank_other_than_0_never_applies_its_own_edit(ranks):
    lr, source = ranks[1]["rank1_after_own_edit"]
    assert lr == 0.1
    assert source.startswith("runtime (rank 0: ") and "mlprefs.toml" in source


def test_every_rank_records_rank_0s_source_of_the_change(ranks):
    sources = {source for report in ranks for _, _, _, source in report["changes"]}
    assert sources == {"./mlprefs.toml:2", "./mlprefs.toml:3"}  # learning_rate, patience


def test_a_key_locked_differently_on_another_host_follows_rank_0_in_the_hooks(ranks):
    assert ranks[1]["l1"] == {"hooks": 0.01, "client": 0.2}  # the client keeps its host's lock


def test_a_rank_whose_rules_reject_rank_0s_values_still_trains_with_them(ranks):
    if len(ranks) < 3:
        pytest.skip("rank 2 (strict privacy locked on its host) runs in the 4-rank run")
    sharing = ranks[2]["sharing"]
    assert (sharing["hooks"], sharing["client"]) == (True, False)
    assert any("ml.data.sharing_allowed" in e for e in sharing["errors"])
    assert sharing["reload"] == "ok"


def test_after_the_run_a_rank_other_than_0_gets_its_own_values_back(ranks):
    assert ranks[1]["client_lr_after_run"] == 0.3  # its own file again
    assert ranks[0]["client_lr_after_run"] == 0.05


def test_each_rank_keeps_its_own_run_under_rank_0s_run_id(ranks):
    base = ranks[0]["run_id"]
    assert [r["run_id"] for r in ranks] == [base] + [f"{base}.rank{k}" for k in range(1, len(ranks))]


# -- without a process group ------------------------------------------------------------
def test_auto_without_a_process_group_runs_alone(home):
    with Client() as prefs:
        hooks = prefs.training_hooks(distributed="auto")
        hooks.on_train_start()
        hooks.on_step_end(0)
    assert hooks._ranks is None


def test_distributed_true_without_a_process_group_says_what_is_missing(home):
    with Client() as prefs, pytest.raises(MlprefsError, match="init_process_group"):
        prefs.training_hooks(distributed=True)


def test_an_unknown_distributed_mode_is_refused(home):
    with Client() as prefs, pytest.raises(ValueError, match="'auto', True, False"):
        prefs.training_hooks(distributed="always")


def test_change_sets_cross_the_wire_as_json_and_come_back_equal():
    sets = [ChangeSet((Change(LR, 0.1, 0.05, Source("project-file", "/p/mlprefs.toml", 2)),
                       Change("team.flag", None, True, Source("env", detail="MLPREFS__TEAM__FLAG"))))]
    wire = json.dumps(encode_changes(sets))
    assert decode_changes(json.loads(wire)) == sets


def test_importing_the_sdk_and_the_driver_never_imports_torch(home):
    code = textwrap.dedent("""
        import sys
        import mlprefs_sdk, mlprefs_sdk.training, mlprefs_sdk.distributed
        with mlprefs_sdk.Client() as prefs:
            prefs.training_hooks(distributed="auto").on_train_start()
        assert "torch" not in sys.modules, "torch was imported"
    """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# -- Lightning: strategy="ddp", devices=2 on the CPU ------------------------------------------
LIGHTNING_RUN = """
import json, os, sys
from pathlib import Path

import lightning.pytorch as pl
import torch

from mlprefs_sdk import Client
from mlprefs_sdk.integrations.lightning import MlprefsCallback
from mlprefs_sdk.runs import run_changes


class Regression(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(4, 1)
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(16, 4, generator=gen)
        self.y = self.x.sum(dim=1, keepdim=True)

    def train_dataloader(self):
        data = torch.utils.data.TensorDataset(self.x, self.y)
        return torch.utils.data.DataLoader(data, batch_size=2)

    def training_step(self, batch, batch_idx):
        x, y = batch
        # rank 0's val_loss stops improving after epoch 1; rank 1's keeps improving
        epoch = self.current_epoch
        val = 1.0 / (epoch + 1) if self.global_rank else max(0.5, 1.0 / (epoch + 1))
        self.log("val_loss", val, on_step=False, on_epoch=True)
        return torch.nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.9)


class Probe(pl.Callback):
    def __init__(self, prefs):
        self.prefs, self.lrs = prefs, []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.lrs.append(optimizer.param_groups[0]["lr"])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_rank == 0 and trainer.global_step == 5:
            Path("mlprefs.toml").write_text(
                "[ml.training]\\nlearning_rate = 0.02\\nearly_stopping_patience = 2\\n"
                "distributed_sync_steps = 4\\nearly_stopping_metric = 'val_loss'\\n")
            self.prefs.reload()


with Client() as prefs:
    probe, mlprefs = Probe(prefs), MlprefsCallback(prefs)
    trainer = pl.Trainer(strategy="ddp", devices=2, accelerator="cpu", max_epochs=20,
                         limit_val_batches=0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[probe, mlprefs])
    trainer.fit(Regression())
    report = {"lrs": probe.lrs, "epoch": trainer.current_epoch, "reason": mlprefs.stop_reason,
              "changes": [[c.step, c.key, c.new] for c in run_changes(prefs.store, mlprefs.hooks.run_id)]}
Path(sys.argv[1], f"lightning{trainer.global_rank}.json").write_text(json.dumps(report))
"""


def test_lightning_ddp_ranks_apply_the_edit_at_the_same_step_and_stop_together(project_dir, tmp_path):
    pytest.importorskip("lightning.pytorch")
    (project_dir / "mlprefs.toml").write_text(
        "[ml.training]\nlearning_rate = 0.1\nearly_stopping_patience = 50\n"
        "distributed_sync_steps = 4\n")
    script = tmp_path / "lightning_ddp.py"
    script.write_text(LIGHTNING_RUN)
    run = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    reports = [json.loads((tmp_path / f"lightning{r}.json").read_text()) for r in (0, 1)]
    # 8 samples per rank, batch 2: 4 steps per epoch; edited after step 5, applied at step 8
    for report in reports:
        assert report["changes"] == [[8, LR, 0.02], [8, PATIENCE, 2]]
        assert report["lrs"][:8] == pytest.approx([0.1] * 8)
        assert len(report["lrs"]) > 8 and report["lrs"][8:] == pytest.approx([0.02] * (len(report["lrs"]) - 8))
        assert report["reason"].startswith("early stopping")
    assert reports[0]["epoch"] == reports[1]["epoch"]


# -- Hugging Face Trainer under torchrun -------------------------------------------------------
TRANSFORMERS_RUN = """
import json, os, sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
import torch, transformers

from mlprefs_sdk import Client
from mlprefs_sdk.integrations.transformers import MlprefsCallback
from mlprefs_sdk.runs import run_changes

config = transformers.BertConfig(vocab_size=32, hidden_size=8, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=16,
                                 max_position_embeddings=16, num_labels=2)
torch.manual_seed(0)
model = transformers.BertForSequenceClassification(config)
ids = torch.randint(0, 32, (64, 8), generator=torch.Generator().manual_seed(0))
data = [{"input_ids": row, "labels": int(row[0] > 16)} for row in ids]


class Probe(transformers.TrainerCallback):
    def __init__(self, prefs):
        self.prefs, self.lrs = prefs, []

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        self.lrs.append(optimizer.param_groups[0]["lr"])

    def on_step_end(self, args, state, control, **kwargs):
        if args.process_index == 0 and state.global_step == 3:
            Path("mlprefs.toml").write_text(
                "[ml.training]\\nlearning_rate = 0.002\\ndistributed_sync_steps = 2\\n")
            self.prefs.reload()


with Client() as prefs:
    probe, mlprefs = Probe(prefs), MlprefsCallback(prefs)
    args = transformers.TrainingArguments(
        output_dir=sys.argv[1] + "/out", per_device_train_batch_size=4, num_train_epochs=2,
        lr_scheduler_type="constant", eval_strategy="no", logging_strategy="no",
        save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True, learning_rate=0.5)
    transformers.Trainer(model=model, args=args, train_dataset=data, callbacks=[probe, mlprefs]).train()
    report = {"world": args.world_size, "lrs": probe.lrs, "run_id": mlprefs.run_id,
              "changes": [[c.step, c.key, c.new] for c in run_changes(prefs.store, mlprefs.run_id)]}
Path(sys.argv[1], f"hf{args.process_index}.json").write_text(json.dumps(report))
"""


def test_transformers_trainer_under_torchrun_applies_the_edit_at_the_same_step(project_dir, tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    (project_dir / "mlprefs.toml").write_text(
        "[ml.training]\nlearning_rate = 0.01\ndistributed_sync_steps = 2\n")
    script = tmp_path / "hf_torchrun.py"
    script.write_text(TRANSFORMERS_RUN)
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc_per_node", "2", str(script), str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    reports = [json.loads((tmp_path / f"hf{r}.json").read_text()) for r in (0, 1)]
    # 32 samples per rank, batch 4: 8 steps per epoch; edited after step 3, applied at step 4
    for report in reports:
        assert report["world"] == 2
        assert report["changes"] == [[4, LR, 0.002]]
        assert report["lrs"] == pytest.approx([0.01] * 4 + [0.002] * 12)
    assert reports[1]["run_id"] == reports[0]["run_id"] + ".rank1"
