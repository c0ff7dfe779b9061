import json
import os
import sys

CALLS = []


def handle(body):
    CALLS.append(1)
    print("a line for stderr", file=sys.stderr)
    return {"body": body, "greeting": os.environ.get("GREETING"), "calls": len(CALLS), "pid": os.getpid()}


if __name__ == "__main__":
    print("a line for stderr", file=sys.stderr)
    print(json.dumps({"body": json.load(sys.stdin), "greeting": os.environ.get("GREETING"), "calls": 1}))
