"""Help texts and examples for verb modules that do not carry their own (yet).

A verb module normally sets `help=` on each argument and an `EXAMPLES` dict; build_parser()
fills in from here only what a module left out ("verb sub-verb dest" -> help text), so a
module that adds its own wins.
"""

from __future__ import annotations

__all__ = ["ARGUMENT_HELP", "EXAMPLES"]

_SUBJECT = "the data subject's id (stored only as a keyed pseudonym)"
_EXPERIMENT = "the experiment's name"

ARGUMENT_HELP: dict[str, str] = {
    **{f"data {verb} subject": _SUBJECT
       for verb in ("consent", "revoke", "opt-out", "status", "erase", "export")},
    "data audit limit": "at most this many entries (default 100)",
    "experiments create name": "a new experiment's name",
    "experiments create metric": "conversion (0/1 outcomes) or mean (numbers); default conversion",
    "experiments create significance": "the significance level (alpha) for the decision "
                                       "(default: ml.experiments.statistical_significance)",
    "experiments create min_sample_size": "units per arm before a decision "
                                          "(default: ml.experiments.min_sample_size)",
    "experiments create duration_days": "days it runs at least before a decision "
                                        "(default: ml.experiments.experiment_duration_days)",
    "experiments assign name": _EXPERIMENT,
    "experiments assign unit": "the unit (user, session, ...) to assign",
    "experiments record name": _EXPERIMENT,
    "experiments record unit": "the unit the outcome belongs to (or use --csv)",
    "experiments record value": "the outcome: 0/1 for conversion, a number for mean",
    "experiments analyze name": _EXPERIMENT,
    "experiments conclude name": _EXPERIMENT,
    "experiments conclude no_promote": "record the decision but do not promote a winning model",
    "monitor alerts limit": "at most this many (default 100)",
    "monitor stats model": "the model's name",
    "monitor stats version": "the model version",
    "monitor stats window": "samples per model version (default 100)",
}

EXAMPLES: dict[str, str] = {
    "data": "mlprefs data status user-42",
    "data consent": "mlprefs data consent user-42",
    "data revoke": "mlprefs data revoke user-42",
    "data opt-out": "mlprefs data opt-out user-42",
    "data status": "mlprefs data status user-42",
    "data erase": "mlprefs data erase user-42",
    "data export": "mlprefs data export user-42 --out user-42.json",
    "data cleanup": "mlprefs data cleanup",
    "data policy": "mlprefs data policy --json",
    "data audit": "mlprefs data audit --subject user-42 --limit 20",
    "experiments": "mlprefs experiments list",
    "experiments create": "mlprefs experiments create button-color --control blue "
                          "--treatment green",
    "experiments assign": "mlprefs experiments assign button-color user-42",
    "experiments record": "mlprefs experiments record button-color user-42 1",
    "experiments analyze": "mlprefs experiments analyze button-color",
    "experiments conclude": "mlprefs experiments conclude button-color",
    "experiments list": "mlprefs experiments list",
    "monitor": "mlprefs monitor check",
    "monitor check": "mlprefs monitor check --window 200",
    "monitor alerts": "mlprefs monitor alerts --active",
    "monitor stats": "mlprefs monitor stats churn 1.3.0 --window 500",
}
