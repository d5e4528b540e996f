"""``python tests/onboarding_proc.py --config … run --once``: the ``connector`` command with the
onboarding step stand-ins of ``onboarding_fakes`` (the kill test runs it as a real process)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import onboarding_fakes

from connector.cli import main

if __name__ == "__main__":
    onboarding_fakes.install()
    main(sys.argv[1:])
