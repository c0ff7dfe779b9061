import json
import os
import sys


def status():
    fields = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in ("CapEff", "CapPrm", "CapBnd", "NoNewPrivs", "Seccomp"):
                fields[key] = value.strip()
    return fields


def handle(body=None):
    return {"env": dict(os.environ), "uid": os.getuid(), "gid": os.getgid(), "status": status(), "cwd": os.getcwd()}


if __name__ == "__main__":
    sys.stdin.read()
    print(json.dumps(handle()))
