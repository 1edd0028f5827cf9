variable "name" {
  description = "Name of the service and family of its task definition."
  type        = string
}

variable "role_suffix" {
  description = "The task role's name is <name>-<role_suffix>-<random>."
  type        = string
}

variable "role_description" {
  description = "Description of the task role."
  type        = string
}

variable "assume_role_policy" {
  description = "Trust policy of the task role (ECS tasks of the account)."
  type        = string
}

variable "execution_role_arn" {
  description = "Role of the ECS agent: image pull, logs, secrets."
  type        = string
}

variable "containers" {
  description = "The container definitions of the task (ECS's JSON shape, as objects)."
  type        = any
}

variable "volumes" {
  description = "Names of the task's bind-mount volumes."
  type        = list(string)
  default     = []
}

variable "ephemeral_storage_gib" {
  description = "Ephemeral storage of the task in GiB (null: Fargate's 20)."
  type        = number
  default     = null
}

variable "cpu" {
  description = "Task CPU units."
  type        = number
}

variable "memory" {
  description = "Task memory in MiB."
  type        = number
}

variable "cpu_architecture" {
  description = "X86_64 or ARM64."
  type        = string
}

variable "cluster_arn" {
  description = "ECS cluster ARN."
  type        = string
}

variable "cluster_name" {
  description = "ECS cluster name (the scalable target's resource id)."
  type        = string
}

variable "min_tasks" {
  description = "Tasks at creation and the scaling floor."
  type        = number
}

variable "max_tasks" {
  description = "The scaling ceiling (min_tasks: a fixed count)."
  type        = number
}

variable "subnet_ids" {
  description = "Subnets of the tasks."
  type        = list(string)
}

variable "security_group_ids" {
  description = "Security groups of the tasks."
  type        = list(string)
}

variable "assign_public_ip" {
  description = "Give the tasks public IPs."
  type        = bool
}

variable "preconditions" {
  description = "Checks of the caller's inputs, made before the task definition is planned."
  type = list(object({
    condition     = bool
    error_message = string
  }))
  default = []
}

variable "tags" {
  description = "Tags of every resource."
  type        = map(string)
}
