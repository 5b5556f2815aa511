"""Hostile or broken model code, as data: each must end in an error observation, or run harmlessly, within its limit."""
from __future__ import annotations

from dataclasses import dataclass

MARKER_FILE = "sandbox_escape_marker.txt"  # snippets that try to write a file use this name


@dataclass(frozen=True)
class Snippet:
    name: str
    code: str
    harmless: bool = False  # runs normally (no "Execution failed."), and nothing escapes
    ends_episode: bool | None = False  # True: the worker must be killed; None: either is acceptable


def _lines(*lines: str) -> str:
    return "\n".join(lines)


HOSTILE_SNIPPETS = [
    # --- time and CPU -------------------------------------------------------------------------------------
    Snippet("infinite_loop", _lines("while True:", "    pass")),
    Snippet("loop_catching_the_time_limit", _lines(
        "while True:", "    try:", "        while True:", "            pass",
        "    except BaseException:", "        pass",
    ), ends_episode=None),
    Snippet("finally_continue_swallows_everything", _lines(
        "while True:", "    try:", "        pass", "    finally:", "        continue",
    ), ends_episode=None),
    Snippet("c_level_infinite_iteration", _lines("import itertools", "any(itertools.repeat(0))"), ends_episode=True),
    Snippet("c_level_sum_of_huge_range", "sum(range(10**15))", ends_episode=True),
    Snippet("huge_power", "x = 10**10**8", ends_episode=None),
    Snippet("catastrophic_regex", _lines("import re", "re.match('(a*)*b', 'a' * 40)"), ends_episode=None),
    Snippet("print_flood_until_timeout", _lines("while True:", "    print('x' * 1000)")),
    # --- memory --------------------------------------------------------------------------------------------
    Snippet("huge_list", "x = [0] * 10**10"),
    Snippet("huge_bytearray", "x = bytearray(10**10)"),
    Snippet("huge_string", "x = 'x' * 10**10"),
    Snippet("growing_list", _lines("chunks = []", "while True:", "    chunks.append('x' * 10**7)")),
    Snippet("deep_recursion", _lines("def f(n):", "    return f(n + 1)", "f(0)")),
    Snippet("deeply_nested_list_printed", _lines("a = []", "for _ in range(100000):", "    a = [a]", "print(a)")),
    Snippet("recursive_str", _lines(
        "class Loop:", "    def __str__(self):", "        return str(self)", "print(Loop())",
    )),
    # --- processes and files ---------------------------------------------------------------------------------
    Snippet("import_os", "import os\nos.fork()"),
    Snippet("dunder_import_os", "__import__('os').system('touch /tmp/" + MARKER_FILE + "')"),
    Snippet("import_subprocess", "import subprocess\nsubprocess.run(['touch', '" + MARKER_FILE + "'])"),
    Snippet("import_multiprocessing", "import multiprocessing\nmultiprocessing.Process(target=print).start()"),
    Snippet("from_os_import_system", "from os import system\nsystem('touch " + MARKER_FILE + "')"),
    Snippet("open_for_writing", f"open('{MARKER_FILE}', 'w').write('escaped')"),
    Snippet("open_for_reading", "print(open('/etc/passwd').read())"),
    Snippet("pathlib_write", f"import pathlib\npathlib.Path('{MARKER_FILE}').write_text('escaped')"),
    Snippet("io_open", f"import io\nio.open('{MARKER_FILE}', 'w')"),
    Snippet("shutil_copy", f"import shutil\nshutil.copy('/etc/passwd', '{MARKER_FILE}')"),
    Snippet("socket", "import socket\nsocket.create_connection(('example.com', 80))"),
    Snippet("ctypes", "import ctypes\nctypes.string_at(0)"),
    Snippet("sys_modules", "import sys\nprint(sys.modules['os'])"),
    Snippet("time_sleep", "import time\ntime.sleep(100)"),
    Snippet("submodule_import", "import collections.abc"),
    Snippet("relative_import", "from . import secrets"),
    # --- import tricks ---------------------------------------------------------------------------------------
    Snippet("importlib", "import importlib\nimportlib.import_module('os')"),
    Snippet("builtins_dict_import", "__builtins__['__import__']('os')"),
    Snippet("import_builtins", "import builtins\nbuiltins.open('" + MARKER_FILE + "', 'w')"),
    Snippet("from_json_import_codecs", "from json import codecs\ncodecs.open('" + MARKER_FILE + "', 'w')"),
    Snippet("json_codecs_attribute", "import json\njson.codecs.open('" + MARKER_FILE + "', 'w')"),
    Snippet("datetime_sys", "import datetime\nprint(datetime.sys.modules['os'])"),
    Snippet("random_private_os", "import random\nprint(random._os)"),
    Snippet("import_typing", "import typing\nprint(typing.get_type_hints)"),
    Snippet("import_pickle", "import pickle\npickle.loads(b'cos\\nsystem\\n(S\"id\"\\ntR.')"),
    Snippet("import_gc", "import gc\nprint(gc.get_objects()[:1])"),
    # --- introspection escapes -------------------------------------------------------------------------------
    Snippet("subclasses", "print(().__class__.__bases__[0].__subclasses__())"),
    Snippet("function_globals", "print((lambda: 0).__globals__)"),
    Snippet("generator_frame_globals", "g = (i for i in [1])\nprint(g.gi_frame.f_globals)"),
    Snippet("generator_frame_back", _lines(
        "def gen():", "    yield 1", "g = gen()", "next(g)", "print(g.gi_frame.f_back)",
    )),
    Snippet("traceback_frame", _lines(
        "try:", "    1 / 0", "except Exception as error:", "    print(error.__traceback__.tb_frame.f_globals)",
    )),
    Snippet("match_class_dunder_attribute", _lines(
        "match print:", "    case object(__self__=owner):", "        print(owner)",
    )),
    Snippet("type_mro", "print(type(1).mro())"),
    Snippet("operator_attrgetter", "import operator\nprint(operator.attrgetter('__globals__')(print))"),
    Snippet("operator_methodcaller", "import operator\nprint(operator.methodcaller('__reduce__')(print))"),
    Snippet("string_formatter_get_field", _lines(
        "import string", "print(string.Formatter().get_field('0.__globals__', [print], {}))",
    )),
    Snippet("functools_update_wrapper", _lines(
        "import functools", "stolen = {}", "holder = type('Holder', (), {'__globals__': stolen})",
        "functools.update_wrapper(holder(), print, assigned=(), updated=('__globals__',))",
    )),
    Snippet("enum_convert_reads_a_module_by_name", _lines(
        "import re", "flags = re.RegexFlag._convert_('Stolen', 'os', lambda name: True)",
    )),
    Snippet("format_dunder_is_only_a_string", "print('{0.__class__}'.format(1))", harmless=True),
    Snippet("format_globals_text_only", _lines(
        "def f():", "    pass", "print(isinstance('{0.__globals__}'.format(f), str))",
    ), harmless=True),
    # --- refused builtins ------------------------------------------------------------------------------------
    Snippet("getattr", "print(getattr(print, '__globals__'))"),
    Snippet("eval", "eval('1 + 1')"),
    Snippet("exec", "exec('import os')"),
    Snippet("compile", "compile('1', 'x', 'eval')"),
    Snippet("globals", "print(globals())"),
    Snippet("vars", "print(vars())"),
    Snippet("input", "input()"),
    Snippet("help", "help()"),
    Snippet("memoryview", "memoryview(b'abc')"),
    # --- leaving the step early ------------------------------------------------------------------------------
    Snippet("sys_exit", "import sys\nsys.exit(0)"),
    Snippet("exit_call", "exit()"),
    Snippet("raise_system_exit", "raise SystemExit(3)"),
    Snippet("raise_keyboard_interrupt", "raise KeyboardInterrupt"),
    Snippet("raise_base_exception", "raise BaseException('out')"),
    # --- output and misbehaving objects ----------------------------------------------------------------------
    Snippet("hundred_megabyte_print", "print('x' * 100_000_000)", harmless=True),
    Snippet("repr_raises_when_printed", _lines(
        "class Bad:", "    def __repr__(self):", "        raise ValueError('no repr')", "print([Bad()])",
    )),
    Snippet("str_raises_when_printed", _lines(
        "class Bad:", "    def __str__(self):", "        raise ValueError('no str')", "print(Bad())",
    )),
    Snippet("del_raises", _lines(
        "class Bad:", "    def __del__(self):", "        raise ValueError('no del')", "x = Bad()", "del x",
    )),
    Snippet("exception_whose_str_raises", _lines(
        "class Weird(Exception):", "    def __str__(self):", "        raise ValueError('no message')", "raise Weird()",
    )),
    # --- the apis object -------------------------------------------------------------------------------------
    Snippet("del_apis_then_use", "del apis\napis.wallet.show_balance()"),
    Snippet("overwrite_apis_and_print", "apis = None\nprint = None\nprint(apis)"),
    Snippet("private_app", "apis._private()"),
    Snippet("private_api", "apis.wallet._x()"),
    Snippet("apis_dunder_dict", "print(type(apis).__dict__)"),
    Snippet("api_call_flood", "for i in range(1000):\n    apis.wallet.show_balance()"),
    Snippet("api_arguments_too_large", "apis.wallet.show_balance(note='x' * 2_000_000)"),
    Snippet("api_arguments_not_json", "apis.wallet.show_balance(note=object())"),
    # --- code the parser or compiler chokes on ---------------------------------------------------------------
    Snippet("very_long_code", "x = 1\n" * 5000),
    Snippet("syntax_error", "def f(:\n    pass"),
    Snippet("null_bytes", "x = 1\x00\nprint(x)"),
    Snippet("deeply_nested_unary", "-" * 19_000 + "1"),
    Snippet("deeply_nested_parentheses", "(" * 5_000 + ")" * 5_000),
    Snippet("deeply_nested_attributes", "x" + ".a" * 6_000),
    Snippet("deeply_nested_lambdas", "f = " + "lambda: " * 2_400 + "0"),
]
