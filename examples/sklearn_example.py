"""Live preferences with scikit-learn's partial_fit: python examples/sklearn_example.py [--manual | --fast]

fit_incremental makes one pass over the data per iteration, and prints a line per pass; edit
learning_rate (eta0 here) or early_stopping_patience in ./mlprefs.toml while it runs.
"""

import numpy as np
from _example import client, options, prefs_file
from sklearn.linear_model import SGDRegressor

from mlprefs_sdk.integrations.sklearn import fit_incremental


def main() -> None:
    args = options(__doc__)
    prefs_file(args, learning_rate=0.01)
    n = 400 if args.fast else 2000
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 8))
    y = X @ np.linspace(-1, 1, 8) + 0.1 * rng.normal(size=n)
    cut = n * 3 // 4
    with client(args) as prefs:
        model = SGDRegressor(learning_rate="constant")   # eta0 comes from the preferences
        try:
            model = fit_incremental(model, X[:cut], y[:cut], prefs, X_val=X[cut:], y_val=y[cut:])
        except KeyboardInterrupt:
            print("interrupted")
            return
        run = model.mlprefs_run_  # the run: id, iterations, stop reason
        print(f"fitted: coef {np.round(model.coef_, 2)}; {run.iteration} passes, stopped: {run.stop_reason}")


if __name__ == "__main__":
    main()
