"""`python -m tests.support.fake_model_server`: serve until interrupted (see cli.py)."""

from __future__ import annotations

from tests.support.fake_model_server.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
