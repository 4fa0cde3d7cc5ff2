#!/bin/sh
# make stop: TERM to the SMTP and POP3 listeners' process groups, and TERM to qmail-send
# alone (as qmail's docs say): it lets deliveries under way finish, then its
# helpers, the queue service and the logger see EOF and exit by themselves.
run=/run/pyqmail
stop() {  # name, what to signal
  pidfile=$run/$1.pid
  [ -s "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  kill -TERM "$2$pid" 2>/dev/null || true
  i=0
  while kill -0 "$pid" 2>/dev/null && [ $i -lt 600 ]; do i=$((i + 1)); sleep 0.1; done
  rm -f "$pidfile"
  echo "stopped $1"
}
stop smtpd -          # qmail-tcpsrv or tcpserver, as scripts/run.sh started it
stop tcpserver -      # the pid file of older versions of run.sh
stop pop3d -
if [ -d /run/systemd/system ] && systemctl is-active --quiet pyqmail.service 2>/dev/null; then
  systemctl stop pyqmail.service && echo "stopped qmail-send (systemd)"
fi
stop qmail-send ""
