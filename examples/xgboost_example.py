"""Live preferences in XGBoost: python examples/xgboost_example.py

Each boosting round is a step and an iteration: an edit of learning_rate in ./mlprefs.toml
lands before the next round; early stopping watches val-rmse (the default val_loss falls back
to the last metric of the last eval set).
"""

import logging
from pathlib import Path

import numpy as np
import xgboost as xgb

from mlprefs_sdk import Client
from mlprefs_sdk.integrations.xgboost import MlprefsCallback


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    prefs_file = Path("mlprefs.toml")
    if not prefs_file.exists():
        prefs_file.write_text("[ml.training]\nlearning_rate = 0.1\nearly_stopping_patience = 10\n"
                              "restore_best_weights = true\n")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 8))
    y = np.sin(X[:, 0]) + X[:, 1] * X[:, 2] + 0.1 * rng.normal(size=2000)
    train, val = xgb.DMatrix(X[:1500], label=y[:1500]), xgb.DMatrix(X[1500:], label=y[1500:])
    with Client(watch=True) as prefs:
        callback = MlprefsCallback(prefs)
        booster = xgb.train({"max_depth": 4}, train, num_boost_round=5000,
                            evals=[(train, "train"), (val, "val")], verbose_eval=False,
                            callbacks=[callback])
        print(f"{booster.num_boosted_rounds()} rounds kept (best {booster.attr('best_iteration')}); "
              f"stopped: {callback.stop_reason}")


if __name__ == "__main__":
    main()
