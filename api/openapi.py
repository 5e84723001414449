"""Write the OpenAPI document: `python -m api.openapi > api/openapi.json` (the committed copy,
which a test compares with the generated one)."""

from __future__ import annotations

import json
import sys

from api.app import openapi_document


def render() -> str:
    return json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
