"""The parent side of the sandbox: one confined worker process per episode, whose API calls it serves."""
from __future__ import annotations

import io
import json
import multiprocessing
import os
import signal
import time
from datetime import datetime
from multiprocessing import context, forkserver, popen_forkserver, reduction, spawn, util
from typing import Any, Callable

from helpers.sandbox import worker
from helpers.sandbox.limits import Limits
from helpers.sandbox.policy import FAILED, check_code
from helpers.sandbox.result import ApiCall, ErrorKind, StepResult

GRACE_SECONDS = 1.0  # beyond the step's wall limit, for the worker's own timer to end the step first
STARTUP_SECONDS = 30.0  # the first Sandbox also starts the forkserver, which can be slow on a loaded machine
DEATH_REPORT_SECONDS = 2.0  # how long to wait for a dead worker's exit status
MAX_WORKER_MESSAGE_BYTES = 4 * 1024 * 1024
EXTRA_OBSERVATION_CHARS = 10_000  # room for the error report beyond the captured output

# Only tests turn this off, to show that the limits, the empty root and the uid drop hold on their own.
INSTALL_SYSCALL_FILTER = True

ApiHandler = Callable[[str, str, list, dict], Any]

# Workers are forked from a small forkserver that has imported only the worker module, never from the
# parent, which may hold torch, CUDA state, threads, or secrets in memory. This sets the preload list of
# the process-wide forkserver; it takes effect when the forkserver starts, i.e. on the first Sandbox.
_FORKSERVER = multiprocessing.get_context("forkserver")
_FORKSERVER.set_forkserver_preload([worker.__name__])


class _WorkerPopen(popen_forkserver.Popen):
    """The forkserver launcher minus one thing: it does not tell the child to re-run the parent's __main__
    (multiprocessing does so to find pickled functions; a training script's __main__ would import torch
    into every worker). Otherwise the same as CPython 3.11's `popen_forkserver.Popen._launch`."""

    def _launch(self, process_obj):
        preparation = spawn.get_preparation_data(process_obj._name)
        preparation.pop("init_main_from_name", None)
        preparation.pop("init_main_from_path", None)
        buffer = io.BytesIO()
        context.set_spawning_popen(self)
        try:
            reduction.dump(preparation, buffer)
            reduction.dump(process_obj, buffer)
        finally:
            context.set_spawning_popen(None)
        self.sentinel, write_end = forkserver.connect_to_new_process(self._fds)
        parent_write_end = os.dup(write_end)  # the child watches it to notice that the parent is gone
        self.finalizer = util.Finalize(self, util.close_fds, (parent_write_end, self.sentinel))
        with open(write_end, "wb", closefd=True) as pipe:
            pipe.write(buffer.getbuffer())
        self.pid = forkserver.read_signed(self.sentinel)


class _WorkerProcess(context.ForkServerProcess):
    @staticmethod
    def _Popen(process_obj):
        return _WorkerPopen(process_obj)


class _WorkerLost(Exception):
    """The worker died or broke the protocol; the message says how, for the observation."""


def _api_error_type() -> type[Exception]:
    # Imported late: this package is imported by the forkserver, which must stay free of the world's models.
    from helpers.world.errors import ApiError
    return ApiError


class Sandbox:
    """A persistent Python namespace for one episode, in a confined process; `apis` calls come back here."""

    def __init__(self, api_handler: ApiHandler, now: datetime | None = None, limits: Limits = Limits(),
                 seed: int = 0):
        self._handler = api_handler
        self.limits = limits
        self._ended: str | None = None  # why no more code can run
        self._process: _WorkerProcess | None = None
        self._connection, worker_end = multiprocessing.Pipe()
        config = {
            "now": now.isoformat() if now is not None else None, "seed": seed,
            "step_wall_seconds": limits.step_wall_seconds, "step_cpu_seconds": limits.step_cpu_seconds,
            "memory_mb": limits.memory_mb, "output_chars": limits.output_chars,
            "syscall_filter": INSTALL_SYSCALL_FILTER,
        }
        process = _WorkerProcess(target=worker.serve, args=(worker_end, json.dumps(config)), daemon=True,
                                 name="sandbox-worker")
        process.authkey = os.urandom(32)  # not the parent's key, which would open its multiprocessing managers
        try:
            process.start()
        finally:
            worker_end.close()
        self._process = process
        try:
            greeting = self._receive(time.monotonic() + STARTUP_SECONDS)
        except _WorkerLost as exc:
            greeting = {"op": "failed", "error": str(exc)}
        if not greeting or greeting.get("op") != "ready":
            self.close()
            reason = greeting.get("error", "no answer") if greeting else "no answer in time"
            raise RuntimeError(f"The sandbox worker could not start: {reason}")

    # --- public interface ------------------------------------------------------------------------------

    def execute(self, code: str) -> StepResult:
        """Run one step of model code: whether it succeeded, why not, what it printed and called, and the
        observation the model reads next (output, or output then an error report)."""
        if self._ended is not None:
            return self._ended_result()
        refusal = check_code(code, self.limits.code_chars)
        if refusal is not None:
            return refusal
        return self._execute_without_static_checks(code)

    @property
    def alive(self) -> bool:
        return self._ended is None and self._process is not None and self._process.exitcode is None

    def close(self) -> None:
        if getattr(self, "_ended", None) is None:
            self._ended = "the sandbox was closed"
        connection, self._connection = getattr(self, "_connection", None), None
        if connection is not None:
            connection.close()
        process, self._process = getattr(self, "_process", None), None
        if process is not None:
            _stop(process)

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # during interpreter shutdown modules may already be gone
            pass

    # --- one step ------------------------------------------------------------------------------------

    def _execute_without_static_checks(self, code: str) -> StepResult:
        """The process layer alone; tests use it to show that the worker holds even when the checks are bypassed."""
        if self._ended is not None:
            return self._ended_result()
        try:
            return self._run_step(code)
        except BaseException:  # e.g. KeyboardInterrupt here: the worker is mid-step and cannot be trusted again
            self._end("the step was interrupted")
            raise

    def _run_step(self, code: str) -> StepResult:
        deadline = time.monotonic() + self.limits.step_wall_seconds + GRACE_SECONDS
        calls: list[ApiCall] = []
        try:
            self._connection.send_bytes(json.dumps({"op": "exec", "code": code}).encode())
            while True:
                message = self._receive(deadline)
                if message is None:
                    self._end("a step exceeded its time limit")
                    sentence = (f"The step exceeded its time limit of {self.limits.step_wall_seconds:g} seconds "
                                f"and was stopped; the episode has ended.")
                    return StepResult.failure(ErrorKind.TIME_LIMIT, sentence, f"{FAILED} {sentence}",
                                              api_calls=tuple(calls), episode_ended=True)
                if message.get("op") == "call":
                    reply, call = self._serve_call(message, len(calls))
                    calls.append(call)
                    self._connection.send_bytes(reply)
                elif message.get("op") == "done":
                    return self._step_result(message.get("result"), tuple(calls))
                else:
                    raise _WorkerLost("the sandbox process sent an invalid message")
        except (_WorkerLost, OSError) as exc:
            reason = str(exc) if isinstance(exc, _WorkerLost) else self._death_description()
            self._end(reason)
            sentence = f"{reason[0].upper()}{reason[1:]}; the episode has ended."
            return StepResult.failure(ErrorKind.SANDBOX_DIED, sentence, f"{FAILED} {sentence}",
                                      api_calls=tuple(calls), episode_ended=True)

    def _step_result(self, result, calls: tuple[ApiCall, ...]) -> StepResult:
        """The worker's report of a step, checked field by field: the worker runs untrusted code."""
        fields = {"ok": bool, "observation": str, "output": str, "error_message": str}
        if not isinstance(result, dict) or any(not isinstance(result.get(k), t) for k, t in fields.items()):
            raise _WorkerLost("the sandbox process sent an invalid message")
        kind = result.get("error_kind")
        if result["ok"] != (kind is None) or (kind is not None and kind not in ErrorKind._value2member_map_):
            raise _WorkerLost("the sandbox process sent an invalid message")
        return StepResult(result["ok"], self._clean(result["observation"]), self._clean(result["output"]),
                          ErrorKind(kind) if kind is not None else None, self._clean(result["error_message"]), calls)

    def _receive(self, deadline: float) -> dict | None:
        """The worker's next message, or None if the deadline passes first."""
        if not self._connection.poll(max(0.0, deadline - time.monotonic())):
            return None
        try:
            raw = self._connection.recv_bytes(MAX_WORKER_MESSAGE_BYTES)
        except OSError as exc:
            if exc.errno is None:  # multiprocessing's "bad message length": more than we accept
                raise _WorkerLost("the sandbox process sent an oversized message") from None
            raise _WorkerLost(self._death_description()) from None
        except EOFError:
            raise _WorkerLost(self._death_description()) from None
        try:
            message = json.loads(raw)
        except (ValueError, RecursionError):  # RecursionError: a deeply nested document
            message = None
        if not isinstance(message, dict):
            raise _WorkerLost("the sandbox process sent an invalid message")
        return message

    def _serve_call(self, message: dict, calls_so_far: int) -> tuple[bytes, ApiCall]:
        """Run one API call for the worker in this process, where the apps live: the JSON reply, and the call."""
        app, api, args, kwargs = (message.get(key) for key in ("app", "api", "args", "kwargs"))
        call = ApiCall(str(app)[:100], str(api)[:100], ok=False)
        limit = self.limits.api_calls_per_step
        if calls_so_far >= limit:
            return _reply({"api_error": f"API call limit reached: at most {limit} API calls are allowed per step; "
                                        f"make the remaining calls in the next step."}), call
        well_formed = (isinstance(app, str) and isinstance(api, str) and isinstance(args, list)
                       and isinstance(kwargs, dict) and not app.startswith("_") and not api.startswith("_"))
        if not well_formed:
            return _reply({"api_error": "Malformed API call."}), call
        try:
            result = self._handler(app, api, args, kwargs)
        except _api_error_type() as exc:
            return _reply({"api_error": str(exc.message)}), call
        except Exception as exc:
            return _reply({"internal_error": f"{type(exc).__name__}: {exc}"}), call
        try:
            return _reply({"result": result}), ApiCall(app, api, ok=True)
        except (TypeError, ValueError, RecursionError) as exc:
            return _reply({"internal_error": f"{type(exc).__name__}: the API result is not JSON: {exc}"}), call

    def _clean(self, observation: str) -> str:
        observation = observation[:self.limits.output_chars + EXTRA_OBSERVATION_CHARS]
        return observation.encode("utf-8", "replace").decode("utf-8")  # lone surrogates cannot be tokenised

    # --- ending --------------------------------------------------------------------------------------

    def _end(self, reason: str) -> None:
        self._ended = reason
        if self._process is not None and self._process.exitcode is None:
            self._process.kill()

    def _ended_result(self) -> StepResult:
        sentence = f"The episode has ended ({self._ended}); no more code can run."
        return StepResult.failure(ErrorKind.EPISODE_ENDED, sentence, f"{FAILED} {sentence}", episode_ended=True)

    def _death_description(self) -> str:
        self._process.join(DEATH_REPORT_SECONDS)
        code = self._process.exitcode
        if code is None:
            return "the sandbox process stopped responding"
        if code < 0:
            try:
                how = f"killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"killed by signal {-code}"
        else:
            how = f"exit code {code}"
        return f"the sandbox process died ({how})"


def _reply(message: dict) -> bytes:
    return json.dumps(message, default=str).encode()


def _stop(process: _WorkerProcess) -> None:
    """Kill the worker without waiting: the forkserver reaps it, and multiprocessing forgets it on a later start."""
    if process.exitcode is None:  # checked first: once reaped, the pid may belong to another process
        process.kill()
