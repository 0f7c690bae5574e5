terraform {
  # 1.9+: input validations may refer to other variables; `terraform test`
  # with mock providers needs 1.7+.
  required_version = ">= 1.9"

  # Only the AWS provider: everything here initialises offline from a provider
  # mirror (see cli-config.tfrc) and no registry modules are used.
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.95, < 7.0"
    }
  }
}

provider "aws" {
  region = var.region

  default_tags {
    tags = merge(var.tags, {
      Project   = "fedheart"
      ManagedBy = "terraform"
    })
  }
}
