# The fleet on ECS Fargate against an MSK cluster that already exists (IAM access control on its
# port 9098), in an ECS cluster that already exists. The module opens the brokers' security group
# to the tasks and scopes the task role to this pipeline's topics and group on that cluster.
# For Kafka outside MSK, leave msk_cluster_arn and kafka_security_group_id out, set
# kafka_egress_cidr_blocks and kafka_ports, and authenticate with SCRAM in the pipeline file
# (the password through the secrets input, e.g. KAFKA_PASSWORD from Secrets Manager).

terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.80.0, < 7.0.0"
    }
  }
}

provider "aws" {
  region = var.region
}

variable "region" {
  description = "AWS region of the cluster."
  type        = string
  default     = "us-east-1"
}

variable "vpc_id" {
  description = "VPC of the MSK cluster."
  type        = string
}

variable "private_subnet_ids" {
  description = "Private subnets for the tasks, able to reach the brokers."
  type        = list(string)
}

variable "image" {
  description = "The eventfleet image."
  type        = string
}

variable "msk_cluster_arn" {
  description = "ARN of the existing MSK cluster."
  type        = string
}

variable "msk_bootstrap_servers" {
  description = "Its IAM bootstrap servers (aws kafka get-bootstrap-brokers: BootstrapBrokerStringSaslIam)."
  type        = string
}

variable "msk_security_group_id" {
  description = "Security group of its brokers."
  type        = string
}

variable "ecs_cluster_arn" {
  description = "Existing ECS cluster (with Container Insights enabled, for lag scaling)."
  type        = string
}

module "fleet" {
  source = "../.."

  name               = "ad-stats-ecs"
  vpc_id             = var.vpc_id
  subnet_ids         = var.private_subnet_ids
  image              = var.image
  create_ecs_cluster = false
  ecs_cluster_arn    = var.ecs_cluster_arn

  bootstrap_servers       = var.msk_bootstrap_servers
  msk_cluster_arn         = var.msk_cluster_arn
  kafka_security_group_id = var.msk_security_group_id
  kafka_ports             = [9098]

  pipeline_toml  = file("${path.module}/pipeline.toml")
  schema_avsc    = file("${path.module}/../../../schemas/ad_event.avsc")
  topics         = ["ad-events"]
  consumer_group = "ad-stats-ecs"
  dlq_topics     = ["ad-events.dlq"]
  partitions     = 6

  cpu       = 1024
  memory    = 2048
  max_tasks = 1 # SQLite sink: one task (see pipeline.toml)
}

output "task_role_name" {
  description = "Attach further policies here (e.g. for a sink's database)."
  value       = module.fleet.task_role_name
}

output "lag_alarm_arns" {
  description = "Consumer-lag alarms by topic."
  value       = module.fleet.lag_alarm_arns
}
