import json

results = {}
for path in ("/tool/owned.txt", "/etc/owned.txt", "/owned.txt", "/usr/local/lib/owned.txt", "/tmp/ok.txt"):
    try:
        with open(path, "w") as handle:
            handle.write("owned")
        results[path] = "written"
    except OSError as exc:
        results[path] = type(exc).__name__
print(json.dumps(results))
