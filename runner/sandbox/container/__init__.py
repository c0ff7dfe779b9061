"""Programs that run inside containers, not in the runner: `launch.sh` (every call), `warm.py` (warm mode)
and `egress_proxy.py` (the egress proxy). They use only the base image's sh and Python standard library;
the image builder copies the first two into each tool image's /pocket, the sandbox runs the third."""
