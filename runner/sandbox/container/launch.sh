# pocket-runner launcher: POSIX sh, so it runs in any image that has /bin/sh (python, node, golang...).
#
# The container starts with this script waiting on stdin, before any call exists (the runner keeps a
# few such containers ready). For a call, the runner writes `export NAME='value'` lines (values
# shell-quoted by the runner, no newlines), then the sentinel line carrying the body's length in bytes,
# then the body. The first line sets `pocket_nonce` (not exported: the tool never sees it).
#
# The body is framed by its length, not by the end of stdin: closing stdin is not possible on every
# transport (Kubernetes' older attach protocol cannot), so nothing here waits for EOF. `read` takes stdin
# one byte at a time on a pipe, so the body is left unread for `head -c`, which hands exactly its bytes
# to the tool through a pipe: the tool reads the body on its stdin, then EOF, like hyperpocket's
# `/bin/sh -c RUN`.
while IFS= read -r pocket_line; do
  case "$pocket_line" in
    "__pocket_body_follows__ "*)
      pocket_size=${pocket_line#* }
      unset pocket_line
      case "$pocket_size" in
        "" | *[!0-9]*)
          echo "pocket launcher: the body's length is not a number" >&2
          exit 125
          ;;
      esac
      # The build ran with HOME=/home/pocket, kept when it put something there (browsers, caches, config):
      # the tool finds it where the build left it (read-only, as the whole image is; /tmp is writable).
      if [ -d /home/pocket ]; then export HOME=/home/pocket; fi
      head -c "$pocket_size" | /bin/sh /pocket/entry.sh
      pocket_status=$?
      # The exit status, on both streams after everything the tool wrote to them (each stream keeps its
      # order), marked with the call's nonce: the runner answers now instead of waiting ~25 ms for the
      # engine to notice the container's exit and report it.
      printf '\036%s %s\n' "$pocket_nonce" "$pocket_status"
      printf '\036%s %s\n' "$pocket_nonce" "$pocket_status" >&2
      # After a success, stay alive (idle) until the runner removes the container in the background:
      # a container's exit tears down its cgroup and namespaces at once, work that would otherwise take
      # CPU from calls still running. But hold nothing of the call meanwhile, also if the runner died and
      # never removes it: every process the tool left is killed (kill -1 spares pid 1, this launcher), and
      # the wait has an empty environment and ends by itself. A failure exits now, so the engine reports
      # how the tool died.
      if [ "$pocket_status" -eq 0 ]; then
        kill -9 -1 2>/dev/null
        exec env -i sleep 600 2>/dev/null
      fi
      exit "$pocket_status"
      ;;
  esac
  eval "$pocket_line"
done
echo "pocket launcher: stdin closed before the body" >&2
exit 125
