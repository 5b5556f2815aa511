"""Confining a fresh worker process before model code runs: no files, no network, no children, bounded resources."""
from __future__ import annotations

import ctypes
import math
import os
import platform
import resource
import signal
import struct
import sys
import tempfile
from multiprocessing.connection import Connection

CHANNEL_FD = 3  # the only descriptor kept besides 0-2, which point at /dev/null
NOBODY = 65534
# Each worker gets a uid of its own, so that one worker cannot signal or trace another; 'nobody' is the
# fallback where the user namespace maps fewer uids.
FIRST_PRIVATE_UID = 2_000_000_000
# The CPU hard limit is a whole-episode backstop (SIGKILL), set once because an unprivileged process
# cannot raise a hard limit again; the per-step CPU limit is the soft limit, moved before each step.
EPISODE_CPU_STEPS = 30

# Resolve the temporary directory now (it probes the disk) so that workers only create one directory.
TEMPORARY_ROOT = tempfile.gettempdir()


def take_channel(connection: Connection) -> Connection:
    """Move the connection to CHANNEL_FD, on a descriptor no other object owns."""
    fd = os.dup(connection.fileno())
    connection.close()
    if fd != CHANNEL_FD:
        os.dup2(fd, CHANNEL_FD, inheritable=False)
        os.close(fd)
    return Connection(CHANNEL_FD)


def confine(memory_mb: int, step_cpu_seconds: float, syscall_filter: bool = True) -> int:
    """Lock this process down (its channel already on CHANNEL_FD); returns the CPU hard limit in seconds.

    The order matters: files are closed and the baseline measured while /proc is still reachable; the
    root is emptied and limits set while still privileged; the syscall filter comes last.
    """
    os.environ.clear()  # the parent's environment may hold credentials
    for signal_number in (signal.SIGINT, signal.SIGXFSZ):
        signal.signal(signal_number, signal.SIG_IGN)  # SIGXFSZ: a write beyond RLIMIT_FSIZE fails instead
    _point_standard_streams_at_dev_null()
    os.closerange(CHANNEL_FD + 1, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    baseline_bytes = _address_space_bytes()
    _enter_empty_root()
    cpu_hard_seconds = math.ceil(_cpu_seconds_used() + step_cpu_seconds * EPISODE_CPU_STEPS) + 1
    _set_limit(resource.RLIMIT_CORE, 0)
    _set_limit(resource.RLIMIT_FSIZE, 0)
    _set_limit(resource.RLIMIT_NOFILE, CHANNEL_FD + 1)  # every descriptor number is taken: nothing new opens
    if baseline_bytes is not None:
        _set_limit(resource.RLIMIT_AS, baseline_bytes + memory_mb * 1024 * 1024)
    _set_limit(resource.RLIMIT_CPU, cpu_hard_seconds)
    _drop_privileges()
    _set_limit(resource.RLIMIT_NPROC, 0)  # fork fails; root would ignore this, hence the uid drop first
    if syscall_filter:
        install_syscall_filter()
    return cpu_hard_seconds


def _point_standard_streams_at_dev_null() -> None:
    dev_null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(dev_null, fd)
    os.close(dev_null)


def _address_space_bytes() -> int | None:
    """This process's virtual size (the first field of /proc/self/statm), or None without /proc (macOS)."""
    try:
        fd = os.open("/proc/self/statm", os.O_RDONLY)
    except OSError:
        return None
    try:
        return int(os.read(fd, 200).split()[0]) * os.sysconf("SC_PAGE_SIZE")
    finally:
        os.close(fd)


def _enter_empty_root() -> None:
    """Work in a fresh directory that is deleted at once, so nothing can be created in it; as root, make it
    the filesystem root too, so no other path exists for this process."""
    directory = os.path.join(TEMPORARY_ROOT, f"sandbox-{os.getpid()}-{os.urandom(8).hex()}")
    os.mkdir(directory, 0o700)
    os.chdir(directory)
    os.rmdir(directory)
    if os.geteuid() == 0:
        os.chroot(".")


def _cpu_seconds_used() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _set_limit(which: int, value: int) -> None:
    resource.setrlimit(which, (value, value))


def _drop_privileges() -> None:
    if os.geteuid() != 0:
        return
    os.setgroups([])
    for uid in (FIRST_PRIVATE_UID + os.getpid(), NOBODY):
        try:
            os.setgid(uid)  # as root, these set the real, effective and saved ids alike
            os.setuid(uid)
            return
        except OSError:
            continue
    raise RuntimeError("could not drop root privileges in the sandbox worker")


# Syscalls refused with EPERM once model code may run (x86_64 numbers): opening or creating files, sockets,
# new processes and programs, signalling or tracing other processes, namespaces, and io_uring (which could
# perform the same operations without these syscalls).
DENIED_SYSCALLS_X86_64 = {
    "open": 2, "openat": 257, "openat2": 437, "creat": 85, "open_by_handle_at": 304, "name_to_handle_at": 303,
    "memfd_create": 319, "mknod": 133, "mknodat": 259, "mkdir": 83, "mkdirat": 258, "rmdir": 84,
    "unlink": 87, "unlinkat": 263, "rename": 82, "renameat": 264, "renameat2": 316, "link": 86, "linkat": 265,
    "symlink": 88, "symlinkat": 266, "chmod": 90, "fchmod": 91, "fchmodat": 268, "chown": 92, "fchown": 93,
    "lchown": 94, "fchownat": 260, "truncate": 76, "chdir": 80, "fchdir": 81, "chroot": 161,
    "socket": 41, "socketpair": 53, "connect": 42, "bind": 49, "listen": 50, "accept": 43, "accept4": 288,
    "fork": 57, "vfork": 58, "clone": 56, "clone3": 435, "execve": 59, "execveat": 322,
    "kill": 62, "tkill": 200, "tgkill": 234, "rt_sigqueueinfo": 129, "rt_tgsigqueueinfo": 297,
    "pidfd_open": 434, "pidfd_send_signal": 424, "pidfd_getfd": 438, "ptrace": 101,
    "process_vm_readv": 310, "process_vm_writev": 311, "unshare": 272, "setns": 308, "mount": 165,
    "umount2": 166, "pivot_root": 155, "bpf": 321, "perf_event_open": 298, "userfaultfd": 323,
    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "keyctl": 250, "add_key": 248,
    "request_key": 249,
}
_AUDIT_ARCH_X86_64 = 0xC000003E
_X32_SYSCALL_BIT = 0x40000000
_BPF_LOAD_WORD, _BPF_JUMP_IF_EQUAL, _BPF_JUMP_IF_AT_LEAST, _BPF_RETURN = 0x20, 0x15, 0x35, 0x06
_SECCOMP_RET_ALLOW, _SECCOMP_RET_ERRNO, _SECCOMP_RET_KILL_PROCESS = 0x7FFF0000, 0x00050000, 0x80000000
_PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 38, 22, 2
_EPERM = 1


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]


def _syscall_filter_program() -> list[tuple[int, int, int, int]]:
    """A classic-BPF seccomp program: kill foreign-ABI calls, refuse the denied syscalls, allow the rest."""
    denied = sorted(set(DENIED_SYSCALLS_X86_64.values()))
    program = [
        (_BPF_LOAD_WORD, 0, 0, 4),  # seccomp_data.arch
        (_BPF_JUMP_IF_EQUAL, 1, 0, _AUDIT_ARCH_X86_64),
        (_BPF_RETURN, 0, 0, _SECCOMP_RET_KILL_PROCESS),
        (_BPF_LOAD_WORD, 0, 0, 0),  # seccomp_data.nr
    ]
    refuse_index = len(program) + 1 + len(denied) + 1
    program.append((_BPF_JUMP_IF_AT_LEAST, refuse_index - len(program) - 1, 0, _X32_SYSCALL_BIT))
    for number in denied:
        program.append((_BPF_JUMP_IF_EQUAL, refuse_index - len(program) - 1, 0, number))
    program.append((_BPF_RETURN, 0, 0, _SECCOMP_RET_ALLOW))
    program.append((_BPF_RETURN, 0, 0, _SECCOMP_RET_ERRNO | _EPERM))
    return program


# Built once, in the forkserver, so that a worker only makes the two prctl calls.
_FILTER_AVAILABLE = sys.platform.startswith("linux") and platform.machine() == "x86_64"
if _FILTER_AVAILABLE:
    _FILTER_INSTRUCTIONS = _syscall_filter_program()
    _FILTER_BYTES = ctypes.create_string_buffer(
        b"".join(struct.pack("HBBI", *instruction) for instruction in _FILTER_INSTRUCTIONS))
    _FILTER_PROGRAM = _SockFprog(len(_FILTER_INSTRUCTIONS), ctypes.cast(_FILTER_BYTES, ctypes.c_char_p))
    _LIBC = ctypes.CDLL(None, use_errno=True)
    _LIBC.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]


def install_syscall_filter() -> bool:
    """Install the seccomp filter on Linux x86_64; returns False where it is not available."""
    if not _FILTER_AVAILABLE:
        return False
    if _LIBC.prctl(_PR_SET_NO_NEW_PRIVS, 1, None, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    if _LIBC.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.addressof(_FILTER_PROGRAM), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP) failed")
    return True
