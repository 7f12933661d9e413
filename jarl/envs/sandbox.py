"""Run a snippet of Python in a separate, limited process (for tool-using host environments).

    result = run_python("sum(i * i for i in range(10))", Limits(wall_s=2.0))
    result.status, result.output          # ("ok", "285")

Every call starts a fresh `sys.executable -I -S` (isolated mode: no PYTHON* variables, no
user or site packages) with an empty environment, in a new empty temp dir that is deleted
afterwards. Before the snippet runs, the child limits itself with `resource.setrlimit`
(CPU seconds, address space, size of files it writes, no new processes, no core dumps)
and installs an audit hook (PEP 578) that refuses: sockets (any network), new processes
(subprocess, os.system, os.exec*, os.spawn*, os.fork, posix_spawn), ctypes, os.chdir,
links, and file access outside the temp dir (the standard library stays readable, for
imports). The parent kills the child's process group at the wall-clock limit and keeps
at most `max_output` bytes of its stdout and stderr. A snippet that is one expression
reports its repr, like the REPL; an exception reports its last line.

This is defence in depth, not a security boundary: the audit hook runs inside the same
interpreter as the snippet and root ignores RLIMIT_NPROC. For adversarial code add OS
isolation (user and network namespaces, seccomp; e.g. bubblewrap, nsjail or gVisor).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile

# The child's bootstrap. argv: cpu seconds, address-space bytes, file-size bytes, read-only roots.
_BOOT = r"""
import os, posixpath, resource, sys
cpu_s, memory, file_size = (int(a) for a in sys.argv[1:4])
for limit, soft, hard in ((resource.RLIMIT_CPU, cpu_s, cpu_s + 1), (resource.RLIMIT_AS, memory, memory),
                          (resource.RLIMIT_FSIZE, file_size, file_size), (resource.RLIMIT_NPROC, 0, 0),
                          (resource.RLIMIT_CORE, 0, 0)):
  resource.setrlimit(limit, (soft, hard))
code = sys.stdin.read()


def install(work, read_only):
  blocked_modules = {"socket", "_socket", "ssl", "_ssl", "select", "selectors", "ctypes", "_ctypes", "subprocess",
                     "_posixsubprocess", "multiprocessing", "_multiprocessing", "pty"}
  blocked = ("socket.", "subprocess.", "os.system", "os.exec", "os.spawn", "os.posix_spawn", "os.fork", "os.forkpty",
             "os.kill", "os.killpg", "os.chdir", "os.chroot", "os.symlink", "os.link", "pty.", "ctypes.",
             "resource.", "gc.get_")
  reads = ("os.listdir", "os.scandir")
  writes = ("os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.truncate", "os.utime",
            "os.chflags", "os.lchflags", "os.setxattr", "os.removexattr", "shutil.copyfile", "shutil.rmtree")
  norm, join, fsdecode = posixpath.normpath, posixpath.join, os.fsdecode
  write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

  def under(path, roots):
    if isinstance(path, int):  # an already open file descriptor
      return True
    if not isinstance(path, (str, bytes)):
      return False
    path = norm(join(work, fsdecode(path)))
    return any(path == r or path.startswith(r + "/") for r in roots)

  def hook(event, args):
    if event == "import" and args[0] in blocked_modules or event.startswith(blocked):
      raise PermissionError(f"sandbox: {f'import {args[0]}' if event == 'import' else event} is not allowed")
    if event == "open" or event in reads or event in writes:
      writing = event in writes or event == "open" and bool(args[2] & write_flags)
      if not under(args[0], (work,) if writing else (work,) + read_only):
        raise PermissionError(f"sandbox: {event} {args[0]!r} is outside the sandbox")

  sys.addaudithook(hook)


install(os.getcwd(), tuple(sys.argv[4:]))
del install, os, posixpath, resource, cpu_s, memory, file_size
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


@dataclasses.dataclass(frozen=True)
class Limits:
  """Resource limits of one sandboxed run."""
  wall_s: float = 2.0
  cpu_s: int = 2
  memory_mb: int = 256  # address space, so it also caps what the interpreter maps
  max_output: int = 2000  # bytes of stdout + stderr kept (and the most a written file may hold)


@dataclasses.dataclass(frozen=True)
class Result:
  """`status`: "ok", "error" (the snippet raised; `output` ends with the error), "timeout" (the
  wall-clock or the CPU limit), or "killed" (another signal); `output` is its (capped) stdout and stderr."""
  status: str
  output: str


def run_python(code: str, limits: Limits = Limits()) -> Result:
  """Run `code` in a fresh sandboxed interpreter; never raises for anything the code does."""
  root = os.path.realpath(tempfile.mkdtemp(prefix="jarl-sandbox-"))
  work = os.path.join(root, "work")
  os.mkdir(work)
  read_only = sorted({os.path.realpath(sysconfig.get_path(name)) for name in ("stdlib", "platstdlib")}
                     | {os.path.realpath(p) for p in sys.path if p.startswith(sys.base_prefix)})
  argv = [sys.executable, "-I", "-S", "-u", "-c", _BOOT, str(limits.cpu_s), str(limits.memory_mb << 20),
          str(limits.max_output + 1), *read_only]
  try:
    with open(os.path.join(root, "out"), "w+b") as out:
      child = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=out, stderr=out, cwd=work, env={},
                               start_new_session=True)
      try:
        child.communicate(code.encode("utf-8", "replace"), timeout=limits.wall_s)
        status = "ok" if child.returncode == 0 else "error" if child.returncode > 0 else "killed"
        if child.returncode == -signal.SIGXCPU:  # the CPU limit: a timeout too, whichever limit came first
          status = "cpu_timeout"
      except subprocess.TimeoutExpired:  # not reaped yet, so the group id is still the child's own
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        status = "timeout"
      out.seek(0)
      raw = out.read(limits.max_output + 1)
  finally:
    shutil.rmtree(root, ignore_errors=True)
  lines = [raw[:limits.max_output].decode("utf-8", "replace").rstrip("\n")]
  if len(raw) > limits.max_output:
    lines[0] += " [output cut]"
  if status == "timeout":
    lines.append(f"TimeoutError: no result after {limits.wall_s:g} s")
  elif status == "cpu_timeout":
    status = "timeout"
    lines.append(f"TimeoutError: CPU time limit of {limits.cpu_s} s")
  elif status == "killed":
    lines.append(f"killed by signal {signal.Signals(-child.returncode).name}")
  return Result(status, "\n".join(line for line in lines if line))
