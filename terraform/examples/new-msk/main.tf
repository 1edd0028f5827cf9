# A new MSK cluster (IAM access control, TLS, encryption at rest, lag metrics) and the fleet on
# ECS Fargate reading it. Create the topic before the tasks start (the cluster does not create
# topics on first use), e.g. from a host in the VPC with the MSK IAM client library:
#   kafka-topics.sh --bootstrap-server "$(terraform output -raw bootstrap_servers)" \
#     --command-config client-iam.properties --create --topic ad-events --partitions 12

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
  description = "AWS region to deploy in."
  type        = string
  default     = "eu-west-1"
}

variable "vpc_id" {
  description = "VPC with private subnets that reach ECR, CloudWatch Logs and SSM (NAT gateway or VPC endpoints)."
  type        = string
}

variable "private_subnet_ids" {
  description = "Three private subnets, one per Availability Zone (MSK puts one broker in each)."
  type        = list(string)
}

variable "image" {
  description = "The eventfleet image in ECR, e.g. 123456789012.dkr.ecr.eu-west-1.amazonaws.com/eventfleet:0.1.0."
  type        = string
}

variable "alarm_topic_arn" {
  description = "SNS topic notified by the lag and error alarms (null: none)."
  type        = string
  default     = null
}

module "fleet" {
  source = "../.."

  name       = "ad-stats"
  vpc_id     = var.vpc_id
  subnet_ids = var.private_subnet_ids
  image      = var.image

  create_msk_cluster      = true
  msk_broker_count        = 3
  msk_instance_type       = "kafka.m7g.large"
  msk_enhanced_monitoring = "PER_TOPIC_PER_PARTITION"

  pipeline_toml  = file("${path.module}/pipeline.toml")
  schema_avsc    = file("${path.module}/../../../schemas/ad_event.avsc")
  topics         = ["ad-events"]
  consumer_group = "ad-stats"
  partitions     = 12

  cpu              = 2048
  memory           = 4096
  workers_per_task = 2
  # The example's sink is SQLite, which one task holds: with a shared sink, drop this line and the
  # service scales on CPU and lag up to ceil(12 partitions / 2 workers) = 6 tasks.
  max_tasks = 1

  lag_target_per_task = 200000
  lag_alarm_threshold = 2000000
  alarm_actions       = var.alarm_topic_arn != null ? [var.alarm_topic_arn] : []

  tags = {
    project = "ad-stats"
  }
}

output "bootstrap_servers" {
  description = "The cluster's IAM listener, for creating topics and producing."
  value       = module.fleet.bootstrap_servers
}

output "service_name" {
  description = "The ECS service running the fleet."
  value       = module.fleet.service_name
}

output "log_group_name" {
  description = "Where the fleet logs."
  value       = module.fleet.log_group_name
}

output "max_tasks" {
  description = "The autoscaling ceiling."
  value       = module.fleet.max_tasks
}
