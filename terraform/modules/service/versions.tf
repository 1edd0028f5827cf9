# The root module (terraform/versions.tf) pins Terraform and the provider's versions.
terraform {
  required_providers {
    aws = { source = "hashicorp/aws" }
  }
}
