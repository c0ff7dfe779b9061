import json
import os
import stat

sockets = []
for root in ("/run", "/var/run", "/tmp", "/"):
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath.startswith(("/proc", "/sys")):
            dirnames[:] = []
            continue
        for name in filenames:
            path = os.path.join(dirpath, name)
            try:
                if stat.S_ISSOCK(os.lstat(path).st_mode):
                    sockets.append(path)
            except OSError:
                pass
        if root == "/":
            dirnames[:] = [d for d in dirnames if d not in ("proc", "sys", "usr")]
mounts = open("/proc/self/mounts").read()
print(
    json.dumps(
        {
            "sockets": sorted(set(sockets)),
            "docker_in_mounts": "docker.sock" in mounts,
            "DOCKER_HOST": os.environ.get("DOCKER_HOST"),
        }
    )
)
