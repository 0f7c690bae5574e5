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

# One provider configuration per party. With party_accounts empty (the trial layout) they all use
# the caller's own credentials and account. In the production layout (party_accounts set, one AWS
# account per party) each assumes the role named for its party in that party's own account and
# refuses any other account (allowed_account_ids): the aggregator's resources (server cluster, ECR)
# through the default provider, each hospital's cluster through its alias.

provider "aws" {
  region              = var.region
  allowed_account_ids = local.allowed_accounts["server"]

  dynamic "assume_role" {
    for_each = local.assume_roles["server"]
    content {
      role_arn     = assume_role.value
      session_name = "fedheart-terraform-server"
    }
  }

  default_tags {
    tags = merge(var.tags, { Project = "fedheart", ManagedBy = "terraform", Party = "server" })
  }
}

provider "aws" {
  alias               = "cleveland"
  region              = var.region
  allowed_account_ids = local.allowed_accounts["cleveland"]

  dynamic "assume_role" {
    for_each = local.assume_roles["cleveland"]
    content {
      role_arn     = assume_role.value
      session_name = "fedheart-terraform-cleveland"
    }
  }

  default_tags {
    tags = merge(var.tags, { Project = "fedheart", ManagedBy = "terraform", Party = "cleveland" })
  }
}

provider "aws" {
  alias               = "hungarian"
  region              = var.region
  allowed_account_ids = local.allowed_accounts["hungarian"]

  dynamic "assume_role" {
    for_each = local.assume_roles["hungarian"]
    content {
      role_arn     = assume_role.value
      session_name = "fedheart-terraform-hungarian"
    }
  }

  default_tags {
    tags = merge(var.tags, { Project = "fedheart", ManagedBy = "terraform", Party = "hungarian" })
  }
}

provider "aws" {
  alias               = "switzerland"
  region              = var.region
  allowed_account_ids = local.allowed_accounts["switzerland"]

  dynamic "assume_role" {
    for_each = local.assume_roles["switzerland"]
    content {
      role_arn     = assume_role.value
      session_name = "fedheart-terraform-switzerland"
    }
  }

  default_tags {
    tags = merge(var.tags, { Project = "fedheart", ManagedBy = "terraform", Party = "switzerland" })
  }
}

provider "aws" {
  alias               = "va"
  region              = var.region
  allowed_account_ids = local.allowed_accounts["va"]

  dynamic "assume_role" {
    for_each = local.assume_roles["va"]
    content {
      role_arn     = assume_role.value
      session_name = "fedheart-terraform-va"
    }
  }

  default_tags {
    tags = merge(var.tags, { Project = "fedheart", ManagedBy = "terraform", Party = "va" })
  }
}
