#!/bin/sh
# make run: configure this host (only what is missing) and start pyqmail from
# QMAIL_HOME: the qmail-start tree delivering to ./Maildir/, qmail-smtpd on
# port 25 (IPv4 and IPv6) under qmail-tcpsrv, with 127. allowed to relay, and
# POP3 on port 110 (qmail-popup, pyqmail's checkpassword, qmail-pop3d Maildir).
# SMTPD_LISTENER=tcpserver uses the real tcpserver (IPv4, one exec per
# connection) with the same options instead.
# make stop (scripts/stop.sh) stops all three.  Logs: syslog through splogger when
# /dev/log exists, else /var/log/pyqmail/.
set -eu
Q=${1:?usage: run.sh QMAIL_HOME}
cd /
host=$(hostname -f 2>/dev/null || hostname)
[ -s "$Q/control/me" ] || "$Q/bin/config-fast" "$host"
me=$(head -n 1 "$Q/control/me")

# ~alias: postmaster, mailer-daemon and root go to ~alias/Maildir/
alias_home=$(getent passwd alias | cut -d: -f6)
if [ -d "$alias_home" ]; then
  for f in .qmail-postmaster .qmail-mailer-daemon .qmail-root; do
    [ -e "$alias_home/$f" ] || { : > "$alias_home/$f"; chmod 644 "$alias_home/$f"; }
  done
  [ -d "$alias_home/Maildir" ] || setpriv --reuid=alias --regid=nofiles --clear-groups "$Q/bin/maildirmake" "$alias_home/Maildir"
fi

# SMTP access rules: this host may relay, everyone else may send to rcpthosts
if [ ! -e "$Q/control/tcp.smtp" ]; then
  printf '127.:allow,RELAYCLIENT=""\n:allow\n' > "$Q/control/tcp.smtp"
fi
listener=${SMTPD_LISTENER:-qmail-tcpsrv}
case $listener in
  qmail-tcpsrv) listener="$Q/bin/qmail-tcpsrv" ;;
  tcpserver) ;;
  *) echo "SMTPD_LISTENER must be qmail-tcpsrv or tcpserver" >&2; exit 1 ;;
esac
tcprules "$Q/control/tcp.smtp.cdb" "$Q/control/tcp.smtp.tmp" < "$Q/control/tcp.smtp"

mkdir -p /var/log/pyqmail
if [ -S /dev/log ]; then
  send_logger="splogger qmail"; send_out=/dev/null
  smtpd_pipe="$Q/bin/splogger smtpd 3"; smtpd_out=/dev/null
else
  send_logger=""; send_out=/var/log/pyqmail/qmail-send.log
  smtpd_pipe=cat; smtpd_out=/var/log/pyqmail/qmail-smtpd.log
fi
if [ -S /dev/log ]; then
  pop3d_pipe="$Q/bin/splogger pop3d 3"; pop3d_out=/dev/null
else
  pop3d_pipe=cat; pop3d_out=/var/log/pyqmail/qmail-pop3d.log
fi
if [ ! -e "$Q/rc" ]; then
  printf '#!/bin/sh\n# Using qmail-local to deliver messages to ~/Maildir/ by default.\nexec env - PATH="%s/bin:$PATH" qmail-start ./Maildir/ %s\n' "$Q" "$send_logger" > "$Q/rc"
  chmod 755 "$Q/rc"
fi

run=/run/pyqmail; mkdir -p "$run"
if [ -d /run/systemd/system ]; then
  # systemd runs this machine: the qmail-start tree is its unit (log: journal)
  sed "s|@QMAIL_HOME@|$Q|g" "$(dirname "$0")/../boot/systemd/pyqmail.service" \
    > /etc/systemd/system/pyqmail.service
  systemctl daemon-reload
  systemctl enable --now pyqmail.service
  send_out="journalctl -u pyqmail"
elif [ -s "$run/qmail-send.pid" ] && kill -0 "$(cat "$run/qmail-send.pid")" 2>/dev/null; then
  echo "qmail-send is already running (pid $(cat "$run/qmail-send.pid"))"
else
  setsid sh -c "exec \"$Q/rc\" >>$send_out 2>&1 </dev/null" >/dev/null 2>&1 </dev/null &
  echo $! > "$run/qmail-send.pid"
fi
# the SMTP listener (smtpd.pid; tcpserver.pid from older versions of this script)
for pidfile in "$run/smtpd.pid" "$run/tcpserver.pid"; do
  if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    echo "the SMTP listener is already running (pid $(cat "$pidfile"))"; smtpd_running=1
  fi
done
if [ -z "${smtpd_running:-}" ]; then
  setsid sh -c "\"$listener\" -v -R -l \"$me\" -x \"$Q/control/tcp.smtp.cdb\" \
      -u $(id -u qmaild) -g $(getent group nofiles | cut -d: -f3) 0 25 \"$Q/bin/qmail-smtpd\" 2>&1 </dev/null \
      | $smtpd_pipe >>$smtpd_out 2>&1" >/dev/null 2>&1 </dev/null &
  echo $! > "$run/smtpd.pid"
fi
# POP3: qmail-popup runs as root to run checkpassword, which becomes the user
# and runs qmail-pop3d in ~/Maildir
if [ -s "$run/pop3d.pid" ] && kill -0 "$(cat "$run/pop3d.pid")" 2>/dev/null; then
  echo "the POP3 tcpserver is already running (pid $(cat "$run/pop3d.pid"))"
else
  setsid sh -c "tcpserver -v -R -l \"$me\" 0 110 \"$Q/bin/qmail-popup\" \"$me\" \
      \"$Q/bin/checkpassword\" \"$Q/bin/qmail-pop3d\" Maildir 2>&1 </dev/null \
      | $pop3d_pipe >>$pop3d_out 2>&1" >/dev/null 2>&1 </dev/null &
  echo $! > "$run/pop3d.pid"
fi
# wait until all answer
i=0
while [ $i -lt 100 ]; do
  if [ -S "$Q/queue/lock/qmail-queued" ] && printf 'QUIT\r\n' | timeout 2 tcpclient -RHl0 127.0.0.1 25 sh -c 'head -n 1 <&6' 2>/dev/null | grep -q '^220 ' \
      && printf 'QUIT\r\n' | timeout 2 tcpclient -RHl0 127.0.0.1 110 sh -c 'head -n 1 <&6' 2>/dev/null | grep -q '^+OK <'; then
    echo "pyqmail is running: qmail-send (pid $(cat $run/qmail-send.pid)), qmail-smtpd on port 25 and POP3 on port 110 for $me."
    echo "Mail for local users goes to ~USER/Maildir/ (create it with $Q/bin/maildirmake ~USER/Maildir)."
    exit 0
  fi
  i=$((i + 1)); sleep 0.1
done
echo "pyqmail did not come up; see $send_out, $smtpd_out and $pop3d_out" >&2
exit 1
