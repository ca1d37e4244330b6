"""A stand-in for a server process, to cover fault paths the real vLLM shows only sometimes.

Behaviour by arguments (like jupyter_client's tests/signalkernel.py):
  --ignore-term        ignore SIGTERM (vLLM's API server stuck in "Waiting for connections to close")
  --tracker            start a child in the same group that ignores SIGTERM (vLLM's resource tracker)
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
