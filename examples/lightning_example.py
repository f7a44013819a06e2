"""Live preferences in a PyTorch Lightning run: python examples/lightning_example.py [--manual | --fast]

Edit learning_rate or early_stopping_patience in ./mlprefs.toml while it runs: the change
reaches the optimizer at the next step (the Client watches the file). --manual paces it at
one epoch a second.
"""

import lightning.pytorch as pl
import torch
from _example import client, options, prefs_file

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


def loader(n: int, seed: int) -> torch.utils.data.DataLoader:
    x = torch.randn(n, 8, generator=torch.Generator().manual_seed(seed))
    y = x @ torch.linspace(-1, 1, 8).unsqueeze(1) + 0.1 * torch.randn(n, 1)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)


def main() -> None:
    args = options(__doc__)
    prefs_file(args, learning_rate=0.01)
    n = 64 if args.fast else 256
    with client(args) as prefs:
        callback = MlprefsCallback(prefs)
        trainer = pl.Trainer(max_epochs=10_000, callbacks=[callback], logger=False,
                             enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, log_every_n_steps=1)
        trainer.fit(Regression(), loader(n, 0), loader(n // 4, 1))  # Ctrl-C: Lightning stops cleanly


if __name__ == "__main__":
    main()
