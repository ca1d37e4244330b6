"""A stand-in for a server process, to cover fault paths the real vLLM shows only sometimes.

Behaviour by arguments (like jupyter_client's tests/signalkernel.py):
  --ignore-term        ignore SIGTERM (vLLM's API server stuck in "Waiting for connections to close")
  --tracker            start a child in the same group that ignores SIGTERM (vLLM's resource tracker)

Where the imitated behaviour comes from:
- --ignore-term: vLLM's API server runs on uvicorn, whose Server.shutdown (uvicorn/server.py, as installed
  in the rig's venv) logs "Waiting for connections to close. (CTRL+C to force quit)" and loops while a
  connection is open; handle_exit sets force_exit only for a second SIGINT, so further SIGTERMs change
  nothing. vllm-project/vllm-omni#3683 (https://github.com/vllm-project/vllm-omni/issues/3683) reports a
  vLLM server process still there 10 minutes after SIGTERM while it was handling a request. Ignoring
  SIGTERM outright is a simplification of that (no connection needed to get stuck).
- --tracker: CPython's multiprocessing resource tracker, which vLLM's engine processes start, ignores
  SIGINT and SIGTERM (Lib/multiprocessing/resource_tracker.py, main(): signal.signal(SIGTERM, SIG_IGN))
  and lives in the process group of the program that started it. It exits when its pipe closes; this
  stand-in's child does not, which is a guess at the worst case (a tracker whose parent was SIGKILLed
  while it still held the pipe's other end through a grandchild).
- --spam and the stderr line: no real behaviour imitated (a log big enough to test rotation and tails).
  --spam BYTES         write that many bytes of log lines first
  --exit CODE          exit with CODE after --after seconds (default: run until signalled)
"""
import argparse
import os
import signal
import subprocess
import sys
import time

p = argparse.ArgumentParser()
p.add_argument("--ignore-term", action="store_true")
p.add_argument("--tracker", action="store_true")
p.add_argument("--spam", type=int, default=0)
p.add_argument("--exit", type=int, default=None)
p.add_argument("--after", type=float, default=0.2)
args = p.parse_args()

if args.ignore_term:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if args.tracker:
    subprocess.Popen([sys.executable, "-c", "import signal,time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                      "print('tracker up', flush=True)\ntime.sleep(3600)"])
print(f"stand-in pid {os.getpid()} up", flush=True)
written = 0
line = b"x" * 99 + b"\n"
while written < args.spam:
    sys.stdout.buffer.write(line)
    written += len(line)
sys.stdout.buffer.write(b"last spam line\n")
sys.stdout.flush()
print("stand-in error on stderr", file=sys.stderr, flush=True)
if args.exit is not None:
    time.sleep(args.after)
    sys.exit(args.exit)
while True:
    time.sleep(1)
