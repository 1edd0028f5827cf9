output "service_name" {
  description = "Name of the ECS service."
  value       = aws_ecs_service.this.name
}

output "task_definition_arn" {
  description = "ARN of the task definition revision the service runs."
  value       = aws_ecs_task_definition.this.arn
}

output "task_role_arn" {
  description = "ARN of the task role."
  value       = aws_iam_role.task.arn
}

output "task_role_id" {
  description = "Id (name) of the task role, for inline policies."
  value       = aws_iam_role.task.id
}

output "task_role_name" {
  description = "Name of the task role."
  value       = aws_iam_role.task.name
}

output "scalable_target" {
  description = "The service's Application Auto Scaling target, for scaling policies."
  value = {
    service_namespace  = aws_appautoscaling_target.this.service_namespace
    resource_id        = aws_appautoscaling_target.this.resource_id
    scalable_dimension = aws_appautoscaling_target.this.scalable_dimension
  }
}
