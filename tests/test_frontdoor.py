"""The README's two commands on a fresh machine, in either order: `pip install .` + the demo, and
the test install `pip install -e '.[test]'`, each leaving a working `edgert` behind.

Also where compiled kernels are cached, and what a user sees when that cannot work."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import DEMO_CONFIG, REPO, edgert
from edgert import __version__
from edgert.kernel_cache import NOTICE, cache_root, numba_cache_dir

# Settings that would steer the cache elsewhere: "" is how conftest.edgert unsets them.
NO_CACHE_SETTINGS = {"EDGERT_CACHE_DIR": "", "CACHE_DIRECTORY": "", "XDG_CACHE_HOME": "",
                     "NUMBA_CACHE_DIR": ""}


def kernel_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.suffix in (".nbi", ".nbc")]


def records(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith("{")]


def test_cache_folder_order() -> None:
    home = {"HOME": "/home/op"}
    assert cache_root(home) == Path("/home/op/.cache/edgert")
    assert cache_root({"HOME": "/root"}) == Path("/root/.cache/edgert")
    assert cache_root({**home, "XDG_CACHE_HOME": "relative/ignored"}) == cache_root(home)
    xdg = {**home, "XDG_CACHE_HOME": "/x"}
    assert cache_root(xdg) == Path("/x/edgert")
    unit = {**xdg, "CACHE_DIRECTORY": "/var/cache/edgert:/var/cache/other"}
    assert cache_root(unit) == Path("/var/cache/edgert")
    assert cache_root({**unit, "EDGERT_CACHE_DIR": "/e"}) == Path("/e")
    assert numba_cache_dir({**unit, "EDGERT_CACHE_DIR": "/e"}) == Path("/e/numba")
    assert numba_cache_dir({**unit, "NUMBA_CACHE_DIR": "/n"}) == Path("/n")


def test_a_cold_start_says_it_compiles_and_a_warm_one_does_not(tmp_path: Path) -> None:
    start = time.time()
    env = {**NO_CACHE_SETTINGS, "EDGERT_CACHE_DIR": str(tmp_path / "cache")}
    cold = edgert("check", str(DEMO_CONFIG), env=env)
    assert cold.returncode == 0, cold.stderr
    assert NOTICE in cold.stderr and "compiled (cold start)" in cold.stdout
    warm = edgert("check", str(DEMO_CONFIG), env=env)
    assert warm.returncode == 0, warm.stderr
    assert NOTICE not in warm.stderr and "loaded from cache" in warm.stdout
    assert kernel_files(tmp_path / "cache" / "numba")
    # Files an older edgert left beside the source do not count; new ones would.
    assert not [p for p in kernel_files(REPO / "edgert") if p.stat().st_mtime >= start]


def test_no_usable_home_gives_one_warning_and_a_working_run(tmp_path: Path) -> None:
    # HOME=/nonexistent as a system user sees it; a path below a regular file fails for root too
    # (root could create /nonexistent, and a test must not).
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    proc = edgert("run", str(DEMO_CONFIG), "--frames", "5",
                  env={**NO_CACHE_SETTINGS, "HOME": str(blocker / "home")})
    assert proc.returncode == 0, proc.stderr
    assert len(records(proc.stdout)) == 5
    lines = proc.stderr.splitlines()
    warnings = [ln for ln in lines if ln.startswith("edgert: WARNING")]
    assert len(warnings) == 1 and str(blocker / "home") in warnings[0], proc.stderr
    others = [ln for ln in lines if ln not in warnings]
    assert not any("Traceback" in ln or "numba" in ln.lower() for ln in others), proc.stderr
    assert "EDGERT_CACHE_DIR" in warnings[0] and NOTICE not in proc.stderr


@pytest.mark.parametrize("verb", [["check"], ["run", "--frames", "5"]], ids=["check", "run"])
def test_a_reader_that_leaves_early_gets_no_traceback(verb: list[str]) -> None:
    """`edgert check CONFIG | head -1`: head exits and closes the pipe; here, before any output."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "edgert", verb[0], str(DEMO_CONFIG), *verb[1:]],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=REPO)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read()
    proc.wait(timeout=120)
    assert "Traceback" not in err and "Exception ignored" not in err, err


class FreshMachine:
    """A throw-away virtualenv over the system's packages (the heavy dependencies are there and
    nothing in the system Python changes), a copy of the repo and an empty HOME."""

    def __init__(self, root: Path, src: Path, name: str) -> None:
        self.venv, self.src, self.home = root / name, src, root / "home"
        made = subprocess.run([sys.executable, "-m", "venv", "--system-site-packages",
                               str(self.venv)], capture_output=True, text=True)
        if made.returncode != 0:
            pytest.skip(f"cannot create a virtualenv with pip here: {made.stderr.strip()[-300:]}")
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", *NO_CACHE_SETTINGS)}
        self.env.update(HOME=str(self.home), VIRTUAL_ENV=str(self.venv),
                        PATH=f"{self.venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
                        PIP_DISABLE_PIP_VERSION_CHECK="1")

    def sh(self, *cmd: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=self.env,
                              cwd=cwd or self.src, timeout=300)
        assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}"
        return proc

    def pip_install(self, *what: str) -> None:
        cmd = (str(self.venv / "bin" / "python"), "-m", "pip", "install", "--quiet", *what)
        proc = subprocess.run(cmd, capture_output=True, text=True, env=self.env, cwd=self.src,
                              timeout=300)
        if proc.returncode != 0 and ("No matching distribution" in proc.stderr
                                     or "Could not find a version" in proc.stderr):
            pytest.skip(f"pip cannot reach a package index for the build requirements: "
                        f"{proc.stderr.strip().splitlines()[-1]}")
        assert proc.returncode == 0, f"pip install {' '.join(what)} failed:\n{proc.stderr[-3000:]}"

    def demo(self) -> subprocess.CompletedProcess:
        proc = self.sh("edgert", "run", "device_configs/demo.toml", "--frames", "20")
        assert len(records(proc.stdout)) == 20, proc.stderr
        return proc

    def works(self, installed_at: Path) -> None:
        """`edgert --version` and an import from a neutral folder (not the repo's own edgert/)."""
        assert self.sh("edgert", "--version").stdout.strip() == f"edgert {__version__}"
        out = self.sh(str(self.venv / "bin" / "python"), "-c",
                      "import edgert, edgert.cli; print(edgert.__file__)", cwd=self.home).stdout
        assert Path(out.strip()).parent.parent == installed_at, out

    def site_packages(self) -> Path:
        return Path(self.sh(str(self.venv / "bin" / "python"), "-c",
                            "import sysconfig; print(sysconfig.get_path('purelib'))").stdout.strip())


def test_readme_commands_work_in_either_order_and_again(tmp_path: Path) -> None:
    src = tmp_path / "edgert-src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", "out"))
    (tmp_path / "home").mkdir()

    # The demo first, then the test install.
    a = FreshMachine(tmp_path, src, "venv-demo-first")
    a.pip_install(".")
    assert NOTICE in a.demo().stderr
    a.pip_install("-e", ".[test]")
    a.works(installed_at=src)

    # The test install first, then the README's command and the demo, twice over.
    b = FreshMachine(tmp_path, src, "venv-tests-first")
    b.pip_install("-e", ".[test]")
    b.demo()
    b.pip_install(".")
    b.demo()
    b.works(installed_at=b.site_packages())

    cache = tmp_path / "home" / ".cache" / "edgert" / "numba"
    assert kernel_files(cache), "no compiled kernels in the user's cache folder"
    for tree in (a.venv, b.venv, src):
        assert not kernel_files(tree), f"compiled kernels written into {tree}"
