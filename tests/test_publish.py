"""Publication to the live host: real files, real rsync, real processes killed with kill -9.

The destination must never hold a pointer to a missing or half-copied bundle, and nothing but
bundles and pointers may leave the champions directory."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from champions.pointer import (
    PointerError,
    read_pointer,
    resolve,
    store_bundle,
    write_pointer,
)
from champions.publish import PublishError, is_remote, publish
from core.errors import EmpError
from emp_cli.main import main

ROOT = Path(__file__).resolve().parents[1]
SECRETS = (".env", "EURUSD/.env", "EURUSD/signing.key", "EURUSD/bundles/signing.key",
           "registry.db", "EURUSD/bundles/notes.json.bak")


def promote(root: Path, symbol: str, n: int, stage: str = "live", pad: int = 0) -> str:
    data = json.dumps({"format": "test-bundle", "n": n, "pad": "z" * pad}).encode()
    _, sha = store_bundle(root, symbol, data)
    write_pointer(root, symbol=symbol, timeframe="1h", sha256=sha, champion_id=n,
                  run_id=f"run{n}", key=f"key{n}", signature=None, key_id=None, stage=stage)
    return sha


@pytest.fixture
def src(tmp_path) -> Path:
    """A champions dir: EURUSD live + paper, GBPUSD live, an unreferenced old bundle, a symbol
    dir without pointers, and secrets that must stay home."""
    root = tmp_path / "home" / "champions"
    promote(root, "EURUSD", 1)  # superseded below: its bundle stays, unreferenced
    promote(root, "EURUSD", 2)
    promote(root, "EURUSD", 3, stage="paper")
    promote(root, "GBPUSD", 7)
    (root / "USDJPY" / "bundles").mkdir(parents=True)
    for name in SECRETS:
        (root / name).write_text("PRIVATE KEY / PASSWORD=hunter2\n")
    return root


def files(base: Path) -> dict[str, bytes]:
    return {p.relative_to(base).as_posix(): p.read_bytes()
            for p in sorted(base.rglob("*")) if p.is_file()}


def expected(src: Path) -> dict[str, bytes]:
    """Exactly the pointers and the bundles they name."""
    out = {}
    for symbol in ("EURUSD", "GBPUSD"):
        for stage, name in (("live", "current.json"), ("paper", "paper.json")):
            if (src / symbol / name).exists():
                p = read_pointer(src / symbol, stage)
                out[f"{symbol}/{name}"] = p.path.read_bytes()
                out[f"{symbol}/{p.bundle}"] = resolve(p)[1]
    return out


def assert_consistent(dest: Path) -> dict[str, int]:
    """Every pointer at the destination parses and names a complete bundle; returns the
    champion id per pointer file."""
    ids = {}
    for pointer_file in sorted(dest.glob("*/*.json")):
        p = read_pointer(pointer_file)
        resolve(p)
        ids[pointer_file.relative_to(dest).as_posix()] = p.champion_id
    return ids


def test_local_copy_is_exact_and_idempotent(src, tmp_path):
    dest = tmp_path / "live" / "champions"
    dest.parent.mkdir()  # the last level is created, as rsync does
    seen: list[str] = []
    lines = publish(src, str(dest), progress=seen.append)
    assert lines == seen
    assert files(dest) == expected(src)  # and nothing else: no secrets, no old bundle
    assert not any(name.endswith(("key", ".env", ".db", ".bak")) for name in files(dest))
    assert assert_consistent(dest) == {"EURUSD/current.json": 2, "EURUSD/paper.json": 3,
                                       "GBPUSD/current.json": 7}
    assert sum("copied" in ln for ln in lines) == 3 and sum("written" in ln for ln in lines) == 3
    assert publish(src, str(dest)) == ["EURUSD: up to date", "GBPUSD: up to date"]
    mode = stat.S_IMODE((dest / "GBPUSD" / "current.json").stat().st_mode)
    assert mode & 0o044 == 0o044  # the live executor, maybe another user, can read it

    old = files(dest)
    promote(src, "GBPUSD", 8)
    lines = publish(src, str(dest), ["GBPUSD"])
    assert len(lines) == 2 and lines[0].startswith("GBPUSD: bundle")
    assert assert_consistent(dest)["GBPUSD/current.json"] == 8
    assert set(old) < set(files(dest))  # the old bundle stays there for a rollback


def test_a_damaged_destination_bundle_is_repaired(src, tmp_path):
    dest = tmp_path / "dest"
    publish(src, str(dest))
    bundle = next((dest / "GBPUSD" / "bundles").iterdir())
    bundle.write_bytes(b"{}")
    lines = publish(src, str(dest))
    assert any(ln.startswith("GBPUSD: bundle") for ln in lines)
    assert files(dest) == expected(src)


def _publisher(src: Path, dest: str, hold: str, **env: str) -> subprocess.Popen:
    tmp = src.parent / "tmp"  # a killed rsync publish leaves its staging copy here
    tmp.mkdir(exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-m", "emp_cli.main", "champions", "publish", dest], cwd=src.parent,
        env={**os.environ, "PYTHONPATH": str(ROOT), "EMP_HOME": str(src.parent),
             "EMP_PUBLISH_HOLD": hold, "TMPDIR": str(tmp), **env},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _kill_at(proc: subprocess.Popen, hold: str) -> None:
    try:
        line = proc.stderr.readline().strip()
        assert line == f"HOLD {hold}", line + proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.parametrize(("hold", "via"), [("bundle-partial", "local"),
                                            ("before-pointer", "local"),
                                            ("before-pointer", "rsync")])
def test_a_publish_killed_midway_leaves_the_old_champion(src, tmp_path, hold, via, monkeypatch):
    """(rsync writes and renames its own temp file: the partial hold is the local copier's.)"""
    env = {"EMP_PUBLISH_VIA": "rsync"} if via == "rsync" else {}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    dest = tmp_path / "dest"
    publish(src, str(dest))
    before = files(dest)
    new_sha = promote(src, "EURUSD", 4, pad=1536 * 1024)  # a 1.5 MiB bundle, many chunks
    new_bundle = dest / "EURUSD" / "bundles" / f"{new_sha}.json"

    _kill_at(_publisher(src, str(dest), hold, **env), hold)

    ids = assert_consistent(dest)  # the old pointer resolves to its old, intact bundle
    assert ids["EURUSD/current.json"] == 2
    for name in ("EURUSD/current.json", "EURUSD/paper.json", "GBPUSD/current.json"):
        assert (dest / name).read_bytes() == before[name]
    leftovers = [p for p in (dest / "EURUSD" / "bundles").iterdir() if p.name not in
                 {Path(n).name for n in before}]
    if hold == "bundle-partial":
        assert not new_bundle.exists()
        assert len(leftovers) == 1 and ".tmp-" in leftovers[0].name  # the half-written copy
        assert 0 < leftovers[0].stat().st_size < len(resolve(read_pointer(src / "EURUSD"))[1])
    else:
        assert leftovers == [new_bundle]
        assert new_bundle.read_bytes() == resolve(read_pointer(src / "EURUSD"))[1]

    lines = publish(src, str(dest))  # the re-run completes
    assert any("live pointer -> " + new_sha[:12] in ln for ln in lines)
    assert files(dest) == {**before, **expected(src)}  # the killed run's temp file swept
    assert assert_consistent(dest)["EURUSD/current.json"] == 4


def test_rsync_path_copies_exactly_and_is_idempotent(src, tmp_path, monkeypatch):
    monkeypatch.setenv("EMP_PUBLISH_VIA", "rsync")
    dest = tmp_path / "rsynced"
    lines = publish(src, str(dest))
    assert files(dest) == expected(src)
    assert sum("copied" in ln for ln in lines) == 3 and sum("written" in ln for ln in lines) == 3
    assert publish(src, str(dest)) == ["EURUSD: up to date", "GBPUSD: up to date"]
    promote(src, "EURUSD", 5, stage="paper")
    lines = publish(src, str(dest))
    assert [ln.split(":")[0] for ln in lines] == ["EURUSD", "EURUSD", "GBPUSD"]
    assert assert_consistent(dest)["EURUSD/paper.json"] == 5


def test_remote_path_through_a_remote_shell(src, tmp_path, monkeypatch):
    """``host:path`` goes through rsync's remote shell; a stand-in for ssh that runs the remote
    command here exercises the real remote protocol without a network."""
    rsh = tmp_path / "fake-ssh"
    rsh.write_text('#!/bin/sh\n'  # skip ssh's options and the host name, run the command
                   'while [ $# -gt 0 ]; do case "$1" in -l) shift 2;; -*) shift;; '
                   '*) shift; break;; esac; done\nexec "$@"\n')
    rsh.chmod(0o755)
    monkeypatch.setenv("RSYNC_RSH", str(rsh))
    dest = tmp_path / "vps" / "champions"
    dest.parent.mkdir()
    lines = publish(src, f"deploy@vps.example:{dest}")
    assert files(dest) == expected(src) and len(lines) == 6
    assert publish(src, f"deploy@vps.example:{dest}") == ["EURUSD: up to date",
                                                         "GBPUSD: up to date"]
    monkeypatch.setenv("RSYNC_RSH", "/bin/false")  # the host cannot be reached
    with pytest.raises(PublishError, match=r"rsync of .* failed \(exit \d+\)") as err:
        publish(src, "deploy@vps.example:/srv/champions")
    assert "\n" not in str(err.value)


def test_bad_destinations_and_missing_rsync(src, tmp_path, monkeypatch):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for dest, words in ((str(afile), "not a directory"),
                        (str(tmp_path / "no" / "such" / "dir"), "does not exist"),
                        ("", "empty"), ("-e sh", "starts with '-'")):
        with pytest.raises(PublishError, match=words):
            publish(src, dest)
    monkeypatch.setenv("EMP_PUBLISH_VIA", "rsync")
    with pytest.raises(PublishError, match="not a directory"):
        publish(src, str(afile))
    with pytest.raises(PublishError, match=r"rsync of .* failed \(exit \d+\): .*"):
        publish(src, str(tmp_path / "no" / "such" / "dir"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(PublishError, match="rsync not found"):
        publish(src, str(tmp_path / "d"))
    assert not (tmp_path / "d").exists() and not (tmp_path / "no").exists()


def test_bad_sources_are_refused_before_anything_is_copied(src, tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(PublishError, match="no champion pointer for symbol USDJPY"):
        publish(src, str(dest), ["USDJPY"])
    with pytest.raises(PublishError, match="invalid symbol"):
        publish(src, str(dest), ["../home"])
    with pytest.raises(PublishError, match="champions directory not found"):
        publish(tmp_path / "nowhere", str(dest))
    with pytest.raises(PublishError, match="no champion pointers"):
        publish(src / "USDJPY", str(dest))
    bundle = read_pointer(src / "GBPUSD").bundle_path
    bundle.write_bytes(bundle.read_bytes() + b" ")  # altered after promotion
    with pytest.raises(PointerError, match="does not match the pointer's sha256"):
        publish(src, str(dest))
    bundle.unlink()
    bundle.symlink_to(src / "EURUSD" / "signing.key")  # a planted link is not followed
    with pytest.raises(PointerError, match="not a regular file"):
        publish(src, str(dest))
    assert files(dest) == {}


def test_command_line_reports_errors_in_one_line(src, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("EMP_HOME", str(src.parent))
    monkeypatch.chdir(tmp_path)
    assert main(["champions", "publish", str(tmp_path / "d")]) == 0
    assert "EURUSD: bundle" in capsys.readouterr().out
    assert main(["champions", "publish", str(tmp_path / "no" / "d")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("emp: error: ") and err.count("\n") == 1


def test_remote_detection():
    assert is_remote("host:/srv") and is_remote("user@host:champions")
    assert not is_remote("/srv/a:b") and not is_remote("./host:x") and not is_remote("dir")
    assert issubclass(PublishError, EmpError)
