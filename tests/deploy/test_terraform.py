"""The Terraform module (terraform/): formatted, parseable, clean under checkov, and shaped as promised.

The tools are built by scripts/tools-terraform.sh (``make tools-terraform``, which ``make test``
runs first): terraform from the Go module proxy and checkov from PyPI, under .cache/tools.

``terraform validate`` needs the AWS provider, which cannot be had here (see
scripts/terraform-validate.sh); the test runs it when ``TF_PLUGIN_DIR`` names a provider mirror.
Without the provider, terraform itself still evaluates what needs no provider: the module's
variable validations, and the expressions (copied from main.tf) behind the task ceiling, the MSK
IAM resource ARNs and the SQLite guard.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import hcl2
import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "terraform"
EXAMPLES = sorted(p for p in (MODULE / "examples").iterdir() if p.is_dir())
TOOLS = ROOT / ".cache" / "tools"
TERRAFORM = TOOLS / "bin" / "terraform"
CHECKOV = TOOLS / "checkov-venv" / "bin" / "checkov"
TF_FILES = sorted(MODULE.rglob("*.tf"))

# Exactly what eventfleet's clients do on MSK (see the msk policy document in main.tf).
MSK_ACTIONS = {
    "kafka-cluster:Connect",
    "kafka-cluster:WriteDataIdempotently",  # the dead-letter producer is idempotent
    "kafka-cluster:DescribeTopic",
    "kafka-cluster:ReadData",
    "kafka-cluster:DescribeGroup",
    "kafka-cluster:AlterGroup",
    "kafka-cluster:WriteData",
    "kafka-cluster:CreateTopic",  # dead-letter topics only, and only with dlq_topic_auto_create
}


def _tool(path: Path) -> Path:
    if not path.exists():
        message = f"{path.relative_to(ROOT)} is missing: run make tools-terraform"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI builds the tools first: missing means broken
        pytest.skip(message)
    return path


def _env(tmp_path: Path) -> dict[str, str]:
    rc = tmp_path / "terraformrc"
    rc.touch()
    return {
        **os.environ,
        "CHECKPOINT_DISABLE": "1",  # no version check against HashiCorp's servers
        "TF_CLI_CONFIG_FILE": str(rc),
        "TF_IN_AUTOMATION": "1",
    }


def _terraform(tmp_path: Path, *args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(_tool(TERRAFORM)), *args, "-no-color"],
        cwd=cwd,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check:
        assert result.returncode == 0, f"terraform {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


def _hcl(path: Path) -> dict[str, Any]:
    options = hcl2.SerializationOptions(strip_string_quotes=True, with_comments=False, explicit_blocks=False)
    with open(path, encoding="utf-8") as f:
        return dict(hcl2.load(f, serialization_options=options))


def _blocks(doc: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    """``resource``/``data``: "type.name" -> body; ``variable``/``output``: name -> body."""
    out: dict[str, dict[str, Any]] = {}
    for entry in doc.get(kind, []):
        for key, body in entry.items():
            if kind in ("resource", "data"):
                for name, inner in body.items():
                    out[f"{key}.{name}"] = inner
            else:
                out[key] = body
    return out


MAIN = MODULE / "main.tf"


def _module(kind: str, module: Path = MODULE) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for name in ("main.tf", "variables.tf", "outputs.tf"):
        found.update(_blocks(_hcl(module / name), kind))
    return found


# The one ECS service of modules/service, which main.tf runs as module.fleet and module.tail.
SERVICE = MODULE / "modules" / "service"


def _service(resource: str) -> dict[str, Any]:
    """A resource of modules/service: "type.name" -> body."""
    return _module("resource", SERVICE)[resource]


def _call(name: str) -> dict[str, Any]:
    """The arguments of main.tf's module block ``name``."""
    return _blocks(_hcl(MAIN), "module")[name]


def _preconditions(name: str) -> list[str]:
    """The conditions main.tf gives module ``name`` to check before its task definition."""
    return [p["condition"] for p in _call(name)["preconditions"]]


# ---------------------------------------------------------------------------------------------
# format, parse, security scan


def test_terraform_fmt_check(tmp_path: Path) -> None:
    result = _terraform(tmp_path, "fmt", "-check", "-recursive", "-diff", str(MODULE), cwd=ROOT, check=False)
    assert result.returncode == 0, f"run: terraform fmt -recursive terraform/\n{result.stdout}{result.stderr}"


@pytest.mark.parametrize("path", TF_FILES, ids=lambda p: str(p.relative_to(MODULE)))
def test_every_file_parses(path: Path) -> None:
    doc = _hcl(path)
    assert doc, f"{path} parsed to nothing"


def test_module_has_the_four_files_and_both_examples() -> None:
    assert {p.name for p in MODULE.glob("*.tf")} == {"main.tf", "variables.tf", "outputs.tf", "versions.tf"}
    assert {p.name for p in EXAMPLES} == {"new-msk", "existing-cluster"}
    for example in EXAMPLES:
        assert (example / "main.tf").is_file() and (example / "pipeline.toml").is_file()


def test_checkov_finds_nothing_unexplained(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(_tool(CHECKOV)), "--directory", str(MODULE), "--framework", "terraform", "--skip-download",
         "--output", "json"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    report = json.loads(result.stdout)
    summary = report["summary"]
    failed = report["results"]["failed_checks"]
    assert summary["failed"] == 0, "\n".join(f"{f['check_id']} {f['resource']}: {f['check_name']}" for f in failed)
    assert summary["parsing_errors"] == 0
    assert result.returncode == 0, result.stderr[-2000:]
    # Every skip carries its reason in the .tf file.
    for skipped in report["results"]["skipped_checks"]:
        reason = skipped["check_result"].get("suppress_comment") or ""
        assert len(reason.split()) >= 6, f"{skipped['check_id']} on {skipped['resource']} is skipped without a reason"
    for path in TF_FILES:
        for line in path.read_text().splitlines():
            if "checkov:skip=" in line:
                assert re.search(r"#checkov:skip=CKV2?_AWS_\d+:\s*\S.{30,}", line), (
                    f"{path}: skip without reason: {line}"
                )
    # The scan reached the resources that matter (a resource checkov cannot resolve is not checked).
    passed = {(c["check_id"], c["resource"].split(".")[-1].split("[")[0]) for c in report["results"]["passed_checks"]}
    for check, resource_type in [
        ("CKV_AWS_81", "this"),  # MSK: encryption at rest and in transit
        ("CKV_AWS_80", "this"),  # MSK: broker logs
        ("CKV_AWS_291", "this"),  # MSK: private brokers
        ("CKV_AWS_65", "this"),  # ECS cluster: Container Insights
        ("CKV_AWS_333", "this"),  # ECS service: no public IP
        ("CKV_AWS_332", "this"),  # ECS service: latest Fargate platform
        ("CKV_AWS_7", "this"),  # KMS key rotation
        ("CKV_AWS_158", "fleet"),  # log group encrypted with KMS
        ("CKV_AWS_337", "pipeline"),  # SSM parameter with a customer key
        ("CKV_AWS_356", "msk"),  # no "*" resource in the MSK policy
    ]:
        assert (check, resource_type) in passed, f"checkov did not pass {check} on a {resource_type} resource"


# ---------------------------------------------------------------------------------------------
# structure: what the issue asks of the module


def test_every_variable_is_typed_and_described() -> None:
    variables = _module("variable")
    assert len(variables) > 30
    for name, body in variables.items():
        assert "type" in body, f"variable {name} has no type"
        assert len(str(body.get("description", "")).split()) >= 4, f"variable {name} has no real description"


def test_key_variables_are_validated() -> None:
    variables = _module("variable")
    for name in ("name", "vpc_id", "subnet_ids", "image", "cpu", "memory", "workers_per_task", "stop_timeout",
                 "pipeline_toml", "schema_avsc", "config_delivery", "topics", "consumer_group", "partitions",
                 "msk_cluster_arn", "msk_broker_count", "msk_enhanced_monitoring", "min_tasks", "max_tasks",
                 "log_retention_days", "kafka_egress_cidr_blocks", "secrets", "schema_registry_url",
                 "schema_registry_secret_arn", "schema_registry_auth", "tail_app_container", "tail_log_path",
                 "tail_tasks", "tail_cpu", "tail_memory", "tail_topic", "tail_metrics_port",
                 "tail_stop_timeout"):  # fmt: skip
        assert variables[name].get("validation"), f"variable {name} has no validation block"


def test_every_output_is_described() -> None:
    outputs = _module("output")
    assert {"ecs_cluster_arn", "service_name", "task_definition_arn", "task_role_arn", "max_tasks",
            "bootstrap_servers", "msk_cluster_arn", "log_group_name", "lag_alarm_arns"} <= set(outputs)  # fmt: skip
    for name, body in outputs.items():
        assert len(str(body.get("description", "")).split()) >= 3, f"output {name} has no description"


def test_provider_versions_are_pinned_to_a_range() -> None:
    for path in [MODULE / "versions.tf", *(e / "main.tf" for e in EXAMPLES)]:
        terraform = _hcl(path)["terraform"][0]
        assert terraform["required_version"].startswith(">= 1.5")
        aws = terraform["required_providers"][0]["aws"]
        assert aws["source"] == "hashicorp/aws"
        assert re.fullmatch(r">= 5\.\d+\.\d+, < 7\.0\.0", aws["version"]), aws["version"]


def _policy_statements(body: dict[str, Any]) -> list[dict[str, Any]]:
    statements = list(body.get("statement", []))
    for dynamic in body.get("dynamic", []):
        for content in dynamic.get("statement", {}).get("content", []):
            statements.append(content)
    return statements


# What the tailer does on MSK: a transactional, idempotent producer of its topic, dead letters and
# positions (creating the last two), reading its positions back at start.
MSK_TAIL_ACTIONS = {
    "kafka-cluster:Connect",
    "kafka-cluster:WriteDataIdempotently",
    "kafka-cluster:DescribeTopic",
    "kafka-cluster:WriteData",
    "kafka-cluster:CreateTopic",
    "kafka-cluster:ReadData",
    "kafka-cluster:DescribeTransactionalId",
    "kafka-cluster:AlterTransactionalId",
}
# Each document's statements name only these locals as resources.
MSK_RESOURCES = {
    "aws_iam_policy_document.msk": r"msk_(cluster_arn|topic_arns|dlq_arns|group_arn)",
    "aws_iam_policy_document.msk_tail": r"msk_(cluster_arn|tail_topic_arns|tail_created_arns|tail_positions_arn"
    r"|tail_transactional_arn)",
}


def test_msk_permissions_are_least_privilege() -> None:
    documents = _module("data")
    seen: dict[str, set[str]] = {name: set() for name in MSK_RESOURCES}
    for name, body in documents.items():
        if not name.startswith("aws_iam_policy_document."):
            continue
        for statement in _policy_statements(body):
            actions_text = json.dumps(statement.get("actions"))
            actions = set(re.findall(r"kafka-cluster:[A-Za-z*]+", actions_text))
            if not actions:
                continue
            assert name in MSK_RESOURCES, f"kafka-cluster actions outside the msk documents: {name}"
            assert not any("*" in a for a in actions)
            resources = json.dumps(statement["resources"])
            assert '"*"' not in resources, f"{statement.get('sid')}: kafka-cluster actions on every resource"
            assert re.fullmatch(rf'\[?"\$\{{local\.{MSK_RESOURCES[name]}\}}"\]?', resources), (
                f"{statement.get('sid')}: resources must be the cluster, topic, group or DLQ ARNs, got {resources}"
            )
            seen[name] |= actions
    assert seen["aws_iam_policy_document.msk"] == MSK_ACTIONS
    assert seen["aws_iam_policy_document.msk_tail"] == MSK_TAIL_ACTIONS
    # Reading is granted on the source topics, writing on the dead-letter topics only.
    statements = {s["sid"]: s for s in _policy_statements(documents["aws_iam_policy_document.msk"])}
    assert statements["ReadTheSourceTopics"]["resources"] == "${local.msk_topic_arns}"
    assert "WriteData" not in json.dumps(statements["ReadTheSourceTopics"]["actions"])
    assert statements["WriteTheDeadLetterTopics"]["resources"] == "${local.msk_dlq_arns}"
    assert "CreateTopic" in statements["WriteTheDeadLetterTopics"]["actions"]
    assert "var.dlq_topic_auto_create" in statements["WriteTheDeadLetterTopics"]["actions"]
    # The tailer reads only its positions, and creates only its dead-letter and positions topics.
    tail = {s["sid"]: s for s in _policy_statements(documents["aws_iam_policy_document.msk_tail"])}
    reads = [s for s in tail.values() if "kafka-cluster:ReadData" in s["actions"]]
    assert [s["resources"] for s in reads] == [["${local.msk_tail_positions_arn}"]]
    creates = [s for s in tail.values() if "kafka-cluster:CreateTopic" in s["actions"]]
    assert [s["resources"] for s in creates] == ["${local.msk_tail_created_arns}"]


GLUE_READ = {"glue:GetSchemaVersion"}
GLUE_REGISTER = {"glue:GetSchemaByDefinition", "glue:CreateSchema", "glue:RegisterSchemaVersion"}


def test_glue_permissions_read_by_version_id_and_register_in_the_registry_only() -> None:
    documents = _module("data")
    for name, body in documents.items():
        if name.startswith("aws_iam_policy_document.") and name != "aws_iam_policy_document.glue":
            assert "glue:" not in json.dumps(body), f"glue actions outside the glue document: {name}"
    glue = documents["aws_iam_policy_document.glue"]
    assert glue["count"] == "${var.glue_schema_registry != null ? 1 : 0}", "only with glue_schema_registry"
    statements = {s["sid"]: s for s in _policy_statements(glue)}
    read, register = statements["ReadWriterSchemasByVersionId"], statements["RegisterSchemasInTheRegistry"]
    # GetSchemaVersion by SchemaVersionId names no registry or schema: Glue authorizes it on "*" only.
    assert set(read["actions"]) == GLUE_READ and read["resources"] == ["*"]
    assert set(register["actions"]) == GLUE_REGISTER
    assert register["resources"] == ["${local.glue_registry_arn}", "${local.glue_schemas_arn}"]
    assert glue["dynamic"][0]["statement"]["for_each"] == "${local.glue_register ? [1] : []}", "only with register"
    policy = _module("resource")["aws_iam_role_policy.task_glue"]
    assert policy["role"] == "${module.fleet.task_role_id}"
    assert policy["policy"] == "${data.aws_iam_policy_document.glue[0].json}"


def test_autoscaling_ceiling_is_tied_to_the_partitions() -> None:
    resources = _module("resource")
    target = _service("aws_appautoscaling_target.this")
    assert target["max_capacity"] == "${var.max_tasks}"
    assert target["scalable_dimension"] == "ecs:service:DesiredCount"
    assert _call("fleet")["max_tasks"] == "${local.max_tasks}"
    locals_ = _locals_source()
    assert locals_["task_ceiling"] == "ceil(var.partitions / local.workers_per_task)"
    assert "local.task_ceiling" in locals_["max_tasks"]
    assert "${local.max_tasks <= local.task_ceiling}" in _preconditions("fleet")
    # Both policies drive the fleet's target: CPU and consumer lag.
    for policy in ("cpu", "lag"):
        assert (
            resources[f"aws_appautoscaling_policy.{policy}"]["resource_id"]
            == "${module.fleet.scalable_target.resource_id}"
        )
    cpu = resources["aws_appautoscaling_policy.cpu"]["target_tracking_scaling_policy_configuration"][0]
    assert cpu["predefined_metric_specification"][0]["predefined_metric_type"] == "ECSServiceAverageCPUUtilization"
    lag = json.dumps(resources["aws_appautoscaling_policy.lag"])
    for needle in ('"AWS/Kafka"', '"SumOffsetLag"', '"Cluster Name"', '"Consumer Group"', '"Topic"',
                   '"ECS/ContainerInsights"', '"RunningTaskCount"'):  # fmt: skip
        assert needle in lag, needle


def test_service_rolls_back_failed_deployments() -> None:
    service = _service("aws_ecs_service.this")
    assert service["deployment_circuit_breaker"] == [{"enable": True, "rollback": True}]
    assert service["lifecycle"][0]["ignore_changes"] == ["desired_count"]
    assert service["network_configuration"][0]["assign_public_ip"] == "${var.assign_public_ip}"
    for name in ("fleet", "tail"):
        assert _call(name)["assign_public_ip"] == "${var.assign_public_ip}", name


def test_the_fleet_and_the_tail_are_one_service_module_and_their_old_addresses_move() -> None:
    assert _call("fleet")["source"] == _call("tail")["source"] == "./modules/service"
    # Each check of the inputs stands in its own precondition with its own message.
    task = _service("aws_ecs_task_definition.this")
    [check] = task["lifecycle"][0]["precondition"]
    assert check["condition"] == "${alltrue([for c in var.preconditions : c.condition])}"
    assert "if !c.condition" in check["error_message"]
    # A state made before the module keeps its resources: every old address moves into it.
    moved = {m["from"]: m["to"] for m in _hcl(MAIN)["moved"]}
    assert moved == {
        "${aws_iam_role.task}": "${module.fleet.aws_iam_role.task}",
        "${aws_ecs_task_definition.this}": "${module.fleet.aws_ecs_task_definition.this}",
        "${aws_ecs_service.this}": "${module.fleet.aws_ecs_service.this}",
        "${aws_appautoscaling_target.this}": "${module.fleet.aws_appautoscaling_target.this}",
        "${aws_iam_role.tail[0]}": "${module.tail[0].aws_iam_role.task}",
        "${aws_ecs_task_definition.tail[0]}": "${module.tail[0].aws_ecs_task_definition.this}",
        "${aws_ecs_service.tail[0]}": "${module.tail[0].aws_ecs_service.this}",
    }
    service_resources = set(_module("resource", SERVICE))
    for target in moved.values():
        assert target.split(".", 2)[2].rstrip("}") in service_resources, target


def test_msk_cluster_is_iam_only_and_encrypted() -> None:
    cluster = _module("resource")["aws_msk_cluster.this"]
    auth = cluster["client_authentication"][0]
    assert auth["unauthenticated"] is False
    assert auth["sasl"] == [{"iam": True}]
    encryption = cluster["encryption_info"][0]
    assert encryption["encryption_in_transit"] == [{"client_broker": "TLS", "in_cluster": True}]
    assert encryption["encryption_at_rest_kms_key_arn"] == "${local.kms_key_arn}"
    assert cluster["enhanced_monitoring"] == "${var.msk_enhanced_monitoring}"


def test_task_runs_the_fleet_from_the_parameters() -> None:
    source = MAIN.read_text()
    command = re.search(r"command\s*=\s*(\[.*\])", source)
    assert command is not None
    assert '"run", "--config", "env:EVENTFLEET_PIPELINE", "--workers", tostring(local.workers_per_task)' in command[1]
    assert '"--log-format", "json"' in command[1]  # the error alarm's metric filter reads JSON lines
    assert "EVENTFLEET_PIPELINE = aws_ssm_parameter.pipeline[0].arn" in source
    assert 'logDriver = "awslogs"' in source
    log_filter = _module("resource")["aws_cloudwatch_log_metric_filter.errors"]
    assert '$.level = "error"' in log_filter["pattern"]


# ---------------------------------------------------------------------------------------------
# terraform evaluates what needs no provider: variable validations and main.tf's expressions


def _locals_source() -> dict[str, str]:
    """One-line locals of main.tf as written: name -> expression text."""
    found: dict[str, str] = {}
    for block in re.findall(r"^locals \{\n(.*?)^\}", MAIN.read_text(), flags=re.S | re.M):
        for name, expr in re.findall(r"^  ([a-z_0-9]+)\s*=\s*(.+)$", block, flags=re.M):
            if expr.strip() not in ("{", "[", "merge(", "concat("):
                found[name] = expr.strip()
    return found


def _hcl_value(value: Any) -> str:
    """A Python value as an HCL literal: JSON, with template sequences escaped."""
    return json.dumps(value).replace("${", "$${").replace("%{", "%%{")


def _evaluate(tmp_path: Path, cases: dict[str, tuple[dict[str, Any], dict[str, Any]]], names: list[str]) -> dict:
    """Evaluate main.tf's locals ``names`` with real terraform, once per case.

    A case is (variables, fixed locals): the variables the expressions read, and the locals that
    stand for what resources would provide. Returns case -> {local: value}.
    """
    source = _locals_source()
    module = tmp_path / "expressions"
    module.mkdir()
    variables = sorted({v for variables, _ in cases.values() for v in variables})
    fixed = sorted({f for _, fixed_locals in cases.values() for f in fixed_locals})
    module.joinpath("main.tf").write_text(
        "\n".join(f'variable "{v}" {{\n  type    = any\n  default = null\n}}' for v in variables)
        + "\n"
        + "\n".join(f'variable "fixed_{f}" {{\n  type    = any\n  default = null\n}}' for f in fixed)
        + "\nlocals {\n"
        + "\n".join(f"  {f} = var.fixed_{f}" for f in fixed)
        + "\n"
        + "\n".join(f"  {n} = {source[n]}" for n in names)
        + "\n}\n"
        + "\n".join(f'output "{n}" {{\n  value = local.{n}\n}}' for n in names)
        + "\n"
    )
    calls = []
    for case, (variables_, fixed_locals) in cases.items():
        args = [f"  {k} = {_hcl_value(v)}" for k, v in variables_.items()]
        args += [f"  fixed_{k} = {_hcl_value(v)}" for k, v in fixed_locals.items()]
        calls.append(f'module "{case}" {{\n  source = "./expressions"\n' + "\n".join(args) + "\n}\n")
        calls.append(f'output "{case}" {{\n  value = module.{case}\n}}\n')
    tmp_path.joinpath("main.tf").write_text("\n".join(calls))
    _terraform(tmp_path, "init", "-input=false", "-backend=false", cwd=tmp_path)
    _terraform(tmp_path, "apply", "-input=false", "-auto-approve", cwd=tmp_path)
    shown = _terraform(tmp_path, "output", "-json", cwd=tmp_path)
    return {case: value["value"] for case, value in json.loads(shown.stdout).items()}


def test_task_ceiling_is_one_task_per_workers_per_task_partitions(tmp_path: Path) -> None:
    cases = {
        "twelve_by_two": ({"partitions": 12, "cpu": 2048, "workers_per_task": 2, "max_tasks": None}, {}),
        "thirteen_by_two": ({"partitions": 13, "cpu": 2048, "workers_per_task": 2, "max_tasks": None}, {}),
        "default_workers_2vcpu": ({"partitions": 8, "cpu": 2048, "workers_per_task": None, "max_tasks": None}, {}),
        "quarter_vcpu": ({"partitions": 3, "cpu": 256, "workers_per_task": None, "max_tasks": None}, {}),
        "capped": ({"partitions": 64, "cpu": 4096, "workers_per_task": None, "max_tasks": 5}, {}),
    }
    got = _evaluate(tmp_path, cases, ["workers_per_task", "task_ceiling", "max_tasks"])
    assert got["twelve_by_two"] == {"workers_per_task": 2, "task_ceiling": 6, "max_tasks": 6}
    assert got["thirteen_by_two"] == {"workers_per_task": 2, "task_ceiling": 7, "max_tasks": 7}
    assert got["default_workers_2vcpu"] == {"workers_per_task": 2, "task_ceiling": 4, "max_tasks": 4}
    assert got["quarter_vcpu"] == {"workers_per_task": 1, "task_ceiling": 3, "max_tasks": 3}
    assert got["capped"] == {"workers_per_task": 4, "task_ceiling": 16, "max_tasks": 5}


def test_msk_resource_arns_are_this_clusters_topics_and_group(tmp_path: Path) -> None:
    cluster = "arn:aws:kafka:eu-west-1:123456789012:cluster/ad-stats/0f1e2d3c-aaaa-bbbb-cccc-0123456789ab-2"
    on_msk = {"on_msk": True, "msk_cluster_arn": cluster}
    cases = {
        "msk": ({"topics": ["ad-events", "clicks"], "consumer_group": "ad-stats", "dlq_topics": None}, on_msk),
        "own_dlq": ({"topics": ["ad-events"], "consumer_group": "g", "dlq_topics": ["dead"]}, on_msk),
        "not_msk": (
            {"topics": ["ad-events"], "consumer_group": "g", "dlq_topics": None},
            {"on_msk": False, "msk_cluster_arn": None},
        ),
    }
    names = ["dlq_topics", "msk_arn_base", "msk_cluster_path", "msk_cluster_name", "msk_topic_arns", "msk_dlq_arns",
             "msk_group_arn"]  # fmt: skip
    got = _evaluate(tmp_path, cases, names)
    path = "ad-stats/0f1e2d3c-aaaa-bbbb-cccc-0123456789ab-2"
    base = "arn:aws:kafka:eu-west-1:123456789012"
    assert got["msk"]["msk_cluster_name"] == "ad-stats"
    assert got["msk"]["msk_topic_arns"] == [f"{base}:topic/{path}/ad-events", f"{base}:topic/{path}/clicks"]
    assert got["msk"]["msk_dlq_arns"] == [f"{base}:topic/{path}/ad-events.dlq", f"{base}:topic/{path}/clicks.dlq"]
    assert got["msk"]["msk_group_arn"] == f"{base}:group/{path}/ad-stats"
    assert got["own_dlq"]["msk_dlq_arns"] == [f"{base}:topic/{path}/dead"]
    assert got["not_msk"]["msk_topic_arns"] == [] and got["not_msk"]["msk_group_arn"] is None


def test_glue_resource_arns_are_the_registry_and_its_schemas(tmp_path: Path) -> None:
    context = {"partition": "aws", "region": "eu-west-1", "account_id": "123456789012"}
    cases = {
        "named": ({"glue_schema_registry": {"registry_name": "analytics", "register": True}}, context),
        "default": ({"glue_schema_registry": {"registry_name": "default-registry", "register": False}}, context),
        "none": ({"glue_schema_registry": None}, context),
    }
    names = ["glue_registry_name", "glue_register", "glue_registry_arn", "glue_schemas_arn"]
    got = _evaluate(tmp_path, cases, names)
    assert got["named"] == {
        "glue_registry_name": "analytics",
        "glue_register": True,
        "glue_registry_arn": "arn:aws:glue:eu-west-1:123456789012:registry/analytics",
        "glue_schemas_arn": "arn:aws:glue:eu-west-1:123456789012:schema/analytics/*",
    }
    assert got["default"]["glue_registry_arn"] == "arn:aws:glue:eu-west-1:123456789012:registry/default-registry"
    assert got["default"]["glue_register"] is False
    assert got["none"] == {"glue_registry_name": None, "glue_register": False, "glue_registry_arn": None,
                           "glue_schemas_arn": None}  # fmt: skip


def test_sqlite_guard_recognises_the_sink(tmp_path: Path) -> None:
    shared = (ROOT / "examples" / "ad-stats.toml").read_text().replace('type = "sqlite"', 'type = "postgres"')
    cases = {
        "repo_example": ({"pipeline_toml": (ROOT / "examples" / "ad-stats.toml").read_text()}, {}),
        "single_quotes": ({"pipeline_toml": "[sink]\ntype   =  'sqlite'\n"}, {}),
        "shared_sink": ({"pipeline_toml": shared}, {}),
        **{e.name.replace("-", "_"): ({"pipeline_toml": (e / "pipeline.toml").read_text()}, {}) for e in EXAMPLES},
    }
    got = _evaluate(tmp_path, cases, ["sqlite_sink"])
    assert {case: v["sqlite_sink"] for case, v in got.items()} == {
        "repo_example": True, "single_quotes": True, "shared_sink": False, "new_msk": True, "existing_cluster": True,
    }  # fmt: skip


def test_registry_url_and_credentials_reach_the_task_from_the_secret(tmp_path: Path) -> None:
    arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:schema-registry-AbCdEf"
    url = "https://psrc-12345.eu-west-1.aws.confluent.cloud"
    kafka = {"KAFKA_PASSWORD": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:kafka-AbCdEf"}
    registry = {"schema_registry_url": url, "schema_registry_secret_arn": arn}
    off = {"schema_registry_url": None, "schema_registry_secret_arn": None}
    cases = {
        "off": ({**off, "schema_registry_auth": "basic", "secrets": kafka}, {}),
        "basic": ({**registry, "schema_registry_auth": "basic", "secrets": kafka}, {}),
        "bearer": ({**registry, "schema_registry_auth": "bearer", "secrets": {}}, {}),
        "no_credentials": (
            {**registry, "schema_registry_secret_arn": None, "schema_registry_auth": "basic", "secrets": {}},
            {},
        ),
    }
    names = ["registry_secret_keys", "registry_environment", "registry_secrets", "registry_secret_arns",
             "secretsmanager_arns"]  # fmt: skip
    got = _evaluate(tmp_path, cases, names)
    assert got["off"]["registry_environment"] == {} and got["off"]["registry_secrets"] == {}
    assert got["off"]["secretsmanager_arns"] == list(kafka.values())
    assert got["basic"]["registry_environment"] == {"EVENTFLEET_REGISTRY_URL": url}
    # ECS's valueFrom for one JSON key of a Secrets Manager secret: ARN:KEY:VERSION-STAGE:VERSION-ID
    assert got["basic"]["registry_secrets"] == {
        "EVENTFLEET_REGISTRY_USERNAME": f"{arn}:username::",
        "EVENTFLEET_REGISTRY_PASSWORD": f"{arn}:password::",
    }
    assert got["basic"]["secretsmanager_arns"] == [*kafka.values(), arn], "the execution role may read the secret"
    assert got["bearer"]["registry_secrets"] == {"EVENTFLEET_REGISTRY_TOKEN": f"{arn}:token::"}
    assert got["bearer"]["secretsmanager_arns"] == [arn]
    assert got["no_credentials"]["registry_secrets"] == {} and got["no_credentials"]["secretsmanager_arns"] == []
    # and the container gets them: the environment and secrets it is given merge these locals
    source = MAIN.read_text()
    assert re.search(r"environment = merge\(\n    var\.environment,\n    local\.registry_environment,", source)
    assert re.search(r"secrets = merge\(\n    var\.secrets,\n    local\.registry_secrets,", source)
    assert "resources = local.secretsmanager_arns" in source


GOOD_INPUTS: dict[str, Any] = {
    "name": "ad-stats",
    "vpc_id": "vpc-0123456789abcdef0",
    "subnet_ids": ["subnet-0a", "subnet-0b", "subnet-0c"],
    "image": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/eventfleet:0.1.0",
    "pipeline_toml": '[kafka]\ntopics = ["ad-events"]\n',
    "topics": ["ad-events"],
    "consumer_group": "ad-stats",
    "partitions": 12,
}


def _plan_variables(tmp_path: Path, inputs: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """Plan a module holding only the real variables.tf: terraform runs every validation block."""
    module = tmp_path / "variables-only"
    module.mkdir(exist_ok=True)
    shutil.copy(MODULE / "variables.tf", module / "variables.tf")
    args = "\n".join(f"  {k} = {_hcl_value(v)}" for k, v in inputs.items())
    (tmp_path / "main.tf").write_text(f'module "fleet" {{\n  source = "./variables-only"\n{args}\n}}\n')
    _terraform(tmp_path, "init", "-input=false", "-backend=false", cwd=tmp_path)
    return _terraform(tmp_path, "plan", "-input=false", cwd=tmp_path, check=False)


def test_good_inputs_pass_the_validations(tmp_path: Path) -> None:
    inputs = {**GOOD_INPUTS, "cpu": 2048, "memory": 4096, "workers_per_task": 2, "max_tasks": 6,
              "msk_cluster_arn": "arn:aws:kafka:us-east-1:123456789012:cluster/demo/abc-1",
              "msk_kafka_version": "3.7.x.kraft",
              "secrets": {"KAFKA_PASSWORD": "arn:aws:secretsmanager:us-east-1:123456789012:secret:kafka-AbCdEf"},
              "schema_avsc": json.dumps({"type": "record", "name": "E", "fields": []}),
              "glue_schema_registry": {"registry_name": "analytics", "register": True},
              "schema_registry_url": "https://psrc-12345.eu-west-1.aws.confluent.cloud",
              "schema_registry_secret_arn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:sr-AbCdEf",
              "schema_registry_auth": "bearer",
              "tail_enabled": True, "tail_app_container": {"name": "shop", "image": "shop:1.0.0", "essential": True},
              "tail_log_path": "/srv/shop/logs", "tail_tasks": 2, "tail_cpu": 512, "tail_memory": 1024,
              "tail_topic": "shop-logs", "tail_metrics_port": 9401, "tail_stop_timeout": 20}  # fmt: skip
    result = _plan_variables(tmp_path, inputs)
    assert result.returncode == 0, result.stdout + result.stderr


def test_bad_inputs_fail_their_validations(tmp_path: Path) -> None:
    bad = {
        "name": "Ad_Stats",
        "vpc_id": "my-vpc",
        "subnet_ids": ["subnet-0a"],
        "image": "eventfleet latest",
        "cpu": 1000,
        "workers_per_task": 0,
        "stop_timeout": 300,
        "pipeline_toml": "just text",
        "schema_avsc": "{not json",
        "config_delivery": "s3",
        "topics": [],
        "consumer_group": "group:with:colons",
        "partitions": 0,
        "msk_cluster_arn": "arn:aws:kafka:eu-west-1:123456789012:topic/x/y/z",
        "msk_enhanced_monitoring": "EVERYTHING",
        "msk_kafka_version": "latest",
        "min_tasks": 0,
        "log_retention_days": 42,
        "kafka_egress_cidr_blocks": ["0.0.0.0/0"],
        "secrets": {"PASSWORD": "hunter2"},
        "environment": {"EVENTFLEET_PIPELINE": "x"},
        "glue_schema_registry": {"registry_name": "my registry"},
        "schema_registry_url": "psrc-12345.eu-west-1.aws.confluent.cloud:443",
        "schema_registry_secret_arn": "arn:aws:ssm:us-east-1:123456789012:parameter/sr-password",
        "schema_registry_auth": "oauth",
        "tail_app_container": {"name": "tail", "image": "x:1"},
        "tail_log_path": "var/log/app/",
        "tail_tasks": 0,
        "tail_cpu": 1000,
        "tail_memory": 100,
        "tail_topic": "app logs",
        "tail_metrics_port": 80,
        "tail_stop_timeout": 0,
    }
    result = _plan_variables(tmp_path, bad)
    assert result.returncode != 0
    for name in bad:
        assert f"var.{name}" in result.stderr, f"no validation error for {name}:\n{result.stderr[-3000:]}"


# ---------------------------------------------------------------------------------------------
# the examples' pipelines load in eventfleet as the task would load them


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_pipeline_loads_like_on_ecs(example: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from consumer.config import load

    monkeypatch.setenv("EVENTFLEET_PIPELINE", (example / "pipeline.toml").read_text())
    monkeypatch.setenv("EVENTFLEET_SCHEMA", (ROOT / "schemas" / "ad_event.avsc").read_text())
    monkeypatch.setenv("EVENTFLEET_BOOTSTRAP_SERVERS", "b-1.demo.kafka.eu-west-1.amazonaws.com:9098")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.chdir(tmp_path)
    pipeline = load("env:EVENTFLEET_PIPELINE")
    assert pipeline.kafka.auth == "msk-iam" and pipeline.kafka.region == "eu-west-1"
    assert pipeline.kafka.bootstrap_servers.endswith(":9098")
    main = (example / "main.tf").read_text()
    assert f'consumer_group = "{pipeline.kafka.group_id}"' in main
    assert f"topics         = {json.dumps(list(pipeline.kafka.topics))}" in main


# ---------------------------------------------------------------------------------------------
# terraform validate, where the AWS provider can be had


@pytest.mark.skipif(
    not os.environ.get("TF_PLUGIN_DIR"),
    reason="terraform validate needs the AWS provider: set TF_PLUGIN_DIR to a `terraform providers mirror` "
    "folder, or run make terraform-validate where registry.terraform.io is reachable",
)
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_terraform_validate(example: Path, tmp_path: Path) -> None:
    work = tmp_path / "repo"
    shutil.copytree(MODULE, work / "terraform")
    shutil.copytree(ROOT / "schemas", work / "schemas")
    here = work / "terraform" / "examples" / example.name
    _terraform(
        tmp_path, "init", "-input=false", "-backend=false", f"-plugin-dir={os.environ['TF_PLUGIN_DIR']}", cwd=here
    )
    _terraform(tmp_path, "validate", cwd=here)


def test_readme_tables_match_the_module() -> None:
    """terraform/README.md's inputs and outputs are generated from variables.tf and outputs.tf."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "terraform_docs.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    readme = (MODULE / "README.md").read_text()
    for name in [*_module("variable"), *_module("output")]:
        assert f"| `{name}` |" in readme, name
    assert "make terraform-validate" in readme


# ---------------------------------------------------------------------------------------------
# tail: an application and eventfleet tail beside it (off by default)


def _local_block(name: str) -> str:
    """A local of main.tf that spans lines (an object, a merge(...)), as written."""
    source = MAIN.read_text()
    start = re.search(rf"^  {name}\s*=\s*", source, flags=re.M)
    assert start, f"local {name} not in main.tf"
    depth, i = 0, start.end()
    for j, ch in enumerate(source[i:], i):
        depth += 1 if ch in "{[(" else -1 if ch in "}])" else 0
        if ch == "\n" and depth == 0:
            return source[i:j]
    raise AssertionError(f"local {name} does not end")


def test_tail_is_off_by_default_and_every_tail_resource_follows_it() -> None:
    variables = _module("variable")
    assert variables["tail_enabled"]["default"] is False
    tail_resources = {k: v for k, v in _module("resource").items() if k.split(".")[1].startswith("tail")}
    assert set(tail_resources) == {"aws_iam_role_policy.tail_msk", "aws_iam_role_policy.tail_glue"}
    tail_resources["module.tail"] = _call("tail")
    counts = ("${var.tail_enabled ? 1 : 0}", "${local.msk_tail ? 1 : 0}",
              "${var.tail_enabled && var.glue_schema_registry != null ? 1 : 0}")  # fmt: skip
    for name, body in tail_resources.items():
        assert body["count"] in counts, name
    glue = tail_resources["aws_iam_role_policy.tail_glue"]
    assert glue["role"] == "${module.tail[0].task_role_id}", "the tailer's own role, not the fleet's"
    assert glue["policy"] == "${data.aws_iam_policy_document.glue[0].json}", "the workers' Glue permissions"
    assert _locals_source()["msk_tail"] == "var.tail_enabled && local.on_msk"


def test_tail_task_shares_a_log_volume_between_the_app_and_the_tailer() -> None:
    tail = _call("tail")
    assert tail["containers"] == ["${local.tail_container}", "${local.tail_app}"]
    assert tail["role_suffix"] != _call("fleet")["role_suffix"], "the tailer's own role, not the fleet's"
    assert tail["volumes"].startswith('${concat(["logs"]'), "the log volume, always"
    assert tail["min_tasks"] == tail["max_tasks"] == "${var.tail_tasks}", "a fixed count"
    task = _service("aws_ecs_task_definition.this")
    assert task["container_definitions"] == "${jsonencode(var.containers)}"
    assert task["task_role_arn"] == "${aws_iam_role.task.arn}"
    assert task["dynamic"][1]["volume"]["for_each"] == "${var.volumes}"
    service = _service("aws_ecs_service.this")
    assert service["desired_count"] == "${var.min_tasks}"
    assert service["task_definition"] == "${aws_ecs_task_definition.this.arn}"


def _evaluate_tail(tmp_path: Path, app: dict[str, Any] | None, **variables: Any) -> dict[str, Any]:
    """tail_app and tail_container (with what it shares with the fleet's container) as main.tf
    writes them, evaluated by terraform; the log group (a resource) and the fleet's environment
    stand in as fixed locals."""
    module = tmp_path / "tail"
    module.mkdir()
    inputs = {
        "tail_app_container": app,
        "image": "eventfleet:1.2.3",
        "tail_log_path": "/var/log/app",
        "tail_metrics_port": 9401,
        "tail_stop_timeout": 30,
        "readonly_root_filesystem": False,
        **variables,
    }
    fixed = {
        "region": "eu-west-1",
        "log_group_name": "/ecs/shop",
        "environment": {"AWS_REGION": "eu-west-1"},
        "secrets": {"EVENTFLEET_PIPELINE": "arn:aws:ssm:x"},
    }
    shared = {name: _local_block(name) for name in ("eventfleet_container", "awslogs_options", "tail_container")}
    shared["awslogs_options"] = shared["awslogs_options"].replace(
        "aws_cloudwatch_log_group.fleet.name", "local.log_group_name"
    )
    module.joinpath("main.tf").write_text(
        "\n".join(f'variable "{v}" {{\n  type    = any\n  default = null\n}}' for v in inputs)
        + "\n".join(f'\nvariable "fixed_{f}" {{\n  type    = any\n}}' for f in fixed)
        + "\nlocals {\n"
        + "".join(f"  {f} = var.fixed_{f}\n" for f in fixed)
        + "".join(f"  {name} = {text}\n" for name, text in shared.items())
        + f"  tail_app = {_local_block('tail_app')}\n}}\n"
        + 'output "tail_container" {\n  value = local.tail_container\n}\n'
        + 'output "tail_app" {\n  value = local.tail_app\n}\n'
    )
    args = [f"  {k} = {_hcl_value(v)}" for k, v in inputs.items()]
    args += [f"  fixed_{k} = {_hcl_value(v)}" for k, v in fixed.items()]
    tmp_path.joinpath("main.tf").write_text(
        'module "t" {\n  source = "./tail"\n' + "\n".join(args) + '\n}\noutput "t" {\n  value = module.t\n}\n'
    )
    _terraform(tmp_path, "init", "-input=false", "-backend=false", cwd=tmp_path)
    _terraform(tmp_path, "apply", "-input=false", "-auto-approve", cwd=tmp_path)
    value: dict[str, Any] = json.loads(_terraform(tmp_path, "output", "-json", cwd=tmp_path).stdout)["t"]["value"]
    return value


def test_the_app_writes_the_volume_the_tailer_reads_and_stops_first(tmp_path: Path) -> None:
    app = {
        "name": "shop",
        "image": "registry.example.com/shop:1.0.0",
        "essential": True,
        "portMappings": [{"containerPort": 8080}],
        "mountPoints": [{"sourceVolume": "cache", "containerPath": "/cache", "readOnly": False}],
    }
    got = _evaluate_tail(tmp_path, app, tail_log_path="/srv/shop/logs", tail_metrics_port=9500)
    shop, tailer = got["tail_app"], got["tail_container"]
    assert shop["name"] == "shop" and shop["portMappings"] == app["portMappings"], "the caller's definition, kept"
    assert shop["mountPoints"] == [
        *app["mountPoints"],
        {"sourceVolume": "logs", "containerPath": "/srv/shop/logs", "readOnly": False},
    ]
    # ECS stops containers in the reverse order of their dependencies: the app, then the tailer
    assert shop["dependsOn"] == [{"containerName": "tail", "condition": "START"}]
    assert tailer["mountPoints"] == [{"sourceVolume": "logs", "containerPath": "/srv/shop/logs", "readOnly": True}]
    assert tailer["essential"] is False and tailer["restartPolicy"]["enabled"] is True, "restarted in place"
    assert tailer["image"] == "eventfleet:1.2.3" and tailer["entryPoint"] == ["eventfleet"]
    assert tailer["portMappings"] == [{"name": "tail-metrics", "containerPort": 9500, "protocol": "tcp"}]
    assert "http://127.0.0.1:9500/healthz" in tailer["healthCheck"]["command"][1]
    assert tailer["stopTimeout"] == 30
    assert tailer["logConfiguration"]["options"]["awslogs-group"] == "/ecs/shop"
    assert tailer["secrets"] == [{"name": "EVENTFLEET_PIPELINE", "valueFrom": "arn:aws:ssm:x"}]
    command = tailer["command"]
    assert command[command.index("tail") + 1 :] == ["--config", "env:EVENTFLEET_PIPELINE", "--metrics-port", "9500"]
    from consumer import commands

    parser = commands.parser()
    if "tail" not in next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices:
        pytest.skip("eventfleet tail is not in this build yet (branch tail)")
    args = parser.parse_args(command)
    assert (args.config, args.metrics_port) == ("env:EVENTFLEET_PIPELINE", 9500)


def test_the_tailers_msk_arns(tmp_path: Path) -> None:
    cluster = "arn:aws:kafka:eu-west-1:123456789012:cluster/ad-stats/0f1e2d3c-aaaa-bbbb-cccc-0123456789ab-2"
    on_msk = {"on_msk": True, "msk_cluster_arn": cluster}
    cases = {
        "default_topic": ({"tail_topic": None, "topics": ["ad-events", "clicks"], "tail_enabled": True}, on_msk),
        "own_topic": ({"tail_topic": "app-logs", "topics": ["ad-events"], "tail_enabled": True}, on_msk),
        "off": ({"tail_topic": None, "topics": ["ad-events"], "tail_enabled": False}, on_msk),
    }
    names = [
        "msk_arn_base",
        "msk_cluster_path",
        "tail_topic",
        "tail_positions_topic",
        "tail_dlq_topic",
        "msk_tail",
        "msk_tail_topic_arns",
        "msk_tail_created_arns",
        "msk_tail_positions_arn",
        "msk_tail_transactional_arn",
    ]
    got = _evaluate(tmp_path, cases, names)
    base, path = "arn:aws:kafka:eu-west-1:123456789012", "ad-stats/0f1e2d3c-aaaa-bbbb-cccc-0123456789ab-2"
    d = got["default_topic"]
    assert d["msk_tail_topic_arns"] == [
        f"{base}:topic/{path}/ad-events",
        f"{base}:topic/{path}/ad-events.dlq",
        f"{base}:topic/{path}/ad-events.tail-positions",
    ]
    assert d["msk_tail_created_arns"] == d["msk_tail_topic_arns"][1:]
    assert d["msk_tail_positions_arn"] == f"{base}:topic/{path}/ad-events.tail-positions"
    assert d["msk_tail_transactional_arn"] == f"{base}:transactional-id/{path}/eventfleet-tail-*"
    assert got["own_topic"]["msk_tail_positions_arn"] == f"{base}:topic/{path}/app-logs.tail-positions"
    assert got["off"]["msk_tail_topic_arns"] == [] and got["off"]["msk_tail_transactional_arn"] is None
