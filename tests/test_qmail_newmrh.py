"""qmail-newmrh: morercpthosts -> morercpthosts.cdb (spec/control.md §3)."""
import os
import subprocess

from pyqmail import cdb


def run(home):
    return subprocess.run([os.path.join(home, "bin", "qmail-newmrh")], capture_output=True)


def test_compiles_lowercased_entries(fresh_home):
    control = os.path.join(fresh_home, "control")
    with open(os.path.join(control, "morercpthosts"), "wb") as f:
        f.write(b"# hosts\nMixed.Example.COM\t \n\n.Sub.Example.NET\nlast.example")
    done = run(fresh_home)
    assert (done.returncode, done.stdout, done.stderr) == (0, b"", b"")
    path = os.path.join(control, "morercpthosts.cdb").encode()
    assert cdb.open_cdb(path).items() == [(b"mixed.example.com", b""), (b".sub.example.net", b""),
                                          (b"last.example", b"")]
    assert os.stat(path).st_mode & 0o777 == 0o644
    assert not os.path.exists(os.path.join(control, "morercpthosts.tmp"))


def test_missing_source_is_fatal(fresh_home):
    done = run(fresh_home)
    assert done.returncode == 111
    assert done.stderr == (b"qmail-newmrh: fatal: unable to read control/morercpthosts: "
                           b"file does not exist\n")


def test_unwritable_tmp_is_fatal(fresh_home):
    control = os.path.join(fresh_home, "control")
    with open(os.path.join(control, "morercpthosts"), "wb") as f:
        f.write(b"a.example\n")
    os.mkdir(os.path.join(control, "morercpthosts.tmp"))
    done = run(fresh_home)
    assert done.returncode == 111
    assert done.stderr == (b"qmail-newmrh: fatal: unable to write to control/morercpthosts.tmp: "
                           b"is a directory\n")
    assert not os.path.exists(os.path.join(control, "morercpthosts.cdb"))
