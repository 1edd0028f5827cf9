################################################################################
# ECS
################################################################################

output "ecs_cluster_arn" {
  description = "ARN of the ECS cluster the fleet runs in."
  value       = local.ecs_cluster_arn
}

output "service_name" {
  description = "Name of the ECS service."
  value       = module.fleet.service_name
}

output "task_definition_arn" {
  description = "ARN of the task definition revision the service runs."
  value       = module.fleet.task_definition_arn
}

output "workers_per_task" {
  description = "Worker processes (group consumers) per task."
  value       = local.workers_per_task
}

output "max_tasks" {
  description = "The autoscaling ceiling: ceil(partitions / workers_per_task), or the lower max_tasks given."
  value       = local.max_tasks
}

output "task_role_arn" {
  description = "IAM role of the workers (MSK IAM permissions); attach more policies to it for other AWS access a sink needs."
  value       = module.fleet.task_role_arn
}

output "task_role_name" {
  description = "Name of the workers' IAM role."
  value       = module.fleet.task_role_name
}

output "execution_role_arn" {
  description = "IAM role of the ECS agent (image pull, logs, pipeline parameters)."
  value       = aws_iam_role.execution.arn
}

output "task_security_group_id" {
  description = "Security group of the tasks: allow it on a sink's database, or reference it from other rules."
  value       = aws_security_group.tasks.id
}

################################################################################
# Configuration and logs
################################################################################

output "pipeline_parameter_arn" {
  description = "ARN of the SSM parameter holding the pipeline (null with config_delivery = \"environment\")."
  value       = one(aws_ssm_parameter.pipeline[*].arn)
}

output "schema_parameter_arn" {
  description = "ARN of the SSM parameter holding the schema (null without schema_avsc, or with config_delivery = \"environment\")."
  value       = one(aws_ssm_parameter.schema[*].arn)
}

output "log_group_name" {
  description = "CloudWatch log group of the fleet (JSON lines, one stream per task)."
  value       = aws_cloudwatch_log_group.fleet.name
}

output "kms_key_arn" {
  description = "KMS key encrypting the logs, the parameters and (when created) MSK storage."
  value       = local.kms_key_arn
}

################################################################################
# Kafka
################################################################################

output "bootstrap_servers" {
  description = "Bootstrap servers the tasks get as EVENTFLEET_BOOTSTRAP_SERVERS (the created cluster's IAM listener, or bootstrap_servers)."
  value       = local.bootstrap_servers
}

output "msk_cluster_arn" {
  description = "ARN of the MSK cluster (created or given); null outside MSK."
  value       = local.msk_cluster_arn
}

output "msk_cluster_name" {
  description = "Name of the MSK cluster, the \"Cluster Name\" dimension of its CloudWatch metrics."
  value       = local.msk_cluster_name
}

output "msk_security_group_id" {
  description = "Security group of the created MSK brokers (null when not created)."
  value       = one(aws_security_group.msk[*].id)
}

################################################################################
# Alarms
################################################################################

output "lag_alarm_arns" {
  description = "Consumer-lag alarms, by topic."
  value       = { for topic, alarm in aws_cloudwatch_metric_alarm.lag : topic => alarm.arn }
}

output "error_alarm_arn" {
  description = "The error-log-lines alarm (null when disabled)."
  value       = one(aws_cloudwatch_metric_alarm.errors[*].arn)
}

################################################################################
# Tail
################################################################################

output "tail_service_name" {
  description = "Name of the application-and-tailer ECS service (null unless tail_enabled)."
  value       = one(module.tail[*].service_name)
}

output "tail_task_role_arn" {
  description = "IAM role of the application-and-tailer tasks (MSK IAM for the tailer); attach the application's own permissions to it."
  value       = one(module.tail[*].task_role_arn)
}

output "tail_container_definition" {
  description = "The tailer's container definition, to add to a task definition of your own with a volume named \"logs\" that your application writes at tail_log_path."
  value       = local.tail_container
}
