"""Fetch packages by name from the npm and Debian registries into a local cache and unpack them.

Only the ordinary clients are used (`npm pack`, `apt-get download`, `dpkg-deb -x`); nothing is
installed system-wide and no node_modules tree is created. Unpacked trees are reused on later runs.
"""
from __future__ import annotations

import json
import logging
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


class FetchError(RuntimeError):
    """A package could not be fetched or unpacked."""


@dataclass(frozen=True)
class FetchedPackage:
    """An unpacked package: `root` is the package directory (npm) or the filesystem root (deb)."""

    name: str
    version: str
    registry: str  # "npm" or "deb"
    root: Path

    @property
    def source(self) -> str:
        return f"{self.registry}:{self.name}@{self.version}"


def _run(cmd: list[str], cwd: Path) -> str:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FetchError(f"{' '.join(cmd)}: {exc}") from exc
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise FetchError(f"{' '.join(cmd)} failed: {' | '.join(tail)}")
    return proc.stdout


def _safe_dirname(name: str) -> str:
    return name.replace("@", "").replace("/", "__")


def _fetched_before(name: str, registry: str, marker: Path) -> FetchedPackage:
    """A package unpacked by an earlier run: its marker holds the version and where it was unpacked."""
    info = json.loads(marker.read_text())
    return FetchedPackage(name, info["version"], registry, Path(info["root"]))


def fetch_npm(name: str, cache: Path) -> FetchedPackage:
    """`npm pack NAME` into cache/npm and untar it; returns the unpacked 'package/' directory."""
    base = cache / "npm" / _safe_dirname(name)
    marker = base / "fetched.json"
    if marker.exists():
        return _fetched_before(name, "npm", marker)
    base.mkdir(parents=True, exist_ok=True)
    log.info("npm pack %s", name)
    out = _run(["npm", "pack", name, "--json", "--silent"], cwd=base)
    try:
        packed = json.loads(out)[0]
    except (ValueError, IndexError, KeyError) as exc:
        raise FetchError(f"npm pack {name}: unexpected output") from exc
    tarball = base / packed["filename"]
    unpacked = base / "x"
    if unpacked.exists():
        shutil.rmtree(unpacked)
    unpacked.mkdir()
    with tarfile.open(tarball) as tf:
        tf.extractall(unpacked, filter="data")
    tarball.unlink()
    root = unpacked / "package"
    if not root.is_dir():
        candidates = [p for p in unpacked.iterdir() if p.is_dir()]
        if len(candidates) != 1:
            raise FetchError(f"npm pack {name}: cannot find the package directory")
        root = candidates[0]
    marker.write_text(json.dumps({"version": packed["version"], "root": str(root)}))
    return FetchedPackage(name, packed["version"], "npm", root)


def fetch_deb(name: str, cache: Path) -> FetchedPackage:
    """`apt-get download NAME` into cache/deb and `dpkg-deb -x` it; returns the extraction root."""
    base = cache / "deb" / name
    marker = base / "fetched.json"
    if marker.exists():
        return _fetched_before(name, "deb", marker)
    base.mkdir(parents=True, exist_ok=True)
    log.info("apt-get download %s", name)
    for old in base.glob("*.deb"):
        old.unlink()
    _run(["apt-get", "download", name], cwd=base)
    debs = sorted(base.glob("*.deb"))
    if len(debs) != 1:
        raise FetchError(f"apt-get download {name}: expected one .deb, found {len(debs)}")
    version = _run(["dpkg-deb", "-f", str(debs[0]), "Version"], cwd=base).strip()
    root = base / "x"
    if root.exists():
        shutil.rmtree(root)
    _run(["dpkg-deb", "-x", str(debs[0]), str(root)], cwd=base)
    debs[0].unlink()
    marker.write_text(json.dumps({"version": version, "root": str(root)}))
    return FetchedPackage(name, version, "deb", root)


def fetch_package(registry: str, name: str, cache: Path) -> FetchedPackage:
    """Fetch from "npm" or "deb" by name."""
    if registry == "npm":
        return fetch_npm(name, cache)
    if registry == "deb":
        return fetch_deb(name, cache)
    raise FetchError(f"unknown registry {registry!r} for {name}")
