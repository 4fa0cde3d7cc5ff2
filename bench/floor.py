"""The floor for the queue: the file work pyqmail/qmail_queue.py does for one
message, in a tight Python loop with nothing else (no pipes, no service, no
parsing) -- with fsync, and without (page-cache bound)."""
import os


def make_queue(base: str, split: int) -> str:
    """A queue-shaped directory: pid/, mess/0..split-1, intd/, todo/."""
    os.makedirs(base)
    for sub in ("pid", "intd", "todo", "mess"):
        os.mkdir(os.path.join(base, sub))
    for n in range(split):
        os.mkdir(os.path.join(base, "mess", str(n)))
    return base


def fsync_dir(path: bytes) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def queue_one(queue: bytes, seq: int, received: bytes, message: bytes, envelope: bytes,
              split: int, sync: bool) -> None:
    """qmail_queue.queue_message()'s creates, writes, fsyncs, links and unlinks."""
    pid_name = b"%s/pid/%d.%d.1" % (queue, os.getpid(), seq)
    mess = os.open(pid_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        inode = os.fstat(mess).st_ino
        name = b"%d" % inode
        mess_dir = b"%s/mess/%d" % (queue, inode % split)
        os.link(pid_name, b"%s/%s" % (mess_dir, name))
        os.unlink(pid_name)
        os.write(mess, received)
        os.write(mess, message)
        if sync:
            os.fsync(mess)
            fsync_dir(mess_dir)
        intd_name = b"%s/intd/%s" % (queue, name)
        intd = os.open(intd_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(intd, envelope)
            if sync:
                os.fsync(intd)
            os.link(intd_name, b"%s/todo/%s" % (queue, name))
            if sync:
                fsync_dir(b"%s/todo" % queue)
        finally:
            os.close(intd)
    finally:
        os.close(mess)


def run(queue: bytes, count: int, received: bytes, message: bytes, envelope: bytes,
        split: int, sync: bool) -> None:
    for seq in range(count):
        queue_one(queue, seq, received, message, envelope, split, sync)


def empty(queue: str) -> None:
    """Remove every message the loop left (outside the timed part)."""
    for sub in ("intd", "todo", "pid"):
        d = os.path.join(queue, sub)
        for name in os.listdir(d):
            os.unlink(os.path.join(d, name))
    for part in os.listdir(os.path.join(queue, "mess")):
        d = os.path.join(queue, "mess", part)
        for name in os.listdir(d):
            os.unlink(os.path.join(d, name))
