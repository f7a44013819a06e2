"""Live preferences with scikit-learn's partial_fit: python examples/sklearn_example.py

fit_incremental makes one pass over the data per iteration; edit learning_rate (eta0 here)
or early_stopping_patience in ./mlprefs.toml while it runs.
"""

import logging
from pathlib import Path

import numpy as np
from sklearn.linear_model import SGDRegressor

from mlprefs_sdk import Client
from mlprefs_sdk.integrations.sklearn import fit_incremental


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    prefs_file = Path("mlprefs.toml")
    if not prefs_file.exists():
        prefs_file.write_text("[ml.training]\nlearning_rate = 0.01\nearly_stopping_patience = 5\n")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 8))
    y = X @ np.linspace(-1, 1, 8) + 0.1 * rng.normal(size=2000)
    with Client(watch=True) as prefs:
        model = SGDRegressor(learning_rate="constant")   # eta0 comes from the preferences
        model = fit_incremental(model, X[:1500], y[:1500], prefs, X_val=X[1500:], y_val=y[1500:])
        hooks = model.mlprefs_run_  # the run: id, iterations, stop reason
        print(f"{hooks.iteration} passes, stopped: {hooks.stop_reason}")
        print("val_loss by pass:", [round(v, 4) for _, v in prefs.curves.get(hooks.run_id)["val_loss"]])


if __name__ == "__main__":
    main()
