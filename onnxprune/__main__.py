import signal

from .cli import main

code = main()
# The run is over, its outputs written or not: a Ctrl-C while Python shuts down (0.2 s with
# onnxruntime and OpenVINO loaded) would kill it with SIGINT and hide the exit code.
signal.signal(signal.SIGINT, signal.SIG_IGN)
raise SystemExit(code)
