"""Live preferences in a Keras 3 run: python examples/keras_example.py [--manual | --fast]

Edit learning_rate or regularization_l2 in ./mlprefs.toml while it runs: the optimizer takes
the new value at the next batch. Any Keras backend works; torch is the one tested, and the
default here when KERAS_BACKEND is not set.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _example import client, options, prefs_file  # noqa: E402

from mlprefs_sdk.integrations.keras import MlprefsCallback  # noqa: E402


def main() -> None:
    args = options(__doc__)
    prefs_file(args, learning_rate=0.01)
    n = 256 if args.fast else 1024
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 8)).astype("float32")
    y = x @ np.linspace(-1, 1, 8, dtype="float32")[:, None] + 0.1 * rng.normal(size=(n, 1)).astype("float32")
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.AdamW(), loss="mse")  # a float lr: settable live
    with client(args) as prefs:
        callback = MlprefsCallback(prefs)
        try:
            model.fit(x, y, validation_split=0.25, epochs=10_000, batch_size=64, verbose=0,
                      callbacks=[callback])
        except KeyboardInterrupt:
            print("interrupted")


if __name__ == "__main__":
    main()
