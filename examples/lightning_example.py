"""Live preferences in a PyTorch Lightning run: python examples/lightning_example.py

Edit learning_rate or early_stopping_patience in ./mlprefs.toml while it runs: the change
reaches the optimizer at the next step (the Client watches the file).
"""

import logging
from pathlib import Path

import lightning.pytorch as pl
import torch

from mlprefs_sdk import Client
from mlprefs_sdk.integrations.lightning import MlprefsCallback


class Regression(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(8, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.net(x), y))

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters())  # lr and weight_decay come from the preferences


def loader(seed: int) -> torch.utils.data.DataLoader:
    x = torch.randn(256, 8, generator=torch.Generator().manual_seed(seed))
    y = x @ torch.linspace(-1, 1, 8).unsqueeze(1) + 0.1 * torch.randn(256, 1)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    prefs_file = Path("mlprefs.toml")
    if not prefs_file.exists():  # the Client reads the file it finds at start
        prefs_file.write_text("[ml.training]\nlearning_rate = 0.01\nearly_stopping_patience = 5\n")
    print(f"edit {prefs_file.resolve()} while this runs")
    with Client(watch=True) as prefs:
        callback = MlprefsCallback(prefs)
        trainer = pl.Trainer(max_epochs=200, callbacks=[callback], logger=False,
                             enable_checkpointing=False, enable_progress_bar=False)
        trainer.fit(Regression(), loader(0), loader(1))
        print(f"stopped after {trainer.current_epoch} epochs: {callback.stop_reason}")


if __name__ == "__main__":
    main()
