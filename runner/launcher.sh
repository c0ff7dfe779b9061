# pocket-runner launcher: POSIX sh, so it runs in any image that has /bin/sh (python, node, golang...).
#
# The container starts with this script waiting on stdin, before any call exists (the runner keeps a
# few such containers ready). For a call, the runner writes `export NAME='value'` lines (values
# shell-quoted by the runner, no newlines), then the sentinel line, then the request body. `read`
# takes stdin one byte at a time on a pipe, so everything after the sentinel is left unread for the
# tool, which gets the body as its stdin, exactly like hyperpocket's `/bin/sh -c RUN`.
while IFS= read -r pocket_line; do
  if [ "$pocket_line" = "__pocket_body_follows__" ]; then
    unset pocket_line
    exec /bin/sh /pocket/entry.sh
  fi
  eval "$pocket_line"
done
echo "pocket launcher: stdin closed before the body" >&2
exit 125
