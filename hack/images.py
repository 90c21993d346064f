"""Builds the project's images from its own Dockerfile with podman, offline, without a registry.

    python hack/images.py build              # base image (once), then operator and runtime-cpu
    python hack/images.py build --target operator

The base image stands in for `python:3.11.11-slim-bookworm`: Debian bookworm made with debootstrap
(its Python is 3.11), imported into podman and passed through the Dockerfile's `PYTHON_IMAGE` build
argument, so the Dockerfile has no line that exists for these builds alone. Each image is tagged
with a hash of everything it is built from, so an unchanged tree is never built twice and a changed
one always is. `real node` (hack/realnode.py) loads the images into its containerd; pods use them
with `imagePullPolicy: IfNotPresent` and never dial a registry.

pip inside the build sees the host's pip configuration (the files and PIP_* variables that
`pip config list` reports, merged into one pip.conf) and every local path it names (a CA bundle,
a wheel folder), bind-mounted read-only. Mounts are not committed: nothing of the host reaches the
image.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("MODELDEPLOY_CACHE", Path.home() / ".cache" / "modeldeploy"))
REPO = "localhost/modeldeploy"
BASE_IMAGE = f"{REPO}/python:3.11-bookworm"
BASE_PACKAGES = "python3,python3-venv,python3-pip,ca-certificates,python-is-python3"
# What the Dockerfile copies (the allow-list of .dockerignore); the tag hashes exactly this.
CONTEXT = ("Dockerfile", "pyproject.toml", "README.md", "operator", "runtime", "cli", "contract", "examples/models")
TARGETS = ("operator", "runtime-cpu")


class ImageError(RuntimeError):
    """An image could not be built; the message says which step and shows its output's tail."""


def _run(argv: list[str], step: str, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-3000:]
        raise ImageError(f"{step} failed ({' '.join(argv[:3])} ... exit {proc.returncode}):\n{tail}")
    return proc


def have_podman() -> str | None:
    """None when images can be built here, else why not."""
    if shutil.which("podman") is None:
        return "podman is missing (apt-get install podman; hack/setup.sh does)"
    if os.geteuid() != 0:
        return "building images with podman needs root here"
    return None


def image_exists(ref: str) -> bool:
    return subprocess.run(["podman", "image", "exists", ref], capture_output=True).returncode == 0


def debian_mirror() -> str:
    """The Debian mirror apt uses on this machine, so debootstrap reaches the same one."""
    for path in (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")):
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            words = line.split()
            if words[:1] == ["URIs:"] and "security" not in words[1]:
                return words[1]
            if words[:1] == ["deb"] and "security" not in line:
                return next(w for w in words[1:] if "://" in w)
    return "http://deb.debian.org/debian"


def build_base() -> str:
    """The stand-in for python:3.11-slim-bookworm, made once with debootstrap (about 90 s)."""
    if image_exists(BASE_IMAGE):
        return BASE_IMAGE
    if shutil.which("debootstrap") is None:
        raise ImageError("debootstrap is missing (apt-get install debootstrap; hack/setup.sh does)")
    with tempfile.TemporaryDirectory(prefix="modeldeploy-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        _run(
            ["debootstrap", "--variant=minbase", f"--include={BASE_PACKAGES}", "bookworm", str(rootfs),
             debian_mirror()],
            "debootstrap of the base image",
        )  # fmt: skip
        shutil.rmtree(rootfs / "var/cache/apt/archives", ignore_errors=True)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        _run(
            ["podman", "import", "--change", "ENV LANG=C.UTF-8", "--change", 'CMD ["python3"]', "-",
             BASE_IMAGE],
            "podman import of the base image",
            stdin=tar.stdout,
        )  # fmt: skip
        tar.wait()
    return BASE_IMAGE


def context_hash(target: str, base_id: str) -> str:
    digest = hashlib.sha256(f"{target}\0{base_id}\0".encode())
    for top in CONTEXT:
        path = ROOT / top
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for f in files:
            rel = f.relative_to(ROOT).as_posix()
            if "__pycache__" in rel or rel.endswith(".pyc") or ".egg-info" in rel:
                continue
            digest.update(rel.encode() + b"\0" + f.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def image_ref(target: str) -> str:
    """The tag the current tree's image of `target` has (built or not)."""
    base_id = _run(["podman", "image", "inspect", "--format", "{{.Id}}", BASE_IMAGE], "base image").stdout.strip()
    return f"{REPO}/{target}:{context_hash(target, base_id)}"


def pip_mounts(workdir: Path) -> list[str]:
    """podman `-v` options giving the build's pip the host's pip configuration."""
    proc = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True)
    settings: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        key, _, value = line.partition("=")
        name = key.rsplit(".", 1)[-1]
        settings[name] = value.strip().strip("'\"")
    conf = workdir / "pip.conf"
    conf.write_text("[global]\n" + "".join(f"{k} = {v}\n" for k, v in sorted(settings.items())))
    mounts = ["-v", f"{conf}:/etc/pip.conf:ro"]
    for value in settings.values():
        for item in value.split():
            if item.startswith("/") and Path(item).exists():
                mounts += ["-v", f"{item}:{item}:ro"]
    return mounts


def build(target: str, log=print, fresh: bool = False) -> str:
    """Builds `target` of the Dockerfile unless the current tree's image already exists; `fresh`
    builds it again from nothing (no layer cache), as the benchmark times it."""
    if target not in TARGETS:
        raise ImageError(f"unknown target {target!r}: one of {', '.join(TARGETS)}")
    build_base()
    ref = image_ref(target)
    if image_exists(ref) and not fresh:
        return ref
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="modeldeploy-build-") as tmp:
        _run(
            ["podman", "build", "--network", "host", "--cgroup-manager", "cgroupfs",
             "--no-cache" if fresh else "--layers",
             "--build-arg", f"PYTHON_IMAGE={BASE_IMAGE}", "--target", target, "-t", ref,
             *pip_mounts(Path(tmp)), "-f", str(ROOT / "Dockerfile"), str(ROOT)],
            f"podman build --target {target}",
        )  # fmt: skip
    log(f"built {ref} in {time.monotonic() - started:.0f} s")
    prune(target, keep=ref)
    return ref


def prune(target: str, keep: str) -> None:
    """Older builds of `target` and dangling layers: each build is some 400 MB of disk."""
    listing = _run(["podman", "images", "--format", "{{.Repository}}:{{.Tag}}", f"{REPO}/{target}"], "podman images")
    old = [ref for ref in listing.stdout.split() if ref != keep and ref.startswith(f"{REPO}/{target}:")]
    if old:
        subprocess.run(["podman", "rmi", "--force", *old], capture_output=True)
    subprocess.run(["podman", "image", "prune", "--force"], capture_output=True)


def save(ref: str, dest: Path) -> Path:
    """A docker-archive of `ref` (podman refuses to overwrite, hence the temporary name)."""
    tmp = dest.with_suffix(".partial")
    tmp.unlink(missing_ok=True)
    _run(["podman", "save", "--format", "docker-archive", "-o", str(tmp), ref], f"podman save {ref}")
    tmp.replace(dest)
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["build", "base", "ref"])
    parser.add_argument("--target", action="append", choices=TARGETS)
    args = parser.parse_args(argv)
    why = have_podman()
    if why:
        print(f"images: {why}", file=sys.stderr)
        return 1
    try:
        if args.action == "base":
            print(build_base())
        for target in args.target or TARGETS:
            if args.action == "build":
                print(build(target, log=lambda m: print(m, file=sys.stderr)))
            elif args.action == "ref":
                print(image_ref(target))
    except ImageError as exc:
        print(f"images: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
