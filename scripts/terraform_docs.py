"""Write the inputs and outputs tables of terraform/README.md from variables.tf and outputs.tf.

    python scripts/terraform_docs.py          # rewrite the tables between the markers
    python scripts/terraform_docs.py --check  # exit 1 when the README is out of date (the tests run this)

The tables sit between ``<!-- BEGIN_TF_DOCS -->`` and ``<!-- END_TF_DOCS -->``; the rest of the
README is written by hand.
"""

import json
import sys
from pathlib import Path
from typing import Any

import hcl2

MODULE = Path(__file__).resolve().parents[1] / "terraform"
README = MODULE / "README.md"
BEGIN, END = "<!-- BEGIN_TF_DOCS -->", "<!-- END_TF_DOCS -->"
_REQUIRED = object()


def _blocks(path: Path, kind: str) -> list[tuple[str, dict[str, Any]]]:
    options = hcl2.SerializationOptions(strip_string_quotes=True, with_comments=False, explicit_blocks=False)
    with open(path, encoding="utf-8") as f:
        doc = hcl2.load(f, serialization_options=options)
    return [(name, body) for entry in doc.get(kind, []) for name, body in entry.items()]


def _text(value: str) -> str:
    """An HCL string as the reader sees it, safe in a Markdown table cell."""
    return value.replace("$${", "${").replace('\\"', '"').replace("|", "\\|").replace("\n", " ")


def _type(value: str) -> str:
    return value[2:-1] if value.startswith("${") and value.endswith("}") else value


def _default(value: Any) -> str:
    if value is _REQUIRED:
        return "n/a"
    return f"`{json.dumps(value)}`"


def render() -> str:
    lines = [BEGIN, "## Inputs", "", "| Name | Description | Type | Default | Required |", "|---|---|---|---|:---:|"]
    for name, body in _blocks(MODULE / "variables.tf", "variable"):
        default = body.get("default", _REQUIRED)
        lines.append(
            f"| `{name}` | {_text(body['description'])} | `{_type(body['type'])}` | {_default(default)} | "
            f"{'yes' if default is _REQUIRED else 'no'} |"
        )
    lines += ["", "## Outputs", "", "| Name | Description |", "|---|---|"]
    for name, body in _blocks(MODULE / "outputs.tf", "output"):
        lines.append(f"| `{name}` | {_text(body['description'])} |")
    lines.append(END)
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    text = README.read_text(encoding="utf-8")
    start, end = text.index(BEGIN), text.index(END) + len(END)
    updated = text[:start] + render() + text[end:]
    if "--check" in argv:
        if updated != text:
            print("terraform/README.md is out of date: run python scripts/terraform_docs.py", file=sys.stderr)
            return 1
        return 0
    README.write_text(updated, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
