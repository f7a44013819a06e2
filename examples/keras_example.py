"""Live preferences in a Keras 3 run: python examples/keras_example.py

Edit learning_rate or regularization_l2 in ./mlprefs.toml while it runs: the optimizer takes
the new value at the next batch. Any Keras backend works; torch is the one tested, and the
default here when KERAS_BACKEND is not set.
"""

import logging
from pathlib import Path
import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported

import keras  # noqa: E402
import numpy as np  # noqa: E402

from mlprefs_sdk import Client  # noqa: E402
from mlprefs_sdk.integrations.keras import MlprefsCallback  # noqa: E402


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    prefs_file = Path("mlprefs.toml")
    if not prefs_file.exists():  # the Client reads the file it finds at start
        prefs_file.write_text("[ml.training]\nlearning_rate = 0.01\nearly_stopping_patience = 5\n")
    print(f"edit {prefs_file.resolve()} while this runs")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1024, 8)).astype("float32")
    y = x @ np.linspace(-1, 1, 8, dtype="float32")[:, None] + 0.1 * rng.normal(size=(1024, 1)).astype("float32")
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.AdamW(), loss="mse")  # a float lr: settable live
    with Client(watch=True) as prefs:
        callback = MlprefsCallback(prefs)
        history = model.fit(x, y, validation_split=0.25, epochs=500, batch_size=64, verbose=0,
                            callbacks=[callback])
        print(f"stopped after {len(history.history['loss'])} epochs: {callback.stop_reason}")


if __name__ == "__main__":
    main()
