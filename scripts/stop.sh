#!/bin/sh
# make stop: TERM to qmail-send (it finishes deliveries under way; its helpers,
# the queue service and the logger follow) and to the SMTP listener.
run=/run/pyqmail
for name in smtpd tcpserver qmail-send; do
  pidfile=$run/$name.pid
  [ -s "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  # the session leader started by run.sh: its process group holds the listener
  # (dash's kill takes no --: -TERM, then the negative pid)
  kill -TERM "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  i=0
  while kill -0 "$pid" 2>/dev/null && [ $i -lt 300 ]; do i=$((i + 1)); sleep 0.1; done
  rm -f "$pidfile"
  echo "stopped $name"
done
