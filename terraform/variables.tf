################################################################################
# General
################################################################################

variable "name" {
  description = "Name of the fleet: prefixes every resource (ECS cluster and service, roles, log group, parameters, MSK cluster)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,27}[a-z0-9]$", var.name))
    error_message = "name must be 2-29 lowercase letters, digits or dashes, starting with a letter and not ending with a dash (it prefixes names with length limits, e.g. IAM roles)."
  }
}

variable "tags" {
  description = "Tags added to every resource the module creates."
  type        = map(string)
  default     = {}
}

variable "vpc_id" {
  description = "VPC of the tasks (and of the MSK cluster when the module creates one)."
  type        = string

  validation {
    condition     = can(regex("^vpc-[0-9a-f]+$", var.vpc_id))
    error_message = "vpc_id must be a VPC ID such as vpc-0123456789abcdef0."
  }
}

variable "subnet_ids" {
  description = "Private subnets of the tasks, in two or more Availability Zones. A created MSK cluster puts its brokers in the same subnets."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) >= 2 && alltrue([for s in var.subnet_ids : can(regex("^subnet-[0-9a-f]+$", s))])
    error_message = "subnet_ids must list at least two subnet IDs (subnet-...), in different Availability Zones."
  }
}

variable "assign_public_ip" {
  description = "Give tasks a public IP. Leave false in private subnets (pull images and reach AWS APIs through a NAT gateway or VPC endpoints)."
  type        = bool
  default     = false
}

variable "create_kms_key" {
  description = "Create a customer-managed KMS key (with rotation) for the log groups, the SSM parameters and MSK at rest. False: use kms_key_arn."
  type        = bool
  default     = true
}

variable "kms_key_arn" {
  description = "Existing KMS key for the log groups, the SSM parameters and MSK at rest, when create_kms_key is false. Its policy must let CloudWatch Logs use it."
  type        = string
  default     = null

  validation {
    condition     = var.kms_key_arn == null || can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/.+$", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID)."
  }
}

################################################################################
# Container and task
################################################################################

variable "image" {
  description = "eventfleet container image (built from the repository's Dockerfile), e.g. 123456789012.dkr.ecr.eu-west-1.amazonaws.com/eventfleet:0.1.0. Pin a tag or digest."
  type        = string

  validation {
    condition     = length(trimspace(var.image)) > 0 && !can(regex("\\s", var.image))
    error_message = "image must be a container image reference without spaces."
  }
}

variable "cpu" {
  description = "Task CPU units (1024 = 1 vCPU): one of Fargate's sizes."
  type        = number
  default     = 1024

  validation {
    condition     = contains([256, 512, 1024, 2048, 4096, 8192, 16384], var.cpu)
    error_message = "cpu must be one of Fargate's sizes: 256, 512, 1024, 2048, 4096, 8192 or 16384."
  }
}

variable "memory" {
  description = "Task memory in MiB; must be a size Fargate allows for the chosen cpu (checked at plan time)."
  type        = number
  default     = 2048

  validation {
    condition     = var.memory >= 512 && var.memory <= 122880 && floor(var.memory) == var.memory
    error_message = "memory must be a whole number of MiB between 512 and 122880."
  }
}

variable "cpu_architecture" {
  description = "CPU architecture of the tasks: X86_64, or ARM64 (Graviton) for an arm64 image."
  type        = string
  default     = "X86_64"

  validation {
    condition     = contains(["X86_64", "ARM64"], var.cpu_architecture)
    error_message = "cpu_architecture must be X86_64 or ARM64."
  }
}

variable "workers_per_task" {
  description = "Worker processes per task (eventfleet run --workers). Null: one per vCPU (at least one). Each worker is one consumer in the group."
  type        = number
  default     = null

  validation {
    condition     = var.workers_per_task == null || try(var.workers_per_task >= 1 && floor(var.workers_per_task) == var.workers_per_task, false)
    error_message = "workers_per_task must be a whole number >= 1 (or null)."
  }
}

variable "stop_timeout" {
  description = "Seconds ECS waits after SIGTERM before SIGKILL. The fleet flushes, commits and leaves the group in that time: keep it above the pipeline's [fleet] shutdown_grace (30 s by default)."
  type        = number
  default     = 60

  validation {
    condition     = var.stop_timeout >= 2 && var.stop_timeout <= 120
    error_message = "stop_timeout must be between 2 and 120 seconds (Fargate's limits)."
  }
}

variable "ephemeral_storage_gib" {
  description = "Task ephemeral storage in GiB (21-200), or null for Fargate's default 20 GiB."
  type        = number
  default     = null

  validation {
    condition     = var.ephemeral_storage_gib == null || try(var.ephemeral_storage_gib >= 21 && var.ephemeral_storage_gib <= 200, false)
    error_message = "ephemeral_storage_gib must be between 21 and 200 (or null)."
  }
}

variable "readonly_root_filesystem" {
  description = "Mount the container's root filesystem read-only, with writable task volumes at /tmp and /var/lib/eventfleet. Needs an image that declares those as VOLUME owned by its user: Fargate creates bind mounts owned by root otherwise."
  type        = bool
  default     = false
}

variable "health_check_command" {
  description = "Container health check (ECS form, e.g. [\"CMD-SHELL\", \"...\"]). Null: ask the fleet's /healthz on metrics_port with the image's Python (200 while every worker heartbeats). Empty list: no health check."
  type        = list(string)
  default     = null
}

variable "environment" {
  description = "Extra environment variables of the container (not secret)."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for k in keys(var.environment) : can(regex("^[A-Za-z_][A-Za-z0-9_]*$", k)) && !contains(["EVENTFLEET_PIPELINE", "EVENTFLEET_SCHEMA", "EVENTFLEET_BOOTSTRAP_SERVERS"], k)])
    error_message = "environment names must be identifiers other than EVENTFLEET_PIPELINE, EVENTFLEET_SCHEMA and EVENTFLEET_BOOTSTRAP_SERVERS, which the module sets."
  }
}

variable "secrets" {
  description = "Extra secret environment variables: name -> ARN of an SSM parameter or a Secrets Manager secret (e.g. the SCRAM password the pipeline reads as $${KAFKA_PASSWORD}). The execution role may read exactly these."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for arn in values(var.secrets) : can(regex("^arn:aws[a-z-]*:(ssm|secretsmanager):", arn))])
    error_message = "secrets values must be ARNs of SSM parameters or Secrets Manager secrets."
  }
}

################################################################################
# Pipeline
################################################################################

variable "pipeline_toml" {
  description = "The pipeline file's text (eventfleet's TOML). Write bootstrap_servers = \"$${EVENTFLEET_BOOTSTRAP_SERVERS}\" to use the brokers the module knows, and [schema] path = \"env:EVENTFLEET_SCHEMA\" with schema_avsc."
  type        = string

  validation {
    condition     = can(regex("(?m)^\\s*\\[kafka\\]", var.pipeline_toml)) && length(var.pipeline_toml) <= 8192
    error_message = "pipeline_toml must be an eventfleet pipeline (with a [kafka] table) of at most 8192 characters (an SSM parameter's limit)."
  }
}

variable "schema_avsc" {
  description = "The Avro writer schema (.avsc JSON) that [schema] path = \"env:EVENTFLEET_SCHEMA\" reads. Null when the schema is baked into the image."
  type        = string
  default     = null

  validation {
    condition     = var.schema_avsc == null || (can(jsondecode(var.schema_avsc)) && length(coalesce(var.schema_avsc, "")) <= 8192)
    error_message = "schema_avsc must be JSON (an Avro schema) of at most 8192 characters."
  }
}

variable "config_delivery" {
  description = "How the pipeline and schema reach the task: \"ssm\" (SecureString parameters injected as secrets; the default) or \"environment\" (plain environment variables in the task definition)."
  type        = string
  default     = "ssm"

  validation {
    condition     = contains(["ssm", "environment"], var.config_delivery)
    error_message = "config_delivery must be \"ssm\" or \"environment\"."
  }
}

variable "metrics_port" {
  description = "Port of the fleet's /metrics, /healthz and /readyz: the pipeline's [metrics] port (9400 by default)."
  type        = number
  default     = 9400

  validation {
    condition     = var.metrics_port >= 1024 && var.metrics_port <= 65535
    error_message = "metrics_port must be between 1024 and 65535 (the image runs as a non-root user)."
  }
}

variable "metrics_ingress_security_group_ids" {
  description = "Security groups (e.g. a Prometheus scraper's) allowed to reach metrics_port on the tasks."
  type        = list(string)
  default     = []
}

variable "schema_registry_url" {
  description = "Confluent-compatible URL of the schema registry the topic's values are framed for, set in the task as EVENTFLEET_REGISTRY_URL: the pipeline reads it with [schema] registry = \"$${EVENTFLEET_REGISTRY_URL}\". Null: no registry (schemaless values)."
  type        = string
  default     = null

  validation {
    condition     = var.schema_registry_url == null || can(regex("^https?://[^/\\s]+", coalesce(var.schema_registry_url, "-")))
    error_message = "schema_registry_url must be an http(s) URL, e.g. https://psrc-12345.eu-west-1.aws.confluent.cloud."
  }
}

variable "schema_registry_secret_arn" {
  description = "ARN of a Secrets Manager secret with the registry's credentials as JSON: keys username and password (schema_registry_auth = \"basic\") or token (\"bearer\"), injected as EVENTFLEET_REGISTRY_USERNAME and EVENTFLEET_REGISTRY_PASSWORD, or EVENTFLEET_REGISTRY_TOKEN, for [schema] username = \"$${EVENTFLEET_REGISTRY_USERNAME}\" and so on. The execution role may read it (with the AWS managed key or kms_key_arn's). Null: no credentials."
  type        = string
  default     = null

  validation {
    condition     = var.schema_registry_secret_arn == null || can(regex("^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:.+", coalesce(var.schema_registry_secret_arn, "-")))
    error_message = "schema_registry_secret_arn must be the ARN of a Secrets Manager secret (arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME-xxxxxx)."
  }
}

variable "schema_registry_auth" {
  description = "Which credentials schema_registry_secret_arn holds: \"basic\" (JSON keys username and password) or \"bearer\" (JSON key token)."
  type        = string
  default     = "basic"

  validation {
    condition     = contains(["basic", "bearer"], var.schema_registry_auth)
    error_message = "schema_registry_auth must be \"basic\" or \"bearer\"."
  }
}

################################################################################
# Kafka
################################################################################

variable "topics" {
  description = "The topics the pipeline reads ([kafka] topics): IAM grants read access to exactly these, and lag is watched per topic."
  type        = list(string)

  validation {
    condition     = length(var.topics) > 0 && alltrue([for t in var.topics : can(regex("^[A-Za-z0-9._-]{1,249}$", t))])
    error_message = "topics must list one or more Kafka topic names (letters, digits, '.', '_', '-')."
  }
}

variable "consumer_group" {
  description = "The pipeline's consumer group ([kafka] group_id): IAM grants exactly this group, and lag metrics are read for it."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9._-]{1,255}$", var.consumer_group))
    error_message = "consumer_group must be letters, digits, '.', '_' or '-' (MSK publishes no lag for names with ':' or non-ASCII characters)."
  }
}

variable "dlq_topics" {
  description = "Dead-letter topics the fleet writes ([dlq] topic). Null: \"<topic>.dlq\" for each topic, eventfleet's default. Empty list: no write access (only with [dlq] enabled = false)."
  type        = list(string)
  default     = null
}

variable "dlq_topic_auto_create" {
  description = "Let the fleet create its dead-letter topics when they are missing (kafka-cluster:CreateTopic on those topics only). False: create them beforehand."
  type        = bool
  default     = true
}

variable "partitions" {
  description = "Partitions of the topics, summed. With workers_per_task it sets the task ceiling: a worker beyond one per partition would sit idle."
  type        = number

  validation {
    condition     = var.partitions >= 1 && floor(var.partitions) == var.partitions
    error_message = "partitions must be a whole number >= 1."
  }
}

variable "create_msk_cluster" {
  description = "Create an MSK cluster (IAM auth, TLS in transit, encryption at rest, enhanced monitoring). False: bring your own with bootstrap_servers (and msk_cluster_arn for an MSK cluster)."
  type        = bool
  default     = false
}

variable "bootstrap_servers" {
  description = "Bootstrap servers of an existing cluster (host:port,...); ignored when create_msk_cluster is true."
  type        = string
  default     = null
}

variable "msk_cluster_arn" {
  description = "ARN of an existing MSK cluster with IAM access control: scopes the task role's kafka-cluster permissions and names the cluster in lag metrics. Null for Kafka outside MSK (SCRAM or TLS from the pipeline file)."
  type        = string
  default     = null

  validation {
    condition     = var.msk_cluster_arn == null || can(regex("^arn:aws[a-z-]*:kafka:[a-z0-9-]+:[0-9]{12}:cluster/[^/]+/[^/]+$", var.msk_cluster_arn))
    error_message = "msk_cluster_arn must be an MSK cluster ARN (arn:aws:kafka:REGION:ACCOUNT:cluster/NAME/UUID)."
  }
}

variable "kafka_security_group_id" {
  description = "Security group of an existing MSK cluster's brokers: the module opens kafka_ports on it to the tasks. Null: manage that rule yourself."
  type        = string
  default     = null
}

variable "kafka_egress_cidr_blocks" {
  description = "Where the tasks may open Kafka connections when the cluster is not created here (the brokers' subnets)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.kafka_egress_cidr_blocks : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "kafka_egress_cidr_blocks must be CIDR blocks narrower than 0.0.0.0/0."
  }
}

variable "kafka_ports" {
  description = "Broker ports the tasks connect to: 9098 is MSK's IAM listener, 9096 SASL/SCRAM, 9094 TLS."
  type        = list(number)
  default     = [9098]

  validation {
    condition     = length(var.kafka_ports) > 0 && alltrue([for p in var.kafka_ports : p >= 1 && p <= 65535])
    error_message = "kafka_ports must list port numbers."
  }
}

################################################################################
# MSK cluster (create_msk_cluster = true)
################################################################################

variable "msk_kafka_version" {
  description = "Apache Kafka version of the created MSK cluster (an MSK version string such as 3.8.x)."
  type        = string
  default     = "3.8.x"

  validation {
    condition     = can(regex("^[0-9]+\\.[0-9]+\\.([0-9]+|x)(\\.[a-z]+)?$", var.msk_kafka_version))
    error_message = "msk_kafka_version must be an MSK version such as 3.8.x, 3.6.0 or 3.7.x.kraft."
  }
}

variable "msk_broker_count" {
  description = "Brokers of the created MSK cluster: a multiple of the number of subnets (one per Availability Zone per round)."
  type        = number
  default     = 3

  validation {
    condition     = var.msk_broker_count >= 2 && floor(var.msk_broker_count) == var.msk_broker_count
    error_message = "msk_broker_count must be a whole number >= 2."
  }
}

variable "msk_instance_type" {
  description = "Broker instance type of the created MSK cluster."
  type        = string
  default     = "kafka.m7g.large"

  validation {
    condition     = startswith(var.msk_instance_type, "kafka.") || startswith(var.msk_instance_type, "express.")
    error_message = "msk_instance_type must be an MSK broker type such as kafka.m7g.large."
  }
}

variable "msk_volume_size_gib" {
  description = "EBS storage per broker of the created MSK cluster, in GiB."
  type        = number
  default     = 100

  validation {
    condition     = var.msk_volume_size_gib >= 1 && var.msk_volume_size_gib <= 16384
    error_message = "msk_volume_size_gib must be between 1 and 16384."
  }
}

variable "msk_enhanced_monitoring" {
  description = "MSK monitoring level. Consumer lag per topic (SumOffsetLag, MaxOffsetLag, EstimatedMaxTimeLag) is published from DEFAULT; PER_TOPIC_PER_PARTITION adds OffsetLag per partition, to see skew."
  type        = string
  default     = "PER_TOPIC_PER_PARTITION"

  validation {
    condition     = contains(["DEFAULT", "PER_BROKER", "PER_TOPIC_PER_BROKER", "PER_TOPIC_PER_PARTITION"], var.msk_enhanced_monitoring)
    error_message = "msk_enhanced_monitoring must be DEFAULT, PER_BROKER, PER_TOPIC_PER_BROKER or PER_TOPIC_PER_PARTITION."
  }
}

variable "msk_client_security_group_ids" {
  description = "Other security groups (producers, tools) allowed to the created cluster's IAM listener (9098)."
  type        = list(string)
  default     = []
}

################################################################################
# AWS Glue Schema Registry ([schema] registry = "glue")
################################################################################

variable "glue_schema_registry" {
  description = "The AWS Glue Schema Registry the pipeline reads writer schemas from ([schema] registry = \"glue\"): the task role may then call glue:GetSchemaVersion. registry_name is the pipeline's [schema] registry_name; register = true also lets the fleet create schemas and versions in that registry (glue:GetSchemaByDefinition, CreateSchema, RegisterSchemaVersion), for a sink that registers its output schemas. Null: no Glue access."
  type = object({
    registry_name = optional(string, "default-registry")
    register      = optional(bool, false)
  })
  default = null

  validation {
    condition     = var.glue_schema_registry == null || can(regex("^[A-Za-z0-9_$#.-]{1,255}$", var.glue_schema_registry.registry_name))
    error_message = "glue_schema_registry.registry_name must be a Glue registry name: 1 to 255 letters, digits, '-', '_', '$', '#' or '.'."
  }
}

################################################################################
# ECS
################################################################################

variable "create_ecs_cluster" {
  description = "Create an ECS cluster for the fleet, with Container Insights. False: run in ecs_cluster_arn."
  type        = bool
  default     = true
}

variable "ecs_cluster_arn" {
  description = "Existing ECS cluster to run in, when create_ecs_cluster is false. Lag scaling needs Container Insights enabled on it."
  type        = string
  default     = null

  validation {
    condition     = var.ecs_cluster_arn == null || can(regex("^arn:aws[a-z-]*:ecs:[a-z0-9-]+:[0-9]{12}:cluster/.+$", var.ecs_cluster_arn))
    error_message = "ecs_cluster_arn must be an ECS cluster ARN."
  }
}

################################################################################
# Autoscaling
################################################################################

variable "min_tasks" {
  description = "Fewest tasks the service scales in to (and its size when created)."
  type        = number
  default     = 1

  validation {
    condition     = var.min_tasks >= 1 && floor(var.min_tasks) == var.min_tasks
    error_message = "min_tasks must be a whole number >= 1."
  }
}

variable "max_tasks" {
  description = "Most tasks the service scales out to. Null: ceil(partitions / workers_per_task), the most that can all hold a partition; a lower number caps cost, a higher one is refused."
  type        = number
  default     = null

  validation {
    condition     = var.max_tasks == null || try(var.max_tasks >= 1 && floor(var.max_tasks) == var.max_tasks, false)
    error_message = "max_tasks must be a whole number >= 1 (or null)."
  }
}

variable "cpu_target_percent" {
  description = "Target average CPU of the service (%) for CPU scaling."
  type        = number
  default     = 70

  validation {
    condition     = var.cpu_target_percent >= 10 && var.cpu_target_percent <= 95
    error_message = "cpu_target_percent must be between 10 and 95."
  }
}

variable "lag_scaling_enabled" {
  description = "Scale on consumer lag (MSK's SumOffsetLag per task). Needs an MSK cluster (created, or msk_cluster_arn) and Container Insights on the ECS cluster (for RunningTaskCount)."
  type        = bool
  default     = true
}

variable "lag_target_per_task" {
  description = "Target consumer lag per task, in messages, for lag scaling: about what one task clears in a minute or two."
  type        = number
  default     = 100000

  validation {
    condition     = var.lag_target_per_task > 0
    error_message = "lag_target_per_task must be more than zero."
  }
}

variable "scale_out_cooldown" {
  description = "Seconds after a scale-out before the next one."
  type        = number
  default     = 120
}

variable "scale_in_cooldown" {
  description = "Seconds after a scale-in before the next one: each scale-in rebalances the group, keep it calm."
  type        = number
  default     = 600
}

################################################################################
# Logs and alarms
################################################################################

variable "log_retention_days" {
  description = "Retention of the fleet's (and the created MSK cluster's) CloudWatch logs, in days."
  type        = number
  default     = 30

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a value CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, 60, 90, ... 3653)."
  }
}

variable "alarm_actions" {
  description = "ARNs notified when an alarm fires or clears (e.g. an SNS topic)."
  type        = list(string)
  default     = []
}

variable "lag_alarm_threshold" {
  description = "Alarm when a topic's consumer lag (SumOffsetLag, messages) stays above this. Null: no lag alarm."
  type        = number
  default     = 1000000
}

variable "lag_alarm_minutes" {
  description = "Minutes the lag must stay above lag_alarm_threshold before the alarm fires."
  type        = number
  default     = 15

  validation {
    condition     = var.lag_alarm_minutes >= 1 && var.lag_alarm_minutes <= 1440
    error_message = "lag_alarm_minutes must be between 1 and 1440."
  }
}

variable "error_alarm_threshold" {
  description = "Alarm when the fleet logs more than this many error lines in 5 minutes (JSON logs, level error or critical). Null: no error alarm."
  type        = number
  default     = 0
}

################################################################################
# Tail: eventfleet tail beside an application that writes log files
################################################################################

variable "tail_enabled" {
  description = "Run eventfleet tail beside an application, in an ECS service of its own: each task runs tail_app_container, which writes its log files to a task volume at tail_log_path, and the tailer, which reads them ([ingest] of pipeline_toml) into Kafka. Off by default."
  type        = bool
  default     = false
}

variable "tail_app_container" {
  description = "The application container that writes the log files: an ECS container definition as an object (name, image, command, portMappings, ...). The module adds the log volume at tail_log_path, read-write, and starts it after the tailer (so it stops before it). Required with tail_enabled."
  type        = any
  default     = null

  validation {
    condition     = var.tail_app_container == null || try(length(var.tail_app_container.name) > 0 && length(var.tail_app_container.image) > 0 && var.tail_app_container.name != "tail", false)
    error_message = "tail_app_container must be a container definition object with a name (other than \"tail\") and an image."
  }
}

variable "tail_log_path" {
  description = "Where the log volume is mounted in the application (read-write) and in the tailer (read-only): [ingest] paths of the pipeline are globs under it."
  type        = string
  default     = "/var/log/app"

  validation {
    condition     = can(regex("^/[^*?\\[]*[^/]$", var.tail_log_path))
    error_message = "tail_log_path must be an absolute folder path without glob characters or a trailing slash."
  }
}

variable "tail_tasks" {
  description = "Tasks of the application-and-tailer service. Each task has its own log volume and its own tailer (named after the task's host name), so the count follows the application's needs."
  type        = number
  default     = 1

  validation {
    condition     = var.tail_tasks >= 1 && floor(var.tail_tasks) == var.tail_tasks
    error_message = "tail_tasks must be a whole number >= 1."
  }
}

variable "tail_cpu" {
  description = "CPU units of an application-and-tailer task (1024 = 1 vCPU), for both containers: the tailer needs up to one vCPU at full speed."
  type        = number
  default     = 1024

  validation {
    condition     = contains([256, 512, 1024, 2048, 4096, 8192, 16384], var.tail_cpu)
    error_message = "tail_cpu must be one of Fargate's sizes: 256, 512, 1024, 2048, 4096, 8192 or 16384."
  }
}

variable "tail_memory" {
  description = "Memory of an application-and-tailer task in MiB; must be a size Fargate allows for tail_cpu (checked at plan time)."
  type        = number
  default     = 2048

  validation {
    condition     = var.tail_memory >= 512 && var.tail_memory <= 122880 && floor(var.tail_memory) == var.tail_memory
    error_message = "tail_memory must be a whole number of MiB between 512 and 122880."
  }
}

variable "tail_topic" {
  description = "The topic the tailer writes ([ingest] topic). Null: the first of topics, eventfleet's default. IAM grants writing it, its dead-letter topic and the tailer's positions topic (<topic>.tail-positions)."
  type        = string
  default     = null

  validation {
    condition     = var.tail_topic == null || can(regex("^[A-Za-z0-9._-]{1,249}$", coalesce(var.tail_topic, "x")))
    error_message = "tail_topic must be a Kafka topic name (letters, digits, '.', '_', '-')."
  }
}

variable "tail_metrics_port" {
  description = "Port of the tailer's /metrics, /healthz and /readyz ([ingest] metrics_port, 9401 by default); must differ from the application's ports."
  type        = number
  default     = 9401

  validation {
    condition     = var.tail_metrics_port >= 1024 && var.tail_metrics_port <= 65535
    error_message = "tail_metrics_port must be between 1024 and 65535 (the image runs as a non-root user)."
  }
}

variable "tail_stop_timeout" {
  description = "Seconds ECS waits after SIGTERM before SIGKILL of the tailer, which commits what it read and exits: a few seconds are enough."
  type        = number
  default     = 30

  validation {
    condition     = var.tail_stop_timeout >= 2 && var.tail_stop_timeout <= 120
    error_message = "tail_stop_timeout must be between 2 and 120 seconds (Fargate's limits)."
  }
}

variable "tail_security_group_ids" {
  description = "More security groups of the application-and-tailer tasks (e.g. one that lets traffic in to the application); the tasks' own group already allows Kafka and HTTPS out."
  type        = list(string)
  default     = []
}
