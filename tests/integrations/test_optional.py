"""The frameworks stay optional: without Lightning, transformers and accelerate, `import resilient`
and a plain Run work, and each integration says what to install instead of failing somewhere inside."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# A meta-path finder that refuses the frameworks, as an environment without them would.
_WITHOUT_FRAMEWORKS = """
import sys
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("lightning", "pytorch_lightning", "lightning_fabric", "transformers", "accelerate"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Blocker())
"""


def _python(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _WITHOUT_FRAMEWORKS + code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})


def test_resilient_and_a_run_work_without_the_frameworks(tmp_path: Path) -> None:
    done = _python("""
import resilient, resilient.integrations, torch
with resilient.Run(checkpoint=resilient.ModelCheckpoint(every_n_train_steps=2), run_dir="run") as run:
    model = torch.nn.Linear(2, 1)
    run.track(model=model)
    for epoch in run.epochs(1):
        for batch in run.batches(range(4)):
            pass
assert not any(name.split(".")[0] in ("lightning", "transformers", "accelerate") for name in sys.modules)
print("ok", run.step)
""", tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok 4"


@pytest.mark.parametrize("integration, extra", [("lightning", "lightning"), ("huggingface", "huggingface")])
def test_an_integration_without_its_framework_says_what_to_install(tmp_path: Path, integration: str,
                                                                     extra: str) -> None:
    done = _python(f"import resilient.integrations.{integration}", tmp_path)
    assert done.returncode == 1
    assert f"pip install 'resilient[{extra}]'" in done.stderr.splitlines()[-1]
