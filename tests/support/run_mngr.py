"""Run the mngr console entry with the stand-in `fakecli` backend registered, for tests
that need a real mngr process (signals, concurrency)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mngr import registry  # noqa: E402
from mngr.entry import main  # noqa: E402
from tests.support.fake_backend import FakeBackend  # noqa: E402

registry.register("fakecli", FakeBackend)
main()
