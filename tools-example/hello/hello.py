"""The smallest pocket tool: reads the body as JSON on stdin, prints the result as JSON on stdout."""

import json
import sys


def greet(body: dict) -> dict:
    return {"greeting": f"Hello, {body['name']}!"}


if __name__ == "__main__":
    print(json.dumps(greet(json.load(sys.stdin))))
