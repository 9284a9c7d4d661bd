"""The `nismooth` command of the wheel: the binary's command line, run in
this process by the native module."""
import signal
import sys

from . import _native


def main():
    # nismooth drains on SIGTERM, SIGINT and SIGUSR1 itself; Python's own
    # SIGINT handler would raise KeyboardInterrupt once the run returned.
    for name in ("SIGINT", "SIGTERM", "SIGUSR1"):
        signal.signal(getattr(signal, name), signal.SIG_DFL)
    sys.exit(_native.main(["nismooth", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
