"""Live preferences in XGBoost: python examples/xgboost_example.py [--manual | --fast]

Each boosting round is a step and an iteration, and prints a line: an edit of learning_rate
in ./mlprefs.toml lands before the next round; early stopping watches val-rmse (the default
val_loss falls back to the last metric of the last eval set).
"""

import numpy as np
import xgboost as xgb
from _example import client, options, prefs_file

from mlprefs_sdk.integrations.xgboost import MlprefsCallback


def main() -> None:
    args = options(__doc__)
    prefs_file(args, learning_rate=0.1, patience=10)
    n = 400 if args.fast else 2000
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 8))
    y = np.sin(X[:, 0]) + X[:, 1] * X[:, 2] + 0.1 * rng.normal(size=n)
    cut = n * 3 // 4
    train, val = xgb.DMatrix(X[:cut], label=y[:cut]), xgb.DMatrix(X[cut:], label=y[cut:])
    with client(args) as prefs:
        callback = MlprefsCallback(prefs)
        try:
            booster = xgb.train({"max_depth": 4}, train, num_boost_round=5000,
                                evals=[(train, "train"), (val, "val")], verbose_eval=False,
                                callbacks=[callback])
            print(f"{booster.num_boosted_rounds()} rounds kept")
        except KeyboardInterrupt:
            print("interrupted")


if __name__ == "__main__":
    main()
