from mlprefs_sdk import Client


def test_client_resolves_packaged_defaults(home):
    with Client() as prefs:
        assert prefs.get("ml.training.learning_rate") == 0.001


def test_import_mlprefs_sdk_imports_no_optional_library(home):
    """In this environment the bridges' libraries are installed: importing the SDK (and
    building a Client with its plugins) must still import none of them."""
    import subprocess
    import sys

    script = ("import sys, mlprefs_sdk\n"
              "with mlprefs_sdk.Client() as prefs:\n"
              "    prefs.plugin_manager\n"
              "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy', "
              "'mlflow', 'wandb', 'openfeature', 'jsonschema', 'cattrs')))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "[]\n"
