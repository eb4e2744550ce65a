"""`make lint`: no module over 400 lines, so files stay small and named for what they do."""

from __future__ import annotations

import sys
from pathlib import Path

LIMIT = 400
ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    over = []
    for folder in ("connbench", "analysis", "target_app", "locustfiles", "scripts"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            n = sum(1 for _ in path.open(encoding="utf-8"))
            if n > LIMIT and "migrations" not in path.parts:
                over.append(f"{path.relative_to(ROOT)}: {n} lines")
    for line in over:
        print(f"over {LIMIT} lines: {line}", file=sys.stderr)
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
