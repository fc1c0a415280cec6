"""The kubelet and kubectl stand-ins: enough to report their version, as `kubelet --version` does.

The lab supervisor plays the kubelet's part for real (static pods, node status); this executable
only answers version questions, which is what upgrade tooling asks of an installed binary.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--tool", required=True)
    parser.add_argument("--binary-version", required=True)
    parser.add_argument("--node-root")
    known, rest = parser.parse_known_args(argv)
    version = f"v{known.binary_version}"
    if known.tool == "kubelet" and ("--version" in rest or rest[:1] == ["version"]):
        print(f"Kubernetes {version}")
        return 0
    if known.tool == "kubectl" and rest[:1] == ["version"]:
        print(f"Client Version: {version}")
        return 0
    print(f"{known.tool} {version}: this is the upgrader lab's stand-in; it only reports its version", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
