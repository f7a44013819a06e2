from mlprefs_sdk import Client


def test_client_resolves_packaged_defaults(home):
    with Client() as prefs:
        assert prefs.get("ml.training.learning_rate") == 0.001
