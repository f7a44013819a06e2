"""Live preferences in a Hugging Face Trainer run: python examples/transformers_example.py [--manual | --fast]

A tiny BERT is built from a config (nothing is downloaded). Edit learning_rate in
./mlprefs.toml while it runs: the Trainer's linear schedule is rescaled at the next step.
Each evaluation (one per epoch here) is an early-stopping check and prints a line.
"""

import tempfile

import torch
import transformers
from _example import client, options, prefs_file

from mlprefs_sdk.integrations.transformers import MlprefsCallback


def dataset(n: int, seed: int) -> list[dict]:
    ids = torch.randint(0, 64, (n, 16), generator=torch.Generator().manual_seed(seed))
    return [{"input_ids": row, "labels": int(row.float().mean() > 31.5)} for row in ids]


def main() -> None:
    args = options(__doc__)
    prefs_file(args, learning_rate=0.001)
    n = 64 if args.fast else 512
    config = transformers.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64,
                                     max_position_embeddings=16, num_labels=2)
    model = transformers.BertForSequenceClassification(config)
    with client(args) as prefs, tempfile.TemporaryDirectory() as out:
        callback = MlprefsCallback(prefs)
        targs = transformers.TrainingArguments(
            output_dir=out, num_train_epochs=10_000, per_device_train_batch_size=32,
            eval_strategy="epoch", save_strategy="no", report_to=[], use_cpu=True,
            disable_tqdm=True, log_level="warning", logging_strategy="no", weight_decay=0.01)
        trainer = transformers.Trainer(model=model, args=targs, train_dataset=dataset(n, 0),
                                       eval_dataset=dataset(n // 4, 1), callbacks=[callback])
        trainer.remove_callback(transformers.PrinterCallback)  # the epoch line says it all
        try:
            trainer.train()
        except KeyboardInterrupt:
            print("interrupted")


if __name__ == "__main__":
    main()
