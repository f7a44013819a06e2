"""Live preferences in a Hugging Face Trainer run: python examples/transformers_example.py

A tiny BERT is built from a config (nothing is downloaded). Edit learning_rate in
./mlprefs.toml while it runs: the Trainer's linear schedule is rescaled at the next step.
"""

import logging
from pathlib import Path
import tempfile

import torch
import transformers

from mlprefs_sdk import Client
from mlprefs_sdk.integrations.transformers import MlprefsCallback


def dataset(n: int, seed: int) -> list[dict]:
    ids = torch.randint(0, 64, (n, 16), generator=torch.Generator().manual_seed(seed))
    return [{"input_ids": row, "labels": int(row.float().mean() > 31.5)} for row in ids]


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    prefs_file = Path("mlprefs.toml")
    if not prefs_file.exists():  # the Client reads the file it finds at start
        prefs_file.write_text("[ml.training]\nlearning_rate = 0.001\nearly_stopping_patience = 5\n")
    print(f"edit {prefs_file.resolve()} while this runs")
    config = transformers.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64,
                                     max_position_embeddings=16, num_labels=2)
    model = transformers.BertForSequenceClassification(config)
    with Client(watch=True) as prefs, tempfile.TemporaryDirectory() as out:
        callback = MlprefsCallback(prefs)
        args = transformers.TrainingArguments(
            output_dir=out, num_train_epochs=100, per_device_train_batch_size=32,
            eval_strategy="steps", eval_steps=20, save_strategy="no", report_to=[],
            use_cpu=True, disable_tqdm=True, weight_decay=0.01)
        trainer = transformers.Trainer(model=model, args=args, train_dataset=dataset(512, 0),
                                       eval_dataset=dataset(128, 1), callbacks=[callback])
        trainer.train()
        print(f"stopped at step {trainer.state.global_step}: {callback.stop_reason}")


if __name__ == "__main__":
    main()
