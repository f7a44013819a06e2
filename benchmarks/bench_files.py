"""Strange files and pathological input in one command:

    python benchmarks/bench_files.py [--toml-test DIR]

- 100,000 unregistered keys in mlprefs.toml: Client() time beside tomllib.loads of the same
  text (the floor: the SDK cannot read a file faster than the parser), and log lines written;
- 20,000 unknown ml.* keys: time to the ValidationError beside the same floor, message size;
- a key 5,000 segments deep, and values nested 5,000 deep: what comes out, and how fast;
- "did you mean" on a catalog of 10,000 registered keys, beside the packaged catalog;
- a FIFO, a directory and a symlink loop at mlprefs.toml: the error, and that it returns;
- with --toml-test DIR (a checkout of github.com/toml-lang/toml-test): every TOML 1.0.0 case
  through the SDK's reader: valid files loaded, invalid ones rejected with a line, and any
  other exception (the goal: none); and 30 random 1-3 byte edits of each file, which must
  load with a line for every key or fail with a ConfigFileError with a line.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
import time
import tomllib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _bench import isolate, print_table


class _Count(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines = self.chars = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.lines += 1
        self.chars += len(record.getMessage())


def _client_on(text: str) -> tuple[float, str, int, int, int]:
    """Client() on a project dir holding text as mlprefs.toml: seconds, outcome, message
    size, log lines, log characters."""
    from mlprefs_sdk import Client

    root = tempfile.mkdtemp()
    os.environ["MLPREFS_HOME"] = os.path.join(root, "home")
    with open(os.path.join(root, "mlprefs.toml"), "w", encoding="utf-8") as f:
        f.write(text)
    counter = _Count()
    log = logging.getLogger("mlprefs_sdk")
    log.addHandler(counter)
    log.propagate = False
    os.chdir(root)
    t = time.perf_counter()
    try:
        Client().close()
        outcome, size = "loaded", 0
    except Exception as e:  # noqa: BLE001 - the outcome is what is measured
        outcome, size = type(e).__name__, len(str(e))
    seconds = time.perf_counter() - t
    log.removeHandler(counter)
    return seconds, outcome, size, counter.lines, counter.chars


def _floor(text: str) -> float:
    t = time.perf_counter()
    try:
        tomllib.loads(text)
    except RecursionError:
        pass
    return time.perf_counter() - t


def _strange(kind: str) -> str:
    from mlprefs_sdk import Client

    root = tempfile.mkdtemp()
    os.environ["MLPREFS_HOME"] = os.path.join(root, "home")
    path = os.path.join(root, "mlprefs.toml")
    {"FIFO": os.mkfifo, "directory": os.mkdir,
     "symlink loop": lambda p: os.symlink(p, p)}[kind](path)
    os.chdir(root)

    def hung(*_: object) -> None:
        raise TimeoutError("Client() still blocked after 5 s")

    signal.signal(signal.SIGALRM, hung)
    signal.alarm(5)
    try:
        Client().close()
        return "loaded (the layer was dropped)"
    except Exception as e:  # noqa: BLE001
        return f"{type(e).__name__}: {str(e).split(': ', 1)[-1]}"
    finally:
        signal.alarm(0)


def _suggest_row() -> tuple:
    """One "did you mean" on a catalog of 10,000 registered keys, beside the packaged one."""
    from mlprefs_sdk.catalog import Catalog, KeySpec

    small, large = Catalog.packaged(), Catalog.packaged()
    for i in range(10_000):
        large.register(KeySpec.build(f"team.group{i % 100}.metric_{i}", "int", 1))
    large.suggest("warm.up")  # builds the index once per catalog version

    def per_call(catalog: Catalog) -> float:
        keys = ["ml.training.learnin_rat", "ml.training.batch", "team.group7.metric_7x"]
        t = time.perf_counter()
        for key in keys * 5:
            catalog.suggest(key)
        return (time.perf_counter() - t) / (len(keys) * 5)

    big, base = per_call(large), per_call(small)
    return ("did you mean, 10,000 registered keys", f"{big * 1000:.1f} ms a call", "-",
            f"packaged catalog {base * 1000:.2f} ms", f"{big / base:.0f}x", big < 0.05)


def _mutants(root: str, names: list[str], per_file: int = 30) -> list[tuple]:
    """Each corpus file with 1-3 random byte edits: loaded with a line for every key, or a
    ConfigFileError with a line; any other outcome is counted."""
    import random

    from mlprefs_sdk.errors import ConfigFileError
    from mlprefs_sdk.tomlfile import read_toml

    rng = random.Random(7)
    alphabet = b"[]{}\"'=.,#\n \\\t\xc3\xa9\xef\xbb\xbfabc123-_:"
    path = os.path.join(tempfile.mkdtemp(), "mutant.toml")
    good = total = 0
    for name in names:
        with open(os.path.join(root, name), "rb") as f:
            data = f.read()
        for _ in range(per_file):
            b = bytearray(data)
            for _ in range(rng.randint(1, 3)):
                i = rng.randint(0, len(b))
                if rng.random() < 0.4 and b:
                    del b[min(i, len(b) - 1)]
                else:
                    b[i:i] = bytes([rng.choice(alphabet)])
            with open(path, "wb") as f:
                f.write(b)
            total += 1
            try:
                doc = read_toml(path)
                good += doc is not None and all(line for _, line in doc.values.values())
            except ConfigFileError as e:
                good += bool(e.line)
            except Exception as e:  # noqa: BLE001 - counted: the goal is none
                print(f"  mutant of {name}: {type(e).__name__}: {e}")
    return [("toml-test mutants: loaded with lines, or error with a line", f"{good:,} of {total:,}",
             "-", "-", "-", good == total)]


def _corpus(root: str) -> list[tuple]:
    from mlprefs_sdk.catalog import Catalog
    from mlprefs_sdk.errors import ConfigFileError, ValidationError
    from mlprefs_sdk.layers import defaults_layer, file_layer
    from mlprefs_sdk.resolve import resolve

    catalog = Catalog.packaged()
    with open(os.path.join(root, "files-toml-1.0.0"), encoding="utf-8") as f:
        names = [n.strip() for n in f if n.strip().endswith(".toml")]
    valid_ok = valid_n = invalid_ok = invalid_n = other = 0
    for name in names:
        valid = name.startswith("valid/")
        valid_n += valid
        invalid_n += not valid
        path = os.path.join(root, name)
        try:
            layer = file_layer("file", path)
            _, problems = resolve(catalog, [defaults_layer(catalog), layer])
            parse = [p for p in problems if p.rule == "toml"]
            if valid and not parse:
                valid_ok += 1
            elif not valid and parse and parse[0].source.line:
                invalid_ok += 1
        except (ConfigFileError, ValidationError):
            pass
        except Exception as e:  # noqa: BLE001 - counted: the goal is none
            other += 1
            print(f"  {name}: {type(e).__name__}: {e}")
    return [
        *_mutants(root, names),
        ("toml-test valid cases loaded", f"{valid_ok} of {valid_n}", "-", "-", "-", valid_ok == valid_n),
        ("toml-test invalid cases: error with a line", f"{invalid_ok} of {invalid_n}", "-", "-", "-",
         invalid_ok == invalid_n),
        ("toml-test: any other exception", other, "0", "-", "-", other == 0),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--toml-test", help="a checkout of github.com/toml-lang/toml-test/tests")
    args = parser.parse_args()
    isolate()
    rows: list[tuple] = []

    text = "".join(f"team.k{i} = {i}\n" for i in range(100_000))
    floor = min(_floor(text) for _ in range(3))
    runs = [_client_on(text) for _ in range(3)]
    best = min(r[0] for r in runs)
    _, outcome, _, lines, chars = runs[0]
    rows.append(("100k unregistered keys: Client()", f"{best:.2f} s ({outcome})", "-",
                 f"tomllib.loads {floor:.2f} s", f"{best / floor:.1f}x", best / floor < 3))
    rows.append(("100k unregistered keys: log", f"{lines} lines, {chars:,} chars", "-", "-", "-",
                 lines <= 21))

    text = "".join(f"ml.training.k{i} = {i}\n" for i in range(20_000))
    floor = min(_floor(text) for _ in range(3))
    runs = [_client_on(text) for _ in range(3)]
    best = min(r[0] for r in runs)
    _, outcome, size, _, _ = runs[0]
    rows.append(("20k unknown ml.* keys: Client()", f"{best:.2f} s ({outcome})", "-",
                 f"tomllib.loads {floor:.2f} s", f"{best / floor:.1f}x", best / floor < 5))
    rows.append(("20k unknown ml.* keys: message", f"{size:,} chars", "-", "-", "-", size < 5_000))

    deep = ".".join(f"s{i}" for i in range(5000))
    for label, text in [("key 5,000 segments deep", f"team.{deep} = 1\n"),
                        ("ml. table 5,000 segments deep", f"[ml.{deep}]\nx = 1\n"),
                        ("inline tables nested 5,000 deep", "x = " + "{a=" * 5000 + "1" + "}" * 5000 + "\n"),
                        ("arrays nested 5,000 deep", "x = " + "[" * 5000 + "]" * 5000 + "\n")]:
        seconds, outcome, size, lines, chars = _client_on(text)
        rows.append((label, f"{outcome} in {seconds:.2f} s, message {size:,} / log {chars:,} chars",
                     "-", "-", "-", outcome != "RecursionError"))

    rows.append(_suggest_row())

    for kind in ("FIFO", "directory", "symlink loop"):
        outcome = _strange(kind)
        rows.append((f"{kind} at mlprefs.toml", outcome, "-", "-", "-",
                     outcome.startswith("ConfigFileError")))

    if args.toml_test:
        rows.extend(_corpus(args.toml_test))
    return print_table(rows)


if __name__ == "__main__":
    sys.exit(main())
