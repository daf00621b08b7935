"""Session-wide test set-up.

Prefect and MLflow keep state under the user's home by default; every test session gets its own
throw-away homes instead, so no test depends on (or pollutes) `~/.prefect` or `./mlruns`.
Telemetry stays off. These variables must be set before Prefect is first imported.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_SESSION_HOME = Path(tempfile.mkdtemp(prefix="echofm-tests-"))
os.environ["PREFECT_HOME"] = str(_SESSION_HOME / "prefect")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
os.environ["MLFLOW_ENABLE_TELEMETRY"] = "false"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
# The first migration of an empty Prefect database can be slow on a busy 2-core machine.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_API_REQUEST_TIMEOUT", "120")
# Test tensors are tiny: one intra-op thread per process avoids oversubscribing the 2 cores
# when torchrun workers, loader processes and pytest run side by side.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Every ingestion needs a de-identification secret; tests of its absence unset this themselves.
os.environ["ECHOFM_DEID_SECRET"] = "echofm-test-secret-not-for-real-data"
os.environ.pop("PREFECT_API_URL", None)
os.environ.pop("MLFLOW_TRACKING_URI", None)

import pytest  # noqa: E402

from tests.factories.downstream import MULTITASK_TASKS, DownstreamArchive, make_archive, partial_labels  # noqa: E402
from tests.factories.model import MICRO  # noqa: E402
from tests.factories.public_datasets import PreparedReplica, prepare_replica  # noqa: E402


@pytest.fixture(scope="session")
def prefect_harness():
    """A real, temporary Prefect API (SQLite) for the whole session; request it in flow tests."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="session")
def session_tmp() -> Path:
    return _SESSION_HOME


@pytest.fixture
def one_torch_thread():
    """These tensors are tiny: one intra-op thread is as fast and does not fight the other
    processes of a busy 2-core machine (measured: 13.6 s vs 1.0 s for 60 small head steps)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def downstream_archive(tmp_path_factory: pytest.TempPathFactory) -> DownstreamArchive:
    """Shards, manifest, labels, LV masks and a briefly pretrained tiny encoder (see the factory)."""
    return make_archive(tmp_path_factory.mktemp("downstream"))


@pytest.fixture
def micro_config():
    """The micro model config of the model and benchmark tests (tests/factories/model.py)."""
    from echofm.model import preset_config

    return preset_config("tiny", **MICRO)


@pytest.fixture(scope="session")
def keyed():
    """The session's `Pseudonymizer` (the secret every test ingestion uses): `keyed.source_id(rel)`
    is the manifest's `source_id` of the file at `rel` under SOURCE."""
    from echofm.io.deid import Pseudonymizer, load_secret

    return Pseudonymizer(load_secret())


@pytest.fixture(scope="session")
def prepared_replica(tmp_path_factory: pytest.TempPathFactory):
    """`prepared_replica(name)`: the replica of a public dataset's layout
    (tests/factories/public_datasets.py), prepared once per session and shared."""
    prepared: dict[str, PreparedReplica] = {}

    def get(name: str) -> PreparedReplica:
        if name not in prepared:
            prepared[name] = prepare_replica(name, tmp_path_factory.mktemp(name))
        return prepared[name]

    return get


@pytest.fixture(scope="session")
def multitask_run(downstream_archive, tmp_path_factory: pytest.TempPathFactory):
    """`finetune_multitask` on the archive with partial labels (`partial_labels`), 2 epochs,
    with its single-task and random-init comparisons and a saved checkpoint."""
    import torch

    from echofm.downstream.multitask.config import MultitaskConfig
    from echofm.downstream.multitask.train import finetune_multitask
    from echofm.downstream.splits import SplitConfig

    labels = partial_labels(downstream_archive)
    config = MultitaskConfig(tasks=MULTITASK_TASKS, epochs=2, split=SplitConfig(seed=1))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = finetune_multitask(config, encoder=downstream_archive.encoder_path, shards=downstream_archive.shards,
                                    labels=labels, manifest=downstream_archive.manifest_path,
                                    out_dir=tmp_path_factory.mktemp("multitask"))
    finally:
        torch.set_num_threads(before)
    return result, labels
