################################################################################
# Context
################################################################################

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  region     = data.aws_region.current.name
  tags       = merge(var.tags, { "eventfleet:fleet" = var.name })

  # Each worker process is one consumer of the group, and a partition has one consumer at a time:
  # tasks beyond ceil(partitions / workers_per_task) would hold no partition and sit idle.
  workers_per_task = var.workers_per_task != null ? var.workers_per_task : max(1, floor(var.cpu / 1024))
  task_ceiling     = ceil(var.partitions / local.workers_per_task)
  max_tasks        = var.max_tasks != null ? var.max_tasks : local.task_ceiling

  kms_key_arn = var.create_kms_key ? one(aws_kms_key.this[*].arn) : var.kms_key_arn

  # MSK: created here, or an existing cluster's ARN; null for Kafka outside MSK.
  on_msk            = var.create_msk_cluster || var.msk_cluster_arn != null
  msk_cluster_arn   = var.create_msk_cluster ? one(aws_msk_cluster.this[*].arn) : var.msk_cluster_arn
  msk_cluster_name  = local.on_msk ? split("/", local.msk_cluster_arn)[1] : null
  bootstrap_servers = var.create_msk_cluster ? one(aws_msk_cluster.this[*].bootstrap_brokers_sasl_iam) : var.bootstrap_servers
  dlq_topics        = var.dlq_topics != null ? var.dlq_topics : [for t in var.topics : "${t}.dlq"]

  # MSK IAM resource ARNs: arn:PARTITION:kafka:REGION:ACCOUNT:{cluster,topic,group}/NAME/UUID[/...]
  msk_arn_base     = local.on_msk ? split(":cluster/", local.msk_cluster_arn)[0] : null
  msk_cluster_path = local.on_msk ? split(":cluster/", local.msk_cluster_arn)[1] : null
  msk_topic_arns   = [for t in var.topics : "${local.msk_arn_base}:topic/${local.msk_cluster_path}/${t}" if local.on_msk]
  msk_dlq_arns     = [for t in local.dlq_topics : "${local.msk_arn_base}:topic/${local.msk_cluster_path}/${t}" if local.on_msk]
  msk_group_arn    = local.on_msk ? "${local.msk_arn_base}:group/${local.msk_cluster_path}/${var.consumer_group}" : null

  ecs_cluster_arn  = var.create_ecs_cluster ? one(aws_ecs_cluster.this[*].arn) : var.ecs_cluster_arn
  ecs_cluster_name = var.create_ecs_cluster ? var.name : split("/", coalesce(var.ecs_cluster_arn, "/"))[1]

  lag_scaling = var.lag_scaling_enabled && local.on_msk
  lag_alarm   = var.lag_alarm_threshold != null && local.on_msk

  # A SQLite sink is a file inside one task: tasks cannot share it, so such a pipeline runs as one task.
  sqlite_sink = can(regex("(?m)^\\s*type\\s*=\\s*[\"']sqlite[\"']", var.pipeline_toml))

  # Fargate's memory sizes (MiB) for each CPU size.
  fargate_memory = {
    "256"   = [512, 1024, 2048]
    "512"   = range(1024, 4097, 1024)
    "1024"  = range(2048, 8193, 1024)
    "2048"  = range(4096, 16385, 1024)
    "4096"  = range(8192, 30721, 1024)
    "8192"  = range(16384, 61441, 4096)
    "16384" = range(32768, 122881, 8192)
  }
}

################################################################################
# KMS key (logs, pipeline parameters, MSK at rest)
################################################################################

resource "aws_kms_key" "this" {
  count = var.create_kms_key ? 1 : 0

  description             = "eventfleet ${var.name}: CloudWatch logs, pipeline parameters, MSK storage"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  # The account administers the key through IAM; CloudWatch Logs may use it for this account's log
  # groups only. SSM and MSK use it on behalf of the principals that IAM allows.
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "AccountAdministersTheKeyThroughIam"
        Effect    = "Allow"
        Principal = { AWS = "arn:${local.partition}:iam::${local.account_id}:root" }
        Action    = "kms:*"
        Resource  = "*"
      },
      {
        Sid       = "CloudWatchLogsOfThisAccount"
        Effect    = "Allow"
        Principal = { Service = "logs.${local.region}.amazonaws.com" }
        Action    = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
        Resource  = "*"
        Condition = {
          ArnLike = {
            "kms:EncryptionContext:aws:logs:arn" = "arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:*"
          }
        }
      },
    ]
  })

  tags = local.tags
}

resource "aws_kms_alias" "this" {
  count = var.create_kms_key ? 1 : 0

  name          = "alias/${var.name}-eventfleet"
  target_key_id = aws_kms_key.this[0].key_id
}

################################################################################
# Pipeline configuration (SSM Parameter Store)
################################################################################

resource "aws_ssm_parameter" "pipeline" {
  count = var.config_delivery == "ssm" ? 1 : 0

  name        = "/${var.name}/eventfleet/pipeline.toml"
  description = "eventfleet pipeline of ${var.name}: the task reads it as EVENTFLEET_PIPELINE (--config env:EVENTFLEET_PIPELINE)"
  type        = "SecureString"
  key_id      = local.kms_key_arn
  tier        = length(var.pipeline_toml) > 4096 ? "Advanced" : "Standard"
  value       = var.pipeline_toml

  tags = local.tags
}

resource "aws_ssm_parameter" "schema" {
  count = var.config_delivery == "ssm" && var.schema_avsc != null ? 1 : 0

  name        = "/${var.name}/eventfleet/schema.avsc"
  description = "Avro writer schema of ${var.name}: the task reads it as EVENTFLEET_SCHEMA ([schema] path = \"env:EVENTFLEET_SCHEMA\")"
  type        = "SecureString"
  key_id      = local.kms_key_arn
  tier        = length(var.schema_avsc) > 4096 ? "Advanced" : "Standard"
  value       = var.schema_avsc

  tags = local.tags
}

################################################################################
# Logs
################################################################################

resource "aws_cloudwatch_log_group" "fleet" {
  #checkov:skip=CKV_AWS_338:Retention is the log_retention_days input: 30 days of operational logs by default, 365 or more where an audit policy asks for it.
  name              = "/ecs/${var.name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = local.kms_key_arn

  tags = local.tags

  lifecycle {
    precondition {
      condition     = var.create_kms_key || var.kms_key_arn != null
      error_message = "Set kms_key_arn when create_kms_key is false."
    }
  }
}

################################################################################
# IAM: execution role (ECS agent: image, logs, secrets) and task role (the fleet: MSK)
################################################################################

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    sid     = "EcsTasksOfThisAccount"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "execution" {
  name_prefix        = "${var.name}-exec-"
  description        = "ECS agent of ${var.name}: pulls the image, writes logs, reads the pipeline parameters"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json

  tags = local.tags
}

resource "aws_iam_role_policy_attachment" "execution" {
  role       = aws_iam_role.execution.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

locals {
  ssm_secret_arns = concat(
    aws_ssm_parameter.pipeline[*].arn,
    aws_ssm_parameter.schema[*].arn,
    [for arn in values(var.secrets) : arn if can(regex("^arn:aws[a-z-]*:ssm:", arn))],
  )
  registry_secret_arns = var.schema_registry_secret_arn == null ? [] : [var.schema_registry_secret_arn]
  secretsmanager_arns  = concat([for arn in values(var.secrets) : arn if can(regex("^arn:aws[a-z-]*:secretsmanager:", arn))], local.registry_secret_arns)
}

data "aws_iam_policy_document" "execution" {
  dynamic "statement" {
    for_each = length(local.ssm_secret_arns) > 0 ? [1] : []
    content {
      sid       = "ReadThePipelineParameters"
      actions   = ["ssm:GetParameters"]
      resources = local.ssm_secret_arns
    }
  }

  dynamic "statement" {
    for_each = length(local.secretsmanager_arns) > 0 ? [1] : []
    content {
      sid       = "ReadTheGivenSecrets"
      actions   = ["secretsmanager:GetSecretValue"]
      resources = local.secretsmanager_arns
    }
  }

  statement {
    sid       = "DecryptWithTheFleetKey"
    actions   = ["kms:Decrypt"]
    resources = [local.kms_key_arn]
  }
}

resource "aws_iam_role_policy" "execution" {
  name   = "pipeline-secrets"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution.json
}

# Least privilege for MSK IAM access control: what eventfleet's clients do, on exactly the cluster,
# topics and group of this pipeline. The consumer joins the group and commits (AlterGroup), reads
# committed offsets (DescribeGroup) and reads the topics; the dead-letter producer is idempotent
# (WriteDataIdempotently) and may create its missing topics; the preflight lists topic metadata.
data "aws_iam_policy_document" "msk" {
  count = local.on_msk ? 1 : 0

  statement {
    sid       = "ConnectToTheCluster"
    actions   = ["kafka-cluster:Connect", "kafka-cluster:WriteDataIdempotently"]
    resources = [local.msk_cluster_arn]
  }

  statement {
    sid       = "ReadTheSourceTopics"
    actions   = ["kafka-cluster:DescribeTopic", "kafka-cluster:ReadData"]
    resources = local.msk_topic_arns
  }

  statement {
    sid       = "JoinAndCommitTheGroup"
    actions   = ["kafka-cluster:DescribeGroup", "kafka-cluster:AlterGroup"]
    resources = [local.msk_group_arn]
  }

  dynamic "statement" {
    for_each = length(local.dlq_topics) > 0 ? [1] : []
    content {
      sid       = "WriteTheDeadLetterTopics"
      actions   = concat(["kafka-cluster:DescribeTopic", "kafka-cluster:WriteData"], var.dlq_topic_auto_create ? ["kafka-cluster:CreateTopic"] : [])
      resources = local.msk_dlq_arns
    }
  }
}

resource "aws_iam_role_policy" "task_msk" {
  count = local.on_msk ? 1 : 0

  name   = "msk-iam"
  role   = module.fleet.task_role_id
  policy = data.aws_iam_policy_document.msk[0].json
}

# AWS Glue Schema Registry ([schema] registry = "glue"). A worker fetches each writer schema by its
# schema version UUID, and GetSchemaVersion by SchemaVersionId cannot be scoped: the request names
# no registry or schema, and Glue authorizes it only against "*" (AWS's Glue documentation, "IAM
# examples for deserializers"). Creating schemas and versions (register) is scoped to the registry.
locals {
  glue_registry_name = var.glue_schema_registry != null ? var.glue_schema_registry.registry_name : null
  glue_register      = var.glue_schema_registry != null ? var.glue_schema_registry.register : false
  glue_registry_arn  = local.glue_registry_name != null ? "arn:${local.partition}:glue:${local.region}:${local.account_id}:registry/${local.glue_registry_name}" : null
  glue_schemas_arn   = local.glue_registry_name != null ? "arn:${local.partition}:glue:${local.region}:${local.account_id}:schema/${local.glue_registry_name}/*" : null
}

data "aws_iam_policy_document" "glue" {
  count = var.glue_schema_registry != null ? 1 : 0

  #checkov:skip=CKV_AWS_356:glue:GetSchemaVersion by SchemaVersionId names no registry or schema, so Glue authorizes it only on "*" (AWS's IAM example for deserializers); it reads schema definitions, nothing else.
  statement {
    sid       = "ReadWriterSchemasByVersionId"
    actions   = ["glue:GetSchemaVersion"]
    resources = ["*"]
  }

  dynamic "statement" {
    for_each = local.glue_register ? [1] : []
    content {
      sid       = "RegisterSchemasInTheRegistry"
      actions   = ["glue:GetSchemaByDefinition", "glue:CreateSchema", "glue:RegisterSchemaVersion"]
      resources = [local.glue_registry_arn, local.glue_schemas_arn]
    }
  }
}

resource "aws_iam_role_policy" "task_glue" {
  count = var.glue_schema_registry != null ? 1 : 0

  name   = "glue-schema-registry"
  role   = module.fleet.task_role_id
  policy = data.aws_iam_policy_document.glue[0].json
}

################################################################################
# Security groups
################################################################################

resource "aws_security_group" "tasks" {
  name_prefix = "${var.name}-tasks-"
  description = "eventfleet tasks of ${var.name}: out to Kafka and AWS APIs, in to /metrics only from the given scrapers"
  vpc_id      = var.vpc_id

  tags = merge(local.tags, { Name = "${var.name}-tasks" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_egress_rule" "tasks_https" {
  security_group_id = aws_security_group.tasks.id
  description       = "AWS APIs over HTTPS: ECR, CloudWatch Logs, SSM, STS (through NAT or VPC endpoints)"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"

  tags = local.tags
}

resource "aws_vpc_security_group_egress_rule" "tasks_to_msk" {
  for_each = var.create_msk_cluster ? toset(["9098"]) : toset([])

  security_group_id            = aws_security_group.tasks.id
  description                  = "The created MSK cluster's IAM listener"
  ip_protocol                  = "tcp"
  from_port                    = tonumber(each.key)
  to_port                      = tonumber(each.key)
  referenced_security_group_id = aws_security_group.msk[0].id

  tags = local.tags
}

resource "aws_vpc_security_group_egress_rule" "tasks_to_kafka_sg" {
  for_each = !var.create_msk_cluster && var.kafka_security_group_id != null ? toset([for p in var.kafka_ports : tostring(p)]) : toset([])

  security_group_id            = aws_security_group.tasks.id
  description                  = "Kafka brokers of the existing cluster, port ${each.key}"
  ip_protocol                  = "tcp"
  from_port                    = tonumber(each.key)
  to_port                      = tonumber(each.key)
  referenced_security_group_id = var.kafka_security_group_id

  tags = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "kafka_sg_from_tasks" {
  for_each = !var.create_msk_cluster && var.kafka_security_group_id != null ? toset([for p in var.kafka_ports : tostring(p)]) : toset([])

  security_group_id            = var.kafka_security_group_id
  description                  = "eventfleet tasks of ${var.name}, port ${each.key}"
  ip_protocol                  = "tcp"
  from_port                    = tonumber(each.key)
  to_port                      = tonumber(each.key)
  referenced_security_group_id = aws_security_group.tasks.id

  tags = local.tags
}

resource "aws_vpc_security_group_egress_rule" "tasks_to_kafka_cidr" {
  for_each = { for pair in setproduct(var.kafka_egress_cidr_blocks, var.kafka_ports) : "${pair[0]}:${pair[1]}" => pair if !var.create_msk_cluster }

  security_group_id = aws_security_group.tasks.id
  description       = "Kafka brokers in ${each.value[0]}, port ${each.value[1]}"
  ip_protocol       = "tcp"
  from_port         = each.value[1]
  to_port           = each.value[1]
  cidr_ipv4         = each.value[0]

  tags = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "tasks_metrics" {
  for_each = toset(var.metrics_ingress_security_group_ids)

  security_group_id            = aws_security_group.tasks.id
  description                  = "Prometheus scrapes of /metrics"
  ip_protocol                  = "tcp"
  from_port                    = var.metrics_port
  to_port                      = var.metrics_port
  referenced_security_group_id = each.value

  tags = local.tags
}

################################################################################
# MSK cluster (optional): IAM access control, TLS in transit, encryption at rest, lag metrics
################################################################################

resource "aws_security_group" "msk" {
  count = var.create_msk_cluster ? 1 : 0

  name_prefix = "${var.name}-msk-"
  description = "MSK brokers of ${var.name}: the IAM listener (9098) from the fleet and the given clients"
  vpc_id      = var.vpc_id

  tags = merge(local.tags, { Name = "${var.name}-msk" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "msk_from_tasks" {
  count = var.create_msk_cluster ? 1 : 0

  security_group_id            = aws_security_group.msk[0].id
  description                  = "eventfleet tasks over MSK IAM (TLS)"
  ip_protocol                  = "tcp"
  from_port                    = 9098
  to_port                      = 9098
  referenced_security_group_id = aws_security_group.tasks.id

  tags = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "msk_from_clients" {
  for_each = var.create_msk_cluster ? toset(var.msk_client_security_group_ids) : toset([])

  security_group_id            = aws_security_group.msk[0].id
  description                  = "Other clients over MSK IAM (TLS)"
  ip_protocol                  = "tcp"
  from_port                    = 9098
  to_port                      = 9098
  referenced_security_group_id = each.value

  tags = local.tags
}

resource "aws_cloudwatch_log_group" "msk" {
  count = var.create_msk_cluster ? 1 : 0

  #checkov:skip=CKV_AWS_338:Retention is the log_retention_days input: 30 days of broker logs by default, 365 or more where an audit policy asks for it.
  name              = "/aws/msk/${var.name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = local.kms_key_arn

  tags = local.tags
}

resource "aws_msk_configuration" "this" {
  count = var.create_msk_cluster ? 1 : 0

  name        = "${var.name}-eventfleet"
  description = "eventfleet ${var.name}: topics are created on purpose, and acknowledged writes survive a broker loss"
  # No auto-created topics: a typo in [kafka] topics fails fast instead of creating an empty topic.
  server_properties = <<-EOT
    auto.create.topics.enable = false
    default.replication.factor = 3
    min.insync.replicas = 2
    num.partitions = ${var.partitions}
  EOT
}

resource "aws_msk_cluster" "this" {
  count = var.create_msk_cluster ? 1 : 0

  cluster_name           = var.name
  kafka_version          = var.msk_kafka_version
  number_of_broker_nodes = var.msk_broker_count
  enhanced_monitoring    = var.msk_enhanced_monitoring

  broker_node_group_info {
    instance_type   = var.msk_instance_type
    client_subnets  = var.subnet_ids
    security_groups = [aws_security_group.msk[0].id]

    storage_info {
      ebs_storage_info {
        volume_size = var.msk_volume_size_gib
      }
    }
  }

  client_authentication {
    unauthenticated = false

    sasl {
      iam = true
    }
  }

  encryption_info {
    encryption_at_rest_kms_key_arn = local.kms_key_arn

    encryption_in_transit {
      client_broker = "TLS"
      in_cluster    = true
    }
  }

  configuration_info {
    arn      = aws_msk_configuration.this[0].arn
    revision = aws_msk_configuration.this[0].latest_revision
  }

  logging_info {
    broker_logs {
      cloudwatch_logs {
        enabled   = true
        log_group = aws_cloudwatch_log_group.msk[0].name
      }
    }
  }

  tags = local.tags

  lifecycle {
    precondition {
      condition     = length(var.subnet_ids) <= 3
      error_message = "An MSK cluster spans two or three Availability Zones: give it two or three subnet_ids."
    }
    precondition {
      condition     = var.msk_broker_count % length(var.subnet_ids) == 0
      error_message = "msk_broker_count must be a multiple of the number of subnet_ids (MSK spreads brokers evenly over the Availability Zones)."
    }
  }
}

################################################################################
# ECS cluster, task definition and service
################################################################################

resource "aws_ecs_cluster" "this" {
  count = var.create_ecs_cluster ? 1 : 0

  name = var.name

  # RunningTaskCount, which lag scaling divides by, comes from Container Insights.
  setting {
    name  = "containerInsights"
    value = "enabled"
  }

  tags = local.tags
}

locals {
  # The schema registry: its URL, and its credentials as single JSON keys of the secret (ECS
  # reads one key of a Secrets Manager secret with valueFrom "ARN:KEY::").
  registry_secret_keys = { basic = { EVENTFLEET_REGISTRY_USERNAME = "username", EVENTFLEET_REGISTRY_PASSWORD = "password" }, bearer = { EVENTFLEET_REGISTRY_TOKEN = "token" } }
  registry_environment = var.schema_registry_url == null ? {} : { EVENTFLEET_REGISTRY_URL = var.schema_registry_url }
  registry_secrets     = var.schema_registry_secret_arn == null ? {} : { for name, key in local.registry_secret_keys[var.schema_registry_auth] : name => "${var.schema_registry_secret_arn}:${key}::" }

  # What the task knows of its cluster; the pipeline file refers to it as ${EVENTFLEET_BOOTSTRAP_SERVERS}.
  environment = merge(
    var.environment,
    local.registry_environment,
    { AWS_REGION = local.region },
    local.bootstrap_servers != null ? { EVENTFLEET_BOOTSTRAP_SERVERS = local.bootstrap_servers } : {},
    var.config_delivery == "environment" ? { EVENTFLEET_PIPELINE = var.pipeline_toml } : {},
    var.config_delivery == "environment" && var.schema_avsc != null ? { EVENTFLEET_SCHEMA = var.schema_avsc } : {},
  )
  secrets = merge(
    var.secrets,
    local.registry_secrets,
    var.config_delivery == "ssm" ? { EVENTFLEET_PIPELINE = aws_ssm_parameter.pipeline[0].arn } : {},
    var.config_delivery == "ssm" && var.schema_avsc != null ? { EVENTFLEET_SCHEMA = aws_ssm_parameter.schema[0].arn } : {},
  )

  health_check_command = var.health_check_command != null ? var.health_check_command : [
    "CMD-SHELL",
    "python -c \"import urllib.request; urllib.request.urlopen('http://127.0.0.1:${var.metrics_port}/healthz', timeout=4)\"",
  ]

  # What the fleet's container and the tailer share: the image, its entry point, ECS's init process
  # (it forwards SIGTERM and reaps), and JSON lines to the fleet's log group. A slow CloudWatch
  # never stalls them: past 4 MB of buffered lines, log lines (not events) are dropped. Each names
  # the task's environment and secrets itself: through a shared local, checkov no longer resolves
  # the service module's inputs.
  eventfleet_container = {
    image                  = var.image
    entryPoint             = ["eventfleet"]
    readonlyRootFilesystem = var.readonly_root_filesystem
    linuxParameters        = { initProcessEnabled = true }
  }
  awslogs_options = {
    awslogs-group   = aws_cloudwatch_log_group.fleet.name
    awslogs-region  = local.region
    mode            = "non-blocking"
    max-buffer-size = "4m"
  }

  # The supervisor runs workers_per_task workers, logs JSON lines (for the error alarm's filter) and
  # serves /metrics and /healthz on metrics_port.
  container = merge(
    local.eventfleet_container,
    {
      name        = "eventfleet"
      essential   = true
      command     = ["--log-format", "json", "run", "--config", "env:EVENTFLEET_PIPELINE", "--workers", tostring(local.workers_per_task), "--metrics-port", tostring(var.metrics_port)]
      environment = [for k in sort(keys(local.environment)) : { name = k, value = local.environment[k] }]
      secrets     = [for k in sort(keys(local.secrets)) : { name = k, valueFrom = local.secrets[k] }]
      portMappings = [{
        name          = "metrics"
        containerPort = var.metrics_port
        protocol      = "tcp"
      }]
      stopTimeout = var.stop_timeout
      mountPoints = var.readonly_root_filesystem ? [
        { sourceVolume = "tmp", containerPath = "/tmp", readOnly = false },
        { sourceVolume = "data", containerPath = "/var/lib/eventfleet", readOnly = false },
      ] : []
      logConfiguration = { logDriver = "awslogs", options = merge(local.awslogs_options, { awslogs-stream-prefix = "eventfleet" }) }
    },
    length(local.health_check_command) == 0 ? {} : {
      healthCheck = {
        command     = local.health_check_command
        interval    = 15
        timeout     = 5
        retries     = 3
        startPeriod = 60
      }
    },
  )
}

module "fleet" {
  source = "./modules/service"

  name               = var.name
  role_suffix        = "task"
  role_description   = "The eventfleet workers of ${var.name}: MSK IAM access to their topics, group and dead-letter topics"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  execution_role_arn = aws_iam_role.execution.arn

  containers            = [local.container]
  volumes               = var.readonly_root_filesystem ? ["tmp", "data"] : []
  ephemeral_storage_gib = var.ephemeral_storage_gib
  cpu                   = var.cpu
  memory                = var.memory
  cpu_architecture      = var.cpu_architecture

  cluster_arn        = local.ecs_cluster_arn
  cluster_name       = local.ecs_cluster_name
  min_tasks          = var.min_tasks
  max_tasks          = local.max_tasks
  subnet_ids         = var.subnet_ids
  security_group_ids = [aws_security_group.tasks.id]
  assign_public_ip   = var.assign_public_ip

  preconditions = [
    {
      condition     = contains(local.fargate_memory[tostring(var.cpu)], var.memory)
      error_message = "memory ${var.memory} MiB is not a Fargate size for cpu ${var.cpu}: allowed are ${join(", ", local.fargate_memory[tostring(var.cpu)])}."
    },
    {
      condition     = strcontains(var.pipeline_toml, var.consumer_group) && alltrue([for t in var.topics : strcontains(var.pipeline_toml, t)])
      error_message = "pipeline_toml must name the consumer_group and every topic given to the module: IAM permissions and lag metrics are scoped to them."
    },
    {
      condition     = var.create_msk_cluster || var.bootstrap_servers != null || !strcontains(var.pipeline_toml, "EVENTFLEET_BOOTSTRAP_SERVERS")
      error_message = "pipeline_toml reads $${EVENTFLEET_BOOTSTRAP_SERVERS}: set bootstrap_servers, or create_msk_cluster = true."
    },
    {
      condition     = var.schema_registry_secret_arn == null || var.schema_registry_url != null
      error_message = "schema_registry_secret_arn holds credentials for a registry: set schema_registry_url too."
    },
    {
      condition     = var.schema_registry_url != null || contains(keys(var.environment), "EVENTFLEET_REGISTRY_URL") || !strcontains(var.pipeline_toml, "EVENTFLEET_REGISTRY_URL")
      error_message = "pipeline_toml reads $${EVENTFLEET_REGISTRY_URL}: set schema_registry_url."
    },
    {
      condition     = var.create_ecs_cluster || var.ecs_cluster_arn != null
      error_message = "Set ecs_cluster_arn when create_ecs_cluster is false."
    },
    {
      condition     = local.max_tasks <= local.task_ceiling
      error_message = "max_tasks ${local.max_tasks} exceeds ceil(partitions / workers_per_task) = ${local.task_ceiling}: the extra tasks would hold no partition."
    },
    {
      condition     = var.min_tasks <= local.max_tasks
      error_message = "min_tasks must not exceed the task ceiling (${local.max_tasks})."
    },
    {
      condition     = !local.sqlite_sink || local.max_tasks == 1
      error_message = "The pipeline's sink is SQLite, a file inside one task that other tasks cannot share: set max_tasks = 1, or use a sink that every task shares."
    },
  ]

  tags = local.tags
}

################################################################################
# Autoscaling: CPU and consumer lag, never beyond one worker per partition
################################################################################

resource "aws_appautoscaling_policy" "cpu" {
  name               = "${var.name}-cpu"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = module.fleet.scalable_target.service_namespace
  resource_id        = module.fleet.scalable_target.resource_id
  scalable_dimension = module.fleet.scalable_target.scalable_dimension

  target_tracking_scaling_policy_configuration {
    target_value       = var.cpu_target_percent
    scale_in_cooldown  = var.scale_in_cooldown
    scale_out_cooldown = var.scale_out_cooldown

    predefined_metric_specification {
      predefined_metric_type = "ECSServiceAverageCPUUtilization"
    }
  }
}

# Backlog per task: the group's lag summed over its topics (MSK, AWS/Kafka SumOffsetLag) divided by
# the running tasks (Container Insights). Target tracking adds tasks while each holds more than the
# target. MSK publishes no lag while the group rebalances: the policy then waits, it does not scale in.
resource "aws_appautoscaling_policy" "lag" {
  count = local.lag_scaling ? 1 : 0

  name               = "${var.name}-consumer-lag"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = module.fleet.scalable_target.service_namespace
  resource_id        = module.fleet.scalable_target.resource_id
  scalable_dimension = module.fleet.scalable_target.scalable_dimension

  target_tracking_scaling_policy_configuration {
    target_value       = var.lag_target_per_task
    scale_in_cooldown  = var.scale_in_cooldown
    scale_out_cooldown = var.scale_out_cooldown

    customized_metric_specification {
      dynamic "metrics" {
        for_each = var.topics
        content {
          id          = "lag${metrics.key}"
          label       = "SumOffsetLag ${metrics.value}"
          return_data = false

          metric_stat {
            stat = "Maximum"

            metric {
              namespace   = "AWS/Kafka"
              metric_name = "SumOffsetLag"

              dimensions {
                name  = "Cluster Name"
                value = local.msk_cluster_name
              }
              dimensions {
                name  = "Consumer Group"
                value = var.consumer_group
              }
              dimensions {
                name  = "Topic"
                value = metrics.value
              }
            }
          }
        }
      }

      metrics {
        id          = "tasks"
        label       = "RunningTaskCount"
        return_data = false

        metric_stat {
          stat = "Average"

          metric {
            namespace   = "ECS/ContainerInsights"
            metric_name = "RunningTaskCount"

            dimensions {
              name  = "ClusterName"
              value = local.ecs_cluster_name
            }
            dimensions {
              name  = "ServiceName"
              value = module.fleet.service_name
            }
          }
        }
      }

      metrics {
        id          = "lagpertask"
        label       = "Consumer lag per task"
        expression  = "(${join(" + ", [for i, _ in var.topics : "lag${i}"])}) / tasks"
        return_data = true
      }
    }
  }
}

################################################################################
# Alarms: consumer lag, errors
################################################################################

resource "aws_cloudwatch_metric_alarm" "lag" {
  for_each = local.lag_alarm ? toset(var.topics) : toset([])

  alarm_name          = "${var.name}-consumer-lag-${each.key}"
  alarm_description   = "eventfleet ${var.name}: group ${var.consumer_group} is more than ${var.lag_alarm_threshold} messages behind on ${each.key} for ${var.lag_alarm_minutes} minutes"
  namespace           = "AWS/Kafka"
  metric_name         = "SumOffsetLag"
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = var.lag_alarm_minutes
  threshold           = var.lag_alarm_threshold
  comparison_operator = "GreaterThanThreshold"
  # No data while the group rebalances: keep the current state rather than flap.
  treat_missing_data = "missing"
  dimensions = {
    "Cluster Name"   = local.msk_cluster_name
    "Consumer Group" = var.consumer_group
    "Topic"          = each.key
  }
  alarm_actions = var.alarm_actions
  ok_actions    = var.alarm_actions

  tags = local.tags
}

resource "aws_cloudwatch_log_metric_filter" "errors" {
  count = var.error_alarm_threshold != null ? 1 : 0

  name           = "${var.name}-error-log-lines"
  log_group_name = aws_cloudwatch_log_group.fleet.name
  # The fleet logs JSON lines (--log-format json); eventfleet logs every failure it acts on at error.
  pattern = "{ ($.level = \"error\") || ($.level = \"critical\") }"

  metric_transformation {
    name          = "ErrorLogLines"
    namespace     = "eventfleet/${var.name}"
    value         = "1"
    default_value = "0"
    unit          = "Count"
  }
}

resource "aws_cloudwatch_metric_alarm" "errors" {
  count = var.error_alarm_threshold != null ? 1 : 0

  alarm_name          = "${var.name}-errors"
  alarm_description   = "eventfleet ${var.name}: more than ${var.error_alarm_threshold} error log lines in 5 minutes (see log group ${aws_cloudwatch_log_group.fleet.name})"
  namespace           = "eventfleet/${var.name}"
  metric_name         = "ErrorLogLines"
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = var.error_alarm_threshold
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions

  tags = local.tags

  depends_on = [aws_cloudwatch_log_metric_filter.errors]
}

################################################################################
# Tail (optional): an application and eventfleet tail beside it, sharing a log volume
################################################################################

locals {
  # What the tailer writes: its topic, that topic's dead letters and its positions (compacted),
  # all in one transaction per commit; its transactional id is eventfleet-tail-<[ingest] id>.
  tail_topic             = coalesce(var.tail_topic, var.topics[0])
  tail_positions_topic   = "${local.tail_topic}.tail-positions"
  tail_dlq_topic         = "${local.tail_topic}.dlq"
  msk_tail               = var.tail_enabled && local.on_msk
  msk_tail_topic_arns    = [for t in [local.tail_topic, local.tail_dlq_topic, local.tail_positions_topic] : "${local.msk_arn_base}:topic/${local.msk_cluster_path}/${t}" if local.msk_tail]
  msk_tail_created_arns  = [for t in [local.tail_dlq_topic, local.tail_positions_topic] : "${local.msk_arn_base}:topic/${local.msk_cluster_path}/${t}" if local.msk_tail]
  msk_tail_positions_arn = local.msk_tail ? "${local.msk_arn_base}:topic/${local.msk_cluster_path}/${local.tail_positions_topic}" : null
  # Each task's tailer is named after its host name (its files live on its own volume).
  msk_tail_transactional_arn = local.msk_tail ? "${local.msk_arn_base}:transactional-id/${local.msk_cluster_path}/eventfleet-tail-*" : null

  # The tailer: the same image, pipeline and environment as the fleet; `eventfleet tail` reads
  # [ingest] and serves /metrics, /healthz and /readyz on tail_metrics_port. Not essential: ECS
  # restarts it in place (the positions committed in Kafka say where to go on) without stopping
  # the application. Add it (with a "logs" volume) to a task definition of your own: output
  # tail_container_definition.
  tail_container = merge(local.eventfleet_container, {
    name          = "tail"
    essential     = false
    restartPolicy = { enabled = true, restartAttemptPeriod = 60 }
    command       = ["--log-format", "json", "tail", "--config", "env:EVENTFLEET_PIPELINE", "--metrics-port", tostring(var.tail_metrics_port)]
    environment   = [for k in sort(keys(local.environment)) : { name = k, value = local.environment[k] }]
    secrets       = [for k in sort(keys(local.secrets)) : { name = k, valueFrom = local.secrets[k] }]
    portMappings  = [{ name = "tail-metrics", containerPort = var.tail_metrics_port, protocol = "tcp" }]
    stopTimeout   = var.tail_stop_timeout
    # The tailer never writes, truncates nor deletes a log file.
    mountPoints = concat(
      [{ sourceVolume = "logs", containerPath = var.tail_log_path, readOnly = true }],
      var.readonly_root_filesystem ? [{ sourceVolume = "tail-tmp", containerPath = "/tmp", readOnly = false }] : [],
    )
    healthCheck = {
      command     = ["CMD-SHELL", "python -c \"import urllib.request; urllib.request.urlopen('http://127.0.0.1:${var.tail_metrics_port}/healthz', timeout=4)\""]
      interval    = 15
      timeout     = 5
      retries     = 3
      startPeriod = 30
    }
    logConfiguration = { logDriver = "awslogs", options = merge(local.awslogs_options, { awslogs-stream-prefix = "tail" }) }
  })

  # The application writes to the log volume; it starts after the tailer and so stops before it
  # (ECS stops containers in the reverse order of their dependencies): the tailer reads the last
  # lines written and commits them on its SIGTERM.
  tail_app = var.tail_app_container == null ? null : merge(var.tail_app_container, {
    mountPoints = concat(try(var.tail_app_container.mountPoints, []), [{ sourceVolume = "logs", containerPath = var.tail_log_path, readOnly = false }])
    dependsOn   = concat(try(var.tail_app_container.dependsOn, []), [{ containerName = "tail", condition = "START" }])
  })
}

# Least privilege for the tailer on MSK: a transactional, idempotent producer of its topic, its
# dead-letter topic and its positions topic (both created when missing), a read_committed reader
# of the positions at start, and its transactional ids (eventfleet-tail-<name>).
data "aws_iam_policy_document" "msk_tail" {
  count = local.msk_tail ? 1 : 0

  statement {
    sid       = "ConnectToTheCluster"
    actions   = ["kafka-cluster:Connect", "kafka-cluster:WriteDataIdempotently"]
    resources = [local.msk_cluster_arn]
  }

  statement {
    sid       = "WriteTheLinesDeadLettersAndPositions"
    actions   = ["kafka-cluster:DescribeTopic", "kafka-cluster:WriteData"]
    resources = local.msk_tail_topic_arns
  }

  statement {
    sid       = "CreateTheDeadLetterAndPositionsTopics"
    actions   = ["kafka-cluster:CreateTopic"]
    resources = local.msk_tail_created_arns
  }

  statement {
    sid       = "ReadThePositions"
    actions   = ["kafka-cluster:ReadData"]
    resources = [local.msk_tail_positions_arn]
  }

  statement {
    sid       = "TheTailersTransactions"
    actions   = ["kafka-cluster:DescribeTransactionalId", "kafka-cluster:AlterTransactionalId"]
    resources = [local.msk_tail_transactional_arn]
  }
}

resource "aws_iam_role_policy" "tail_msk" {
  count = local.msk_tail ? 1 : 0

  name   = "msk-iam"
  role   = module.tail[0].task_role_id
  policy = data.aws_iam_policy_document.msk_tail[0].json
}

# With [schema] registry = "glue" the tailer frames its values as the workers read them: the same
# Glue permissions as the workers (registering the schema only with glue_schema_registry.register).
resource "aws_iam_role_policy" "tail_glue" {
  count = var.tail_enabled && var.glue_schema_registry != null ? 1 : 0

  name   = "glue-schema-registry"
  role   = module.tail[0].task_role_id
  policy = data.aws_iam_policy_document.glue[0].json
}

module "tail" {
  source = "./modules/service"
  count  = var.tail_enabled ? 1 : 0

  name               = "${var.name}-tail"
  role_suffix        = "tail"
  role_description   = "eventfleet tail beside the application of ${var.name}: writes its topic, dead letters and positions in Kafka transactions"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  execution_role_arn = aws_iam_role.execution.arn

  containers       = [local.tail_container, local.tail_app]
  volumes          = concat(["logs"], var.readonly_root_filesystem ? ["tail-tmp"] : [])
  cpu              = var.tail_cpu
  memory           = var.tail_memory
  cpu_architecture = var.cpu_architecture

  # A fixed count: Application Auto Scaling keeps tail_tasks running.
  cluster_arn        = local.ecs_cluster_arn
  cluster_name       = local.ecs_cluster_name
  min_tasks          = var.tail_tasks
  max_tasks          = var.tail_tasks
  subnet_ids         = var.subnet_ids
  security_group_ids = concat([aws_security_group.tasks.id], var.tail_security_group_ids)
  assign_public_ip   = var.assign_public_ip

  preconditions = [
    {
      condition     = var.tail_app_container != null
      error_message = "tail_enabled needs tail_app_container: the application container that writes the log files."
    },
    {
      condition     = contains(local.fargate_memory[tostring(var.tail_cpu)], var.tail_memory)
      error_message = "tail_memory ${var.tail_memory} MiB is not a Fargate size for tail_cpu ${var.tail_cpu}: allowed are ${join(", ", local.fargate_memory[tostring(var.tail_cpu)])}."
    },
    {
      condition     = can(regex("(?m)^\\s*\\[ingest\\]", var.pipeline_toml))
      error_message = "tail_enabled needs an [ingest] section in pipeline_toml (paths under tail_log_path, format, topic)."
    },
    {
      condition     = !contains([for p in try(var.tail_app_container.portMappings, []) : try(p.containerPort, 0)], var.tail_metrics_port)
      error_message = "tail_metrics_port ${var.tail_metrics_port} is a port of tail_app_container: the containers of a task share its network."
    },
  ]

  tags = local.tags
}

################################################################################
# Moved: the resources of both services now live in modules/service
################################################################################

moved {
  from = aws_iam_role.task
  to   = module.fleet.aws_iam_role.task
}

moved {
  from = aws_ecs_task_definition.this
  to   = module.fleet.aws_ecs_task_definition.this
}

moved {
  from = aws_ecs_service.this
  to   = module.fleet.aws_ecs_service.this
}

moved {
  from = aws_appautoscaling_target.this
  to   = module.fleet.aws_appautoscaling_target.this
}

moved {
  from = aws_iam_role.tail[0]
  to   = module.tail[0].aws_iam_role.task
}

moved {
  from = aws_ecs_task_definition.tail[0]
  to   = module.tail[0].aws_ecs_task_definition.this
}

moved {
  from = aws_ecs_service.tail[0]
  to   = module.tail[0].aws_ecs_service.this
}
