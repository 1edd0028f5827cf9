################################################################################
# One ECS service on Fargate: its task role, task definition, service and scalable target. The
# root module runs it twice: the fleet (module.fleet) and, with tail_enabled, the application
# beside its tailer (module.tail).
################################################################################

resource "aws_iam_role" "task" {
  name_prefix        = "${var.name}-${var.role_suffix}-"
  description        = var.role_description
  assume_role_policy = var.assume_role_policy

  tags = var.tags
}

resource "aws_ecs_task_definition" "this" {
  #checkov:skip=CKV_AWS_336:The root filesystem is writable unless readonly_root_filesystem is set: the fleet writes /tmp (Prometheus multiprocess files) and its working directory (a SQLite sink), Fargate bind mounts are root-owned unless the image declares them as VOLUME, and an application container beside the tailer is the caller's to harden.
  family                   = var.name
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = tostring(var.cpu)
  memory                   = tostring(var.memory)
  execution_role_arn       = var.execution_role_arn
  task_role_arn            = aws_iam_role.task.arn
  container_definitions    = jsonencode(var.containers)

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }

  dynamic "ephemeral_storage" {
    for_each = var.ephemeral_storage_gib != null ? [var.ephemeral_storage_gib] : []
    content {
      size_in_gib = ephemeral_storage.value
    }
  }

  # Task bind mounts on the task's ephemeral storage, as long-lived as the task.
  dynamic "volume" {
    for_each = var.volumes
    content {
      name = volume.value
    }
  }

  tags = var.tags

  lifecycle {
    # The caller's checks of its inputs, each failing with its own message.
    precondition {
      condition     = alltrue([for c in var.preconditions : c.condition])
      error_message = join("\n", [for c in var.preconditions : c.error_message if !c.condition])
    }
  }
}

resource "aws_ecs_service" "this" {
  name             = var.name
  cluster          = var.cluster_arn
  task_definition  = aws_ecs_task_definition.this.arn
  desired_count    = var.min_tasks
  launch_type      = "FARGATE"
  platform_version = "LATEST"

  enable_ecs_managed_tags = true
  propagate_tags          = "SERVICE"

  # A rolling deployment starts the new tasks before stopping the old ones: the group rebalances
  # (cooperative-sticky) and each stopped task flushes and commits on SIGTERM.
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200

  # Tasks that fail to start or to become healthy stop the deployment and roll back to the last
  # task definition that ran, instead of replacing working tasks with crashing ones.
  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = var.subnet_ids
    security_groups  = var.security_group_ids
    assign_public_ip = var.assign_public_ip
  }

  tags = var.tags

  lifecycle {
    # Application Auto Scaling owns the task count after creation: within min_tasks to max_tasks
    # (equal for a fixed count, which it then keeps).
    ignore_changes = [desired_count]
  }
}

resource "aws_appautoscaling_target" "this" {
  service_namespace  = "ecs"
  resource_id        = "service/${var.cluster_name}/${aws_ecs_service.this.name}"
  scalable_dimension = "ecs:service:DesiredCount"
  min_capacity       = var.min_tasks
  max_capacity       = var.max_tasks

  tags = var.tags
}
