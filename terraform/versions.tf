################################################################################
# Versions
################################################################################

terraform {
  # 1.5: check blocks, strcontains(), the import block; the module uses nothing newer.
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # 5.80: target-tracking metric math (customized_metric_specification.metrics), the
      # aws_vpc_security_group_*_rule resources and ECS deployment circuit breakers all exist.
      version = ">= 5.80.0, < 7.0.0"
    }
  }
}
