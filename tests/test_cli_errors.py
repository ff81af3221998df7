"""Wrong arguments and missing configuration: one clear line (or argparse's
usage and error), never a traceback. The newcomer check found tracebacks for
each of these."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor


def firesafe(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("FIRESAFE_")}
    return subprocess.run(
        [sys.executable, "-m", "firesafe.cli", *args],
        env={**base, "FIRESAFE_API_PORT": "0", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


CASES: list[tuple[tuple[str, ...], dict[str, str], str]] = [
    (("ingest",), {}, "no database configured"),
    (("notify",), {}, "no database configured"),
    (("api",), {}, "no database configured"),
    (("gateway", "gb26875"), {}, "no MQTT broker configured"),
    (("gateway", "gb26875", "--listen", "bad"), {}, "'bad' is not HOST:PORT"),
    (("gateway", "gb26875", "--listen", "127.0.0.1:99999"), {}, "is not HOST:PORT"),
    (("conformance", "--gb26875", "--listen", "99999"), {}, "is not [HOST:]PORT"),
    (("conformance", "--site", "S1", "--duration", "-1"), {}, "must be a number > 0"),
    (("sim", "--duration", "0"), {}, "--duration must be a number > 0"),
    (("sim", "--speed", "fast"), {}, "--speed (or `max`) must be a number > 0"),
    (("sim", "--rate", "-5"), {}, "--rate must be a number > 0"),
    (("--lang", "zh-CN", "ingest"), {}, "未配置数据库"),
    (("conformance", "--site", "bad site!"), {}, "'bad site!' is not an id"),
    (("--lang", "zh-CN", "sim", "--scenario", "nope"), {}, "未知场景 'nope'"),
    (("--lang", "zh-CN", "sim", "--sites", "0"), {}, "必须 >= 1"),
    (("sim", "--site-timezone", "Mars/Olympus"), {}, "is not an IANA time zone"),
    (("sim", "--protocol", "gb26875", "--gateway", "bad"), {}, "'bad' is not HOST:PORT"),
    (
        ("--lang", "zh-CN", "api"),
        {"FIRESAFE_API_PORT": "abc"},
        "FIRESAFE_API_PORT（或 --api-port）: 应为整数",
    ),
    (
        ("api",),
        {
            "FIRESAFE_DATABASE_URL": "postgresql://x@127.0.0.1:1/x",
            "FIRESAFE_API_HOST": "999.1.1.1",
        },
        "'999.1.1.1' is not an address",
    ),
    (
        ("api",),
        {
            "FIRESAFE_DATABASE_URL": "postgresql://x@127.0.0.1:1/x",
            "FIRESAFE_API_HOST": "10.9.9.9",
        },
        "must be an address of this machine",
    ),
]


def test_a_clear_error_not_a_traceback() -> None:
    # Side by side: each case is a Python start-up of its own (about 0.7 s).
    with ThreadPoolExecutor(max_workers=8) as pool:
        runs = list(pool.map(lambda case: firesafe(*case[0], **case[1]), CASES))
    for (args, _, expected), done in zip(CASES, runs, strict=True):
        assert done.returncode != 0, args
        assert "Traceback" not in done.stderr, (args, done.stderr)
        assert expected in done.stderr, (args, done.stderr)


def test_a_reader_that_leaves_early_gets_no_traceback() -> None:
    """`firesafe sim --scenario list | head -2`: BrokenPipeError, before."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("FIRESAFE_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "firesafe.cli", "sim", "--scenario", "list"],
        env=base,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    proc.stdout.close()  # the reader is gone before the list is written
    _, err = proc.communicate(timeout=60)
    assert "Traceback" not in err, err


def test_the_scenario_list_speaks_the_operators_language() -> None:
    """Every scenario's description in Chinese with `--lang zh-CN` (the names,
    kinds and expectations are codes and stay as they are)."""
    from device_sim.scenarios import LIBRARY

    english = firesafe("sim", "--scenario", "list")
    chinese = firesafe("--lang", "zh-CN", "sim", "--scenario", "list")
    assert english.returncode == chinese.returncode == 0
    lines = chinese.stdout.splitlines()
    assert len(lines) == len(LIBRARY)
    for line, scenario in zip(lines, LIBRARY.values(), strict=True):
        assert line.startswith(scenario.name)
        assert scenario.description not in line, line
        assert any("\u4e00" <= ch <= "\u9fff" for ch in line), line
    assert all(s.description in english.stdout for s in LIBRARY.values())
