"""qmail's date822fmt(): the `D Mon YYYY HH:MM:SS -0000` dates of Received
lines, bounces and qmail-inject's Date field (UTC, no weekday)."""
import time

MONTHS = (b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun",
          b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec")


def date822fmt(when: float) -> bytes:
    t = time.gmtime(when)
    return b"%d %s %d %02d:%02d:%02d -0000" % (t.tm_mday, MONTHS[t.tm_mon - 1], t.tm_year,
                                               t.tm_hour, t.tm_min, t.tm_sec)
