"""prefect.yaml against a real Prefect server and process worker on localhost.

Deploys every deployment in the repository's prefect.yaml (`prefect deploy --all`), checks the
work pool, schedules and event triggers it defines, runs the ingestion deployment on a small
synthetic archive through a process worker, and waits for the run to complete.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from echofm.io.deid import Pseudonymizer, load_secret
from tests.factories.servers import BIN, background, prefect_env, prefect_server

REPO = Path(__file__).resolve().parents[2]
POOL = "echofm-process"

pytestmark = pytest.mark.slow


def prefect(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "prefect"), "--no-prompt", *args], cwd=REPO, env=env, text=True,
                          capture_output=True, timeout=timeout)


def test_prefect_yaml_declares_every_stage_once_with_shared_pools() -> None:
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    deployments = {d["name"]: d for d in spec["deployments"]}
    assert {"ingest-archive", "pretrain", "finetune-ef", "score-archive", "echofm-pipeline"} <= set(deployments)
    for deployment in deployments.values():
        module, _, function = deployment["entrypoint"].partition(":")
        assert (REPO / module).is_file() and f"def {function}(" in (REPO / module).read_text()
        # Pools come from `definitions` through anchors, so every deployment shares one object.
        assert deployment["work_pool"] is spec["definitions"]["work_pools"]["process_pool"]
    assert deployments["ingest-archive"]["schedules"][0]["cron"]
    trigger = deployments["pretrain"]["triggers"][0]
    assert trigger["expect"] == ["echofm.ingest.completed"]
    assert trigger["match"]["echofm.enough-new-clips"] == "true"
    # Every ingestion run is scored, from the output its event names.
    scoring = deployments["score-archive"]["triggers"][0]
    assert scoring["expect"] == ["echofm.ingest.completed"] and "echofm.enough-new-clips" not in scoring["match"]
    assert scoring["parameters"]["output"] == "{{ event.payload.output }}"


def test_deploy_and_run_ingestion_on_a_process_worker(tmp_path: Path) -> None:
    from echofm.synth.archive import SMALL_ARCHIVE_OPTIONS, generate_archive

    generate_archive(tmp_path / "synth", 3, seed=3, faults=False, **SMALL_ARCHIVE_OPTIONS)
    source, output = tmp_path / "synth" / "archive", tmp_path / "ingest"

    with prefect_server(tmp_path / "prefect") as api_url:
        env = prefect_env(tmp_path / "prefect", api_url)
        created = prefect(["work-pool", "create", POOL, "--type", "process"], env)
        assert created.returncode == 0, created.stdout + created.stderr
        deployed = prefect(["deploy", "--all"], env)
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr

        listed = prefect(["deployment", "ls"], env)
        for name in ("ingest-archive/ingest-archive", "pretrain/pretrain",
                     "finetune-and-register/finetune-ef", "score-archive/score-archive",
                     "echofm-pipeline/echofm-pipeline"):
            assert name in listed.stdout, listed.stdout
        automations = prefect(["automation", "ls"], env)
        assert automations.returncode == 0
        assert all(name in automations.stdout for name in ("pretrain", "finetune-ef", "score-archive"))

        # The deployment names its SOURCE by a Secret block: the path never is a parameter.
        saved = subprocess.run(
            [str(BIN / "python"), "-c",
             "import sys; from prefect.blocks.system import Secret; Secret(value=sys.argv[1]).save('echofm-test-archive')",
             str(source)],
            env=env, capture_output=True, text=True, timeout=120,
        )
        assert saved.returncode == 0, saved.stderr
        with background([str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--limit", "1"],
                        env, tmp_path / "worker.log", cwd=REPO):
            ran = prefect(
                ["deployment", "run", "ingest-archive/ingest-archive",
                 "--param", 'source="block:echofm-test-archive"',
                 "--param", f"output={json.dumps(str(output))}",
                 "--param", 'options={"batch_size": 2, "workers": 1}',
                 "--watch", "--watch-timeout", "480"],
                env, timeout=540,
            )
        worker_log = (tmp_path / "worker.log").read_text()
        assert ran.returncode == 0, ran.stdout + ran.stderr + worker_log[-4000:]

    manifest = pq.read_table(output / "manifest.parquet").to_pandas()
    keyed = Pseudonymizer(load_secret())
    assert set(manifest["source_id"]) == {keyed.source_id(p.relative_to(source).as_posix()) for p in source.rglob("*") if p.is_file()}
    # The SOURCE path sits encrypted in the block, nowhere in the Prefect database in clear.
    database = b"".join(p.read_bytes() for p in (tmp_path / "prefect").rglob("*.db*") if p.is_file())
    assert database and str(source).encode() not in database and b"synth/archive" not in database
    assert "accepted" in set(manifest["status"])
    assert sorted(p.name for p in (output / "shards").iterdir())
