"""The sandbox: step behaviour, the hostile corpus, and the process layer holding on its own."""
from __future__ import annotations

import json
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from helpers.sandbox import Limits, Sandbox, host
from helpers.sandbox.result import ErrorKind
from helpers.world import World
from helpers.world.errors import ApiError
from tests.conftest import ANN, NOW, make_state
from tests.hostile_snippets import HOSTILE_SNIPPETS, MARKER_FILE

TEST_LIMITS = Limits(step_wall_seconds=1.0, step_cpu_seconds=1.0, memory_mb=256)
SLACK_SECONDS = 1.5  # for a loaded 2-core machine running two snippets at once
MAX_STEP_SECONDS = TEST_LIMITS.step_wall_seconds + host.GRACE_SECONDS + SLACK_SECONDS
REPO = Path(__file__).resolve().parents[1]
VOLATILE_DIRECTORIES = {".venv", ".git", "__pycache__", ".pytest_cache", ".ipynb_checkpoints"}

# Reaches the real `os` through object internals, which only the static checks stop: what model code would
# hold after getting past the first two layers.
REAL_OS = (
    "os = [c for c in ().__class__.__base__.__subclasses__() if c.__name__ == '_wrap_close'][0]"
    ".__init__.__globals__['sys'].modules['os']\n"
    "sys = os.sys\n"
)


class RecordingHandler:
    """A fake app handler: records every call, answers with a balance, refuses on request."""

    def __init__(self):
        self.calls: list[tuple] = []

    def __call__(self, app, api, args, kwargs):
        self.calls.append((app, api, args, kwargs))
        if api == "refuse":
            raise ApiError("Insufficient balance: you have $12.50.")
        if api == "crash":
            raise KeyError("account")
        return {"balance": 12.5, "currency": "USD"}


@pytest.fixture
def handler() -> RecordingHandler:
    return RecordingHandler()


@pytest.fixture
def sandbox(handler):
    with Sandbox(handler, now=NOW, limits=TEST_LIMITS, seed=7) as box:
        yield box


# --- behaviour -----------------------------------------------------------------------------------------


def test_variables_persist_between_steps(sandbox):
    assert sandbox.execute("total = 40").observation == "Execution successful."
    assert sandbox.execute("total += 2\nprint(total)").observation == "42"


def test_print_shows_dicts_and_lists_as_compact_json(sandbox):
    assert sandbox.execute("print({'a': [1, None, True], 'b': 'x'})").observation == '{"a": [1, null, true], "b": "x"}'
    assert sandbox.execute("print([1, 'two'], 3)").observation == '[1, "two"] 3'
    assert sandbox.execute("print('a', 'b', sep='-')").observation == "a-b"


def test_error_report_names_the_failing_line_after_the_output(sandbox):
    observation = sandbox.execute("print('before')\nx = 1\ny = x / 0\nprint('after')").observation
    assert observation == ("before\nExecution failed. Traceback:\n  line 3: y = x / 0\n"
                           "ZeroDivisionError: division by zero")


def test_error_inside_a_function_shows_the_call_and_the_failing_line(sandbox):
    observation = sandbox.execute("def half(x):\n    return x['missing']\n\nhalf({})").observation
    assert observation == ("Execution failed. Traceback:\n  line 4: half({})\n  line 2: return x['missing']\n"
                           "KeyError: 'missing'")


def test_handler_receives_app_api_args_and_kwargs(sandbox, handler):
    observation = sandbox.execute("r = apis.wallet.show_balance('tok', page=2)\n"
                                  "print(r['balance'], isinstance(r, dict))").observation
    assert observation == "12.5 True"
    assert handler.calls == [("wallet", "show_balance", ["tok"], {"page": 2})]


def test_api_error_message_passes_through(sandbox):
    observation = sandbox.execute("x = 1\napis.wallet.refuse()").observation
    assert observation == ("Execution failed. Traceback:\n  line 2: apis.wallet.refuse()\n"
                           "ApiError: Insufficient balance: you have $12.50.")
    assert sandbox.execute("try:\n    apis.wallet.refuse()\nexcept Exception as e:\n    print(e)").observation == \
        "Insufficient balance: you have $12.50."


def test_other_handler_exceptions_are_internal_errors_not_crashes(sandbox):
    observation = sandbox.execute("try:\n    apis.wallet.crash()\nexcept BaseException:\n    pass").observation
    assert observation == "Execution failed. Internal error in the environment: KeyError: 'account'"
    assert sandbox.alive and sandbox.execute("print(1)").observation == "1"


def test_datetime_is_frozen_at_the_tasks_now(sandbox):
    assert sandbox.execute("import datetime\nprint(datetime.datetime.now(), datetime.datetime.today(), "
                           "datetime.date.today())").observation == "2026-03-14 10:00:00 2026-03-14 10:00:00 2026-03-14"
    assert sandbox.execute("from datetime import datetime, date, timedelta\n"
                           "print((datetime.now() - timedelta(days=7)).isoformat(), date.today().isoformat())").observation == \
        "2026-03-07T10:00:00 2026-03-14"
    assert sandbox.execute("print(datetime.strptime('2026-01-02', '%Y-%m-%d') < datetime.now())").observation == "True"


def test_cpu_limit_stops_a_step_before_the_wall_limit(handler):
    with Sandbox(handler, limits=Limits(step_wall_seconds=10.0, step_cpu_seconds=1.0)) as box:
        # which limit ended the step is data: the CPU one, although the wall limit was ten times longer (on a busy
        # machine the wall time it took says nothing, so it is not asserted)
        result = box.execute("n = 0\nwhile True:\n    n += 1")
        assert result.error_kind == ErrorKind.CPU_LIMIT
        assert result.observation.endswith("TimeLimitExceeded: The step exceeded its CPU time limit of 1 seconds.")
        assert box.execute("print(n > 0)").observation == "True"


def test_random_is_seeded(handler):
    draws = []
    for _ in range(2):
        with Sandbox(handler, seed=3) as box:
            draws.append(box.execute("import random\nprint(random.random(), random.randint(1, 100))").observation)
    assert draws[0] == draws[1]
    with Sandbox(handler, seed=4) as box:
        assert box.execute("import random\nprint(random.random(), random.randint(1, 100))").observation != draws[0]


def test_output_is_truncated_with_a_note(handler):
    with Sandbox(handler, limits=Limits(output_chars=50)) as box:
        observation = box.execute("for i in range(100):\n    print('line', i)").observation
    assert observation.startswith("line 0\nline 1\n")
    shown, note = observation.split("\n[Output truncated", 1)
    assert len(shown) <= 50 and "only the first 50" in note


def test_api_call_limit_is_enforced_per_step(handler):
    with Sandbox(handler, limits=Limits(api_calls_per_step=3)) as box:
        observation = box.execute("for i in range(5):\n    apis.wallet.show_balance()").observation
        assert observation.startswith("Execution failed. Traceback:\n  line 2:")
        assert "ApiError: API call limit reached" in observation
        assert len(handler.calls) == 3
        assert box.execute("print(apis.wallet.show_balance()['balance'])").observation == "12.5"


def test_two_sandboxes_do_not_share_state(handler):
    with Sandbox(handler) as first, Sandbox(handler) as second:
        first.execute("secret = 'first'")
        assert second.execute("print(secret)").observation.endswith("NameError: name 'secret' is not defined")
        second.execute("import json\njson.dumps = None")
        assert first.execute("import json\nprint(json.dumps([1]))").observation == "[1]"


def test_close_is_idempotent_and_ends_the_episode(handler):
    box = Sandbox(handler)
    assert box.alive
    box.close()
    box.close()
    assert not box.alive
    assert box.execute("print(1)").observation == ("Execution failed. The episode has ended (the sandbox was closed); "
                                       "no more code can run.")


def test_static_refusals_say_what_is_not_allowed(sandbox):
    assert sandbox.execute("x = 1\nf = open('notes.txt')").observation == \
        "Execution failed. 'open' is not available: this environment has no file access (line 2)."
    assert sandbox.execute("import os").observation.startswith("Execution failed. Importing 'os' is not allowed")
    assert sandbox.execute("print((1).__class__)").observation == ("Execution failed. '__class__' is not allowed: names and "
                                                       "attributes starting with '__' are reserved (line 1).")
    assert sandbox.execute("def f(:\n  pass").observation == ("Execution failed. Traceback:\n  line 1: def f(:\n"
                                                "SyntaxError: invalid syntax")


def test_classes_may_define_ordinary_dunder_methods(sandbox):
    code = ("class Money:\n    def __init__(self, cents):\n        self.cents = cents\n"
            "    def __repr__(self):\n        return f'${self.cents / 100:.2f}'\nprint(Money(1250))")
    assert sandbox.execute(code).observation == "$12.50"


def test_against_the_real_world():
    world = World(make_state())
    with Sandbox(world.call, now=NOW, limits=TEST_LIMITS) as box:
        login = f"token = apis.wallet.login(username='{ANN.email}', password='w-pass')['access_token']"
        assert box.execute(login).observation == "Execution successful."
        assert json.loads(box.execute("print(apis.wallet.show_balance(access_token=token))").observation) == {"balance": 100.0}
        refused = box.execute("apis.wallet.login(username='nobody@example.com', password='x')").observation
        assert refused.startswith("Execution failed. Traceback:\n  line 1:") and "\nApiError: " in refused
        assert "No app named" in box.execute("apis.nosuchapp.anything()").observation


# --- the hostile corpus ----------------------------------------------------------------------------------


def _listing(root: Path, max_depth: int | None = None) -> set[str]:
    """Every path under root, skipping virtualenvs, caches and VCS data that other tools change."""
    found = set()
    for directory, subdirectories, files in os.walk(root):
        subdirectories[:] = [name for name in subdirectories if name not in VOLATILE_DIRECTORIES]
        found.update(os.path.join(directory, name) for name in files + subdirectories)
        if max_depth is not None and len(Path(directory).relative_to(root).parts) >= max_depth:
            subdirectories[:] = []
    return found


def _run_snippet(snippet):
    with Sandbox(RecordingHandler(), now=NOW, limits=TEST_LIMITS) as box:
        started = time.monotonic()
        observation = box.execute(snippet.code).observation
        elapsed = time.monotonic() - started
        return observation, elapsed, box.alive, box.execute("pass").observation


def test_hostile_corpus_fails_cleanly_within_limits_and_leaves_no_files(tmp_path, monkeypatch):
    assert len(HOSTILE_SNIPPETS) >= 40
    monkeypatch.chdir(tmp_path)
    watched = {REPO: None, Path.home(): 0, tmp_path: None}  # home: only its top level, caches live below
    before = {root: _listing(root, depth) for root, depth in watched.items()}

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(zip(HOSTILE_SNIPPETS, pool.map(_run_snippet, HOSTILE_SNIPPETS)))

    problems = []
    for snippet, (observation, elapsed, alive, next_observation) in results.items():
        failed = "Execution failed." in observation
        if snippet.harmless == failed:
            problems.append(f"{snippet.name}: unexpected observation {observation[:300]!r}")
        if elapsed > MAX_STEP_SECONDS:
            problems.append(f"{snippet.name}: took {elapsed:.1f}s")
        if snippet.ends_episode is not None and snippet.ends_episode == alive:
            problems.append(f"{snippet.name}: alive={alive} after {observation[:200]!r}")
        if alive and next_observation != "Execution successful.":
            problems.append(f"{snippet.name}: the next step saw {next_observation[:200]!r}")
        if not alive and not next_observation.startswith("Execution failed. The episode has ended"):
            problems.append(f"{snippet.name}: after the episode ended, {next_observation[:200]!r}")
    assert not problems, "\n".join(problems)

    for root, depth in watched.items():
        assert _listing(root, depth) == before[root], f"files appeared or vanished under {root}"
    for place in (tmp_path, REPO, Path.home(), Path("/tmp")):
        assert not (place / MARKER_FILE).exists()
    with Sandbox(RecordingHandler(), limits=TEST_LIMITS) as fresh:
        assert fresh.execute("print(apis.wallet.show_balance())").observation == '{"balance": 12.5, "currency": "USD"}'


def test_the_harmless_corpus_entries_show_no_escape():
    by_name = {snippet.name: snippet for snippet in HOSTILE_SNIPPETS}
    assert _run_snippet(by_name["format_dunder_is_only_a_string"])[0] == "<class 'int'>"
    assert _run_snippet(by_name["format_globals_text_only"])[0] == "True"
    printed = _run_snippet(by_name["hundred_megabyte_print"])[0]
    assert printed.startswith("xxxx") and len(printed) < TEST_LIMITS.output_chars + 200
    assert "[Output truncated: 100000001 characters were printed" in printed


# --- the process layer on its own ------------------------------------------------------------------------


def _unchecked(box: Sandbox, code: str) -> str:
    return box._execute_without_static_checks(code).observation


@pytest.mark.parametrize("syscall_filter", [True, False], ids=["with-seccomp", "limits-root-and-uid-only"])
def test_worker_with_real_os_cannot_write_connect_or_fork(syscall_filter, tmp_path, monkeypatch):
    monkeypatch.setattr(host, "INSTALL_SYSCALL_FILTER", syscall_filter)
    markers = [tmp_path / MARKER_FILE, Path("/tmp") / f"{uuid.uuid4().hex}-{MARKER_FILE}"]
    with Sandbox(RecordingHandler(), limits=TEST_LIMITS) as box:
        assert _unchecked(box, REAL_OS + "print(os.getpid() > 0)") == "True"  # the escape itself works
        attempts = {
            "os.open": f"os.open({str(markers[0])!r}, os.O_WRONLY | os.O_CREAT)",
            "os.open in /tmp": f"os.open({str(markers[1])!r}, os.O_WRONLY | os.O_CREAT)",
            "io.open": f"sys.modules['io'].open({str(markers[1])!r}, 'w').write('escaped')",
            "relative": f"sys.modules['io'].open({MARKER_FILE!r}, 'w')",
            "read": "print(sys.modules['io'].open('/etc/hostname').read())",
            "socket": "s = sys.modules['socket'].socket()\ns.connect(('127.0.0.1', 9))",
            "fork": "print(os.fork())",
        }
        for name, code in attempts.items():
            observation = _unchecked(box, code)
            assert observation.startswith("Execution failed. Traceback:"), (name, observation)
            assert "Error" in observation, (name, observation)
        assert _unchecked(box, "print(os.environ == {})") == "True"  # no inherited secrets
        if os.geteuid() == 0:
            assert _unchecked(box, "print(os.getuid() != 0, os.getgid() != 0)") == "True True"
        assert box.alive and box.execute("print('fine')").observation == "fine"
    for marker in markers:
        assert not marker.exists()


def test_syscall_filter_holds_even_after_freeing_a_descriptor(tmp_path):
    marker = Path("/tmp") / f"{uuid.uuid4().hex}-{MARKER_FILE}"
    with Sandbox(RecordingHandler(), limits=TEST_LIMITS) as box:
        _unchecked(box, REAL_OS)
        for code in (f"os.close(0)\nos.open({str(marker)!r}, os.O_WRONLY | os.O_CREAT)",
                     "s = sys.modules['socket'].socket()", "os.execv('/bin/sh', ['sh'])", "os.kill(1, 0)"):
            assert "PermissionError: [Errno 1] Operation not permitted" in _unchecked(box, code), code
    assert not marker.exists()


WORKER_CHANNEL = "channel = sys.modules['helpers.sandbox.worker']._session.channel\n"


@pytest.mark.parametrize("forgery, reason", [
    ("channel.send_bytes(b'not json')", "sent an invalid message"),
    ("channel.send_bytes(b'[' * 100_000 + b']' * 100_000)", "sent an invalid message"),
    ("channel.send_bytes(b'{\"op\": \"done\", \"observation\": 5}')", "sent an invalid message"),
    ("channel.send_bytes(b'{\"op\": \"call\"}')\nchannel.send_bytes(b'{\"op\": \"reboot\"}')",
     "sent an invalid message"),
    ("os.write(3, (100_000_000).to_bytes(4, 'big'))", "sent an oversized message"),
], ids=["not-json", "deeply-nested", "observation-not-text", "unknown-op", "oversized"])
def test_a_compromised_worker_cannot_break_the_parent(forgery, reason, handler):
    with Sandbox(handler, limits=TEST_LIMITS) as box:
        observation = _unchecked(box, REAL_OS + WORKER_CHANNEL + forgery + "\nwhile True:\n    pass")
        assert observation == f"Execution failed. The sandbox process {reason}; the episode has ended."
        assert not box.alive
    assert handler.calls == []  # the malformed call was refused before it reached the apps


@pytest.mark.parametrize("code, how", [
    ("os._exit(3)", "exit code 3"),
    ("sys.modules['ctypes'].string_at(0)", "killed by SIGSEGV"),
])
def test_a_dying_worker_ends_the_episode_without_raising(code, how):
    with Sandbox(RecordingHandler(), limits=TEST_LIMITS) as box:
        observation = _unchecked(box, REAL_OS + code)
        assert observation == f"Execution failed. The sandbox process died ({how}); the episode has ended."
        assert not box.alive


def test_killed_worker_ends_its_episode_while_a_parallel_one_keeps_working(handler):
    with Sandbox(handler, limits=TEST_LIMITS) as stuck, Sandbox(handler, limits=TEST_LIMITS) as healthy:
        outcome = {}
        runner = threading.Thread(target=lambda: outcome.update(
            observation=stuck.execute("import itertools\nany(itertools.repeat(0))").observation))
        started = time.monotonic()
        runner.start()
        for i in range(20):
            assert healthy.execute(f"print({i} * 2)").observation == str(i * 2)
            time.sleep(0.05)
        runner.join()
        assert time.monotonic() - started <= MAX_STEP_SECONDS
        assert outcome["observation"] == ("Execution failed. The step exceeded its time limit of 1 seconds and was "
                                          "stopped; the episode has ended.")
        assert not stuck.alive
        assert stuck.execute("print(1)").observation == ("Execution failed. The episode has ended (a step exceeded its time "
                                             "limit); no more code can run.")
        assert healthy.alive and healthy.execute("print(apis.wallet.show_balance()['balance'])").observation == "12.5"


@pytest.mark.parametrize("error", [RecursionError, MemoryError, SystemError("AST constructor recursion depth mismatch")])
def test_code_the_parser_cannot_handle_is_refused_with_one_sentence(monkeypatch, error):
    # CPython 3.11 raised SystemError, not RecursionError, on 200 nested lambdas parsed in a worker thread
    from helpers.sandbox import policy

    def parse(*args, **kwargs):
        raise error

    monkeypatch.setattr(policy.ast, "parse", parse)
    result = policy.check_code("f = lambda: 0", max_chars=1000)
    assert result is not None and not result.ok
    assert "too deeply nested" in result.observation and "\n" not in result.observation.strip()
