"""The README's runnable examples, run as written (as chispa does), so the docs cannot rot.

A fenced block right after a ``<!-- example: NAME -->`` line is run command by command in a
scratch folder that looks like a checkout (jobs/, scripts/, .venv/, conf/local.yaml) with a
small generated sample log in data/sample, so the relative paths of conf/local.yaml work.
"""
import re
import shlex
import subprocess

import pytest
import yaml

from tests.helpers import REPO

EXAMPLE = re.compile(r"<!-- example: (?P<name>[\w-]+) -->\n```\w*\n(?P<body>.*?)```", re.S)


def examples() -> dict[str, list[str]]:
    """{name: commands} of the README's example blocks (comments and blank lines dropped;
    a trailing backslash joins lines)."""
    out = {}
    for m in EXAMPLE.finditer((REPO / "README.md").read_text()):
        text = m.group("body").replace("\\\n", " ")
        out[m.group("name")] = [line.split("  #")[0].strip() for line in text.splitlines()
                                if line.strip() and not line.lstrip().startswith("#")]
    return out


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    ws = tmp_path_factory.mktemp("readme")
    for name in ("jobs", "scripts", ".venv", "embedlib"):
        (ws / name).symlink_to(REPO / name)
    cfg = yaml.safe_load((REPO / "conf" / "local.yaml").read_text())
    cfg["spark"].update(master="local[2]", driver_memory="1g", shuffle_partitions=2)
    cfg["train"].update(vector_size=16, epochs=1)
    (ws / "conf").mkdir()
    (ws / "conf" / "local.yaml").write_text(yaml.safe_dump(cfg))
    subprocess.run([str(REPO / ".venv" / "bin" / "python"), "scripts/generate_sample_logs.py", "--out", "data/sample",
                    "--n-events", "20000", "--n-users", "300", "--n-items", "300", "--days", "3"],
                   cwd=ws, check=True, capture_output=True)
    return ws


def test_the_readme_has_runnable_examples():
    assert {"jobs"} <= set(examples())
    jobs = {re.search(r"jobs/(\w+)\.py", c).group(1) for c in examples()["jobs"] if "jobs/" in c}
    assert {p.stem for p in (REPO / "jobs").glob("*.py")} <= jobs  # one example per job


@pytest.mark.slow
def test_readme_job_examples_run_as_written(workspace):
    for command in examples()["jobs"]:
        out = subprocess.run(shlex.split(command), cwd=workspace, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, f"{command}\n{out.stderr[-3000:]}"
    assert (workspace / "reports").is_dir()
