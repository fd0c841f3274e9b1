#!/usr/bin/env python3
"""Print N free TCP ports on 127.0.0.1 (for starting a server on loopback from a script)."""

from __future__ import annotations

import socket
import sys


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    probes = []
    for _ in range(count):  # held open together, so the ports differ
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        probes.append(probe)
    print(*(p.getsockname()[1] for p in probes))
    for probe in probes:
        probe.close()


if __name__ == "__main__":
    main()
